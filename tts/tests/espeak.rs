//! The espeak-ng voice, where the program is installed: real alert text
//! becomes speech of the length its syllables take, loud enough, never
//! clipped, the same every time. `EBS_TTS_TESTS=1` (CI, after installing
//! espeak-ng) makes a missing program a failure, not a skip.

use std::path::Path;

use tts::{EspeakNg, TtsError, Voice};

fn voice() -> Option<EspeakNg> {
    match EspeakNg::find(Path::new("espeak-ng"), 150) {
        Ok(v) => Some(v),
        Err(e) => {
            assert!(
                std::env::var_os("EBS_TTS_TESTS").is_none(),
                "EBS_TTS_TESTS is set but the voice is missing: {e}"
            );
            eprintln!("skipped: {e} (apt install espeak-ng)");
            None
        }
    }
}

fn rms_dbfs(pcm: &[f32]) -> f64 {
    let sum: f64 = pcm.iter().map(|s| (*s as f64).powi(2)).sum();
    10.0 * (sum / pcm.len().max(1) as f64).log10()
}

#[test]
fn an_alert_in_mandarin_is_spoken_at_its_length_and_loudness() {
    let Some(v) = voice() else { return };
    let text = "区气象台2026年12月1日14:30发布暴雨红色预警，请沿河低洼地带居民立即转移。";
    let s = v.speak(text).unwrap();
    let syllables = s.pinyin.split_whitespace().count();
    assert_eq!(syllables, 41, "{}", s.pinyin);
    // 150 syllables a minute, and the pauses: 0.25 to 0.7 s a syllable.
    let ms = s.duration_ms();
    assert!(
        (syllables as i64 * 250..=syllables as i64 * 700).contains(&ms),
        "{ms} ms for {syllables} syllables"
    );
    let peak = s.pcm.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(peak < 1.0, "clipped: {peak}");
    let level = rms_dbfs(&s.pcm);
    assert!((-35.0..-6.0).contains(&level), "{level} dBFS");
    // The same text, the same speech (what the reviewer heard is signed).
    assert_eq!(v.speak(text).unwrap().pcm, s.pcm);
    // A slower voice takes longer.
    let slow = EspeakNg::find(Path::new("espeak-ng"), 100).unwrap();
    assert!(slow.speak(text).unwrap().duration_ms() > ms * 12 / 10);
}

#[test]
fn empty_or_overlong_text_is_refused_with_a_reason() {
    let Some(v) = voice() else { return };
    assert!(matches!(v.speak("★ ， 。"), Err(TtsError::Empty)));
    let long = "警".repeat(3000);
    assert!(matches!(v.speak(&long), Err(TtsError::TextTooLong(9000))));
}

#[test]
fn a_missing_program_is_named() {
    let e = EspeakNg::find(Path::new("/nonexistent/espeak-ng"), 150).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/espeak-ng"), "{e}");
}
