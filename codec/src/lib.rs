//! Audio in and out of the emergency broadcast system.
//!
//! In: [`pipeline::ingest_file`] decodes a file (symphonia), mixes down,
//! resamples (rubato), normalises loudness to EBU R128 (ebur128) under a
//! true-peak ceiling, and encodes 20 ms Opus frames (opus-pure, pinned) —
//! streamed, so long files never sit in memory as PCM.
//! Out: [`playout::Playout`] schedules received frames by presentation time,
//! [`opus::FrameDecoder`] decodes with FEC recovery and concealment, and a
//! [`sink::Sink`] plays (loudspeaker with the `cpal` feature, WAV, null).

pub mod adapt;
pub mod align;
pub mod card;
pub mod error;
pub mod ingest;
pub mod limiter;
pub mod loudness;
pub mod measure;
pub mod opus;
pub mod pipeline;
pub mod playout;
pub mod resample;
pub mod sink;
pub mod timeline;

#[cfg(feature = "cpal")]
pub mod device;

pub use error::CodecError;
pub use opus::{EncoderConfig, FrameDecoder, FrameEncoder, OpusFrameDecoder, OpusFrameEncoder};
pub use pipeline::{
    encode_pcm, ingest_file, normalise_file, Encoded, IngestConfig, Normalisation, Progress,
};
pub use playout::{Join, Playout, PlayoutConfig, PlayoutStats, Slot};
pub use sink::{open_sink, MemorySink, NullSink, Sink, SinkError, WavSink};
