//! Text to speech (R6: typed text spoken): Chinese text is read the
//! Chinese way (numbers, dates, times, units: `numbers`), turned into
//! tone-numbered pinyin with a lexicon of the polyphonic characters of
//! alerts (`reading`), and spoken by a [`Voice`]. One voice today,
//! espeak-ng run as a program where it is installed (`espeak`); a better
//! voice is another implementation of the trait. Offline: nothing is
//! fetched at run time.

pub mod espeak;
pub mod numbers;
pub mod reading;

pub use espeak::EspeakNg;

/// Longest text spoken at once, bytes of UTF-8 (a broadcast's text field).
pub const MAX_TEXT_BYTES: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error("text to speech is not installed here: {0}")]
    NotInstalled(String),
    #[error("text: nothing to read (it holds no Chinese, letters or digits)")]
    Empty,
    #[error("text: {0} bytes; the limit is {MAX_TEXT_BYTES} bytes")]
    TextTooLong(usize),
    #[error("the speech would last longer than 30 minutes")]
    TooLong,
    #[error("the voice failed: {0}")]
    Engine(String),
}

/// What a voice made of a text.
#[derive(Debug, Clone)]
pub struct Speech {
    /// Mono samples in [-1, 1].
    pub pcm: Vec<f32>,
    pub sample_rate: u32,
    /// What was read (tone-numbered pinyin), for the operator to check.
    pub pinyin: String,
    pub voice: String,
}

impl Speech {
    pub fn duration_ms(&self) -> i64 {
        self.pcm.len() as i64 * 1000 / self.sample_rate.max(1) as i64
    }
}

/// A voice: speaks tone-numbered pinyin.
pub trait Voice: Send + Sync {
    fn name(&self) -> String;

    /// Speaks `pinyin` (as [`reading::pinyin`] writes it).
    fn speak_pinyin(&self, pinyin: &str) -> Result<Speech, TtsError>;

    /// Speaks Chinese `text`: numbers read the Chinese way, polyphones by
    /// the lexicon.
    fn speak(&self, text: &str) -> Result<Speech, TtsError> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(TtsError::TextTooLong(text.len()));
        }
        let pinyin = reading::pinyin(text);
        if pinyin.trim_matches([' ', ',', '.']).is_empty() {
            return Err(TtsError::Empty);
        }
        self.speak_pinyin(&pinyin)
    }
}

/// A 16-bit PCM WAV (as espeak-ng writes it to a pipe: its data length
/// may be unknown) as mono samples and their rate.
pub fn wav_to_pcm(wav: &[u8]) -> Result<(Vec<f32>, u32), TtsError> {
    let bad = |why: &str| TtsError::Engine(format!("the voice's WAV output: {why}"));
    if wav.len() < 12 || &wav[..4] != b"RIFF" || &wav[8..12] != b"WAVE" {
        return Err(bad("not a WAV file"));
    }
    let mut at = 12;
    let mut format: Option<(u16, u16, u32, u16)> = None;
    while at + 8 <= wav.len() {
        let id = &wav[at..at + 4];
        let len = u32::from_le_bytes([wav[at + 4], wav[at + 5], wav[at + 6], wav[at + 7]]) as usize;
        let body = at + 8;
        if id == b"fmt " {
            let f = wav
                .get(body..body + 16)
                .ok_or_else(|| bad("short fmt chunk"))?;
            format = Some((
                u16::from_le_bytes([f[0], f[1]]),
                u16::from_le_bytes([f[2], f[3]]),
                u32::from_le_bytes([f[4], f[5], f[6], f[7]]),
                u16::from_le_bytes([f[14], f[15]]),
            ));
        } else if id == b"data" {
            let (kind, channels, rate, bits) = format.ok_or_else(|| bad("data before fmt"))?;
            if kind != 1 || bits != 16 || channels == 0 || rate == 0 {
                return Err(bad("not 16-bit PCM"));
            }
            // A streamed file says 0 or 0xFFFFFFFF: the data runs to the end.
            let end = match len {
                0 | 0xFFFF_FFFF => wav.len(),
                n => (body + n).min(wav.len()),
            };
            let samples: Vec<f32> = wav[body..end]
                .chunks_exact(2 * channels as usize)
                .map(|frame| {
                    frame
                        .chunks_exact(2)
                        .map(|s| i16::from_le_bytes([s[0], s[1]]) as f32 / 32768.0)
                        .sum::<f32>()
                        / channels as f32
                })
                .collect();
            return Ok((samples, rate));
        }
        at = body.saturating_add(len + (len & 1));
    }
    Err(bad("no audio data"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wav_round_trips_and_a_streamed_one_reads_to_its_end() {
        let s = Speech {
            pcm: vec![0.0, 0.5, -0.5, 0.25],
            sample_rate: 22_050,
            pinyin: String::new(),
            voice: String::new(),
        };
        let mut wav = std::io::Cursor::new(Vec::new());
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: s.sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::new(&mut wav, spec).unwrap();
        for x in &s.pcm {
            w.write_sample((x * 32767.0).round() as i16).unwrap();
        }
        w.finalize().unwrap();
        let mut wav = wav.into_inner();
        let (pcm, rate) = wav_to_pcm(&wav).unwrap();
        assert_eq!(rate, 22_050);
        assert!(pcm.iter().zip(&s.pcm).all(|(a, b)| (a - b).abs() < 1e-3));
        // As a pipe writes it: the data length unknown.
        wav[40..44].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        assert_eq!(wav_to_pcm(&wav).unwrap().0.len(), 4);
        assert!(wav_to_pcm(b"RIFF....WAVEjunk").is_err());
        assert!(wav_to_pcm(&[]).is_err());
    }
}
