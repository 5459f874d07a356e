//! espeak-ng as a voice: the `espeak-ng` program (Debian's package of the
//! same name; offline, nothing downloaded) run once per text, reading the
//! tone-numbered pinyin of `reading` with its `cmn-latn-pinyin` voice (its
//! `cmn` voice reads many Hanzi wrong). A program, not a linked library:
//! the platform builds with nothing but Rust, and espeak-ng's GPL stays
//! with its own program.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Speech, TtsError, Voice};

/// Longest speech one text may make (a programme's 30 minutes).
const MAX_WAV_BYTES: usize = 30 * 60 * 22_050 * 2 + 4096;

#[derive(Debug, Clone)]
pub struct EspeakNg {
    program: PathBuf,
    voice: String,
    /// Words (syllables) a minute.
    speed: u32,
    timeout: Duration,
}

impl EspeakNg {
    /// The voice of `program` (a path, or a name looked up on PATH), if it
    /// runs and has the Mandarin pinyin voice.
    pub fn find(program: &Path, speed: u32) -> Result<EspeakNg, TtsError> {
        let out = Command::new(program)
            .arg("--voices=cmn")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| TtsError::NotInstalled(format!("{}: {e}", program.display())))?;
        let voices = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !voices.contains("cmn-latn-pinyin") {
            return Err(TtsError::NotInstalled(format!(
                "{} has no cmn-latn-pinyin voice (espeak-ng 1.50 or later has it)",
                program.display()
            )));
        }
        Ok(EspeakNg {
            program: program.to_path_buf(),
            voice: "cmn-latn-pinyin".into(),
            speed: speed.clamp(80, 450),
            timeout: Duration::from_secs(60),
        })
    }
}

impl Voice for EspeakNg {
    fn name(&self) -> String {
        format!("espeak-ng ({})", self.voice)
    }

    fn speak_pinyin(&self, pinyin: &str) -> Result<Speech, TtsError> {
        // The text goes in on stdin: nothing of it is ever an argument.
        let mut child = Command::new(&self.program)
            .args([
                "-v",
                &self.voice,
                "-s",
                &self.speed.to_string(),
                "--stdout",
                "--stdin",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| TtsError::Engine(format!("{}: {e}", self.program.display())))?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| TtsError::Engine("no stdin".into()))?;
        let text = pinyin.to_string();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(text.as_bytes());
        });
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| TtsError::Engine("no stdout".into()))?;
        let deadline = Instant::now() + self.timeout;
        let reader = std::thread::spawn(move || {
            let mut wav = Vec::new();
            let mut buf = [0u8; 64 * 1024];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) => return Ok(wav),
                    Ok(n) if wav.len() + n <= MAX_WAV_BYTES => wav.extend_from_slice(&buf[..n]),
                    Ok(_) => return Err(TtsError::TooLong),
                    Err(e) => return Err(TtsError::Engine(e.to_string())),
                }
            }
        });
        let status = loop {
            if let Some(s) = child
                .try_wait()
                .map_err(|e| TtsError::Engine(e.to_string()))?
            {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TtsError::Engine(format!(
                    "espeak-ng did not finish within {} s",
                    self.timeout.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let _ = writer.join();
        let wav = reader
            .join()
            .map_err(|_| TtsError::Engine("reading espeak-ng's output failed".into()))??;
        if !status.success() {
            return Err(TtsError::Engine(format!("espeak-ng exited with {status}")));
        }
        let (pcm, sample_rate) = crate::wav_to_pcm(&wav)?;
        Ok(Speech {
            pcm,
            sample_rate,
            pinyin: pinyin.to_string(),
            voice: self.name(),
        })
    }
}
