//! Typed text as audio (R6): the platform's voice (`[tts]`, where one is
//! installed) speaks a draft's text, Chinese numbers, dates and times read
//! the Chinese way; the speech then goes through the same ingest as an
//! uploaded file (resampled, loudness normalised, encoded once), so the
//! reviewer hears, in the preview, exactly the frames that will be signed.

use crate::upload::Upload;
use crate::workflow::{Workflow, WorkflowError};

/// A spoken text on disk, ready to ingest, and what the voice read.
pub struct Spoken {
    pub file: Upload,
    /// The name the audio goes by: the voice's.
    pub file_name: String,
    /// Tone-numbered pinyin of what was read, for the operator to check.
    pub pinyin: String,
}

fn field(f: &'static str, en: impl Into<String>, zh: impl Into<String>) -> WorkflowError {
    crate::drafts::field_error(f, en, zh).into()
}

impl Workflow {
    /// Speaks `text` with this platform's voice. Blocking (the voice runs
    /// as a program).
    pub fn speak(&self, text: &str) -> Result<Spoken, WorkflowError> {
        let Some(voice) = &self.voice else {
            return Err(field(
                "speak",
                "text to speech is not installed on this platform (apt install espeak-ng, \
                 or [tts] program in its configuration); upload an audio file",
                "本平台未安装语音合成，请上传音频文件",
            ));
        };
        let speech = voice.speak(text).map_err(|e| match e {
            tts::TtsError::Empty => field(
                "text",
                "there is nothing to read: write the text to be spoken",
                "请填写要合成语音的正文",
            ),
            tts::TtsError::TextTooLong(n) => field(
                "text",
                format!("{n} bytes; the limit is {} bytes", tts::MAX_TEXT_BYTES),
                "正文过长",
            ),
            tts::TtsError::TooLong => field(
                "text",
                "spoken, it would last longer than 30 minutes",
                "合成语音超过30分钟",
            ),
            e => WorkflowError::Store(e.to_string()),
        })?;
        let file = Upload::write(
            &codec::sink::wav_bytes(&speech.pcm, speech.sample_rate),
            "wav",
        )
        .map_err(|e| WorkflowError::Store(format!("writing the speech: {e}")))?;
        Ok(Spoken {
            file,
            file_name: format!("语音合成（{}）", speech.voice),
            pinyin: speech.pinyin,
        })
    }

    /// The speech of `text` as this platform would broadcast it (ingested:
    /// resampled, normalised, encoded, decoded again) as a WAV file, and
    /// what was read: the preview before a draft is saved.
    pub fn preview_speech(&self, text: &str) -> Result<(Vec<u8>, String), WorkflowError> {
        let spoken = self.speak(text)?;
        let encoded = codec::ingest_file(spoken.file.path(), &self.ingest, &mut |_| {})
            .map_err(|e| WorkflowError::Store(format!("the speech: {e}")))?;
        let wav = crate::drafts::preview_wav(&encoded.frames, encoded.sample_rate)
            .map_err(|e| WorkflowError::Store(e.to_string()))?;
        Ok((wav, spoken.pinyin))
    }
}
