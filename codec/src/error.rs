//! Typed errors of the codec crate.

use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} is empty")]
    Empty(String),
    #[error("{path} is {size} bytes, the limit is {limit}")]
    FileTooLarge { path: String, size: u64, limit: u64 },
    #[error("{path} is not a supported audio file (WAV, MP3, OGG Vorbis, FLAC): {detail}")]
    UnsupportedFormat { path: String, detail: String },
    #[error("{path} has no audio track")]
    NoAudioTrack { path: String },
    #[error("{path} declares an implausible format: {detail}")]
    ImplausibleFormat { path: String, detail: String },
    #[error("{path} is corrupt: {detail}")]
    Corrupt { path: String, detail: String },
    #[error("{path} holds no decodable audio")]
    NoAudio { path: String },
    #[error("{path} is longer than the limit of {limit_s} s")]
    TooLong { path: String, limit_s: u32 },
    #[error("resampler: {0}")]
    Resample(String),
    #[error("loudness measurement: {0}")]
    Loudness(String),
    #[error("Opus: {0}")]
    Opus(String),
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl From<opus_pure::Error> for CodecError {
    fn from(e: opus_pure::Error) -> Self {
        CodecError::Opus(e.to_string())
    }
}
