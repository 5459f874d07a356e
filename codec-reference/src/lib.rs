//! See tests/: the reference check is test code only.
