//! Helpers shared by the benchmarks.

pub mod load;
pub mod procstat;
pub mod rig;
