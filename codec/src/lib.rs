//! Audio in and out of the emergency broadcast system.
//!
//! Not implemented yet (issue 3): file ingest with symphonia, resampling,
//! loudness normalisation, Opus encode/decode, the jitter buffer and sinks.
