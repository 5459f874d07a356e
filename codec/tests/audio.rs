//! The codec with the real samples of `assets/audio`: every format decodes,
//! resampling keeps frequency, loudness is normalised, Opus round-trips the
//! Mandarin alert, FEC beats concealment under loss, corrupt files get a
//! typed error. Figures are printed (`cargo test -- --nocapture`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use codec::ingest::{FileSource, Limits};
use codec::loudness::LoudnessMeter;
use codec::resample::StreamResampler;
use codec::*;

fn asset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../assets/audio")
        .join(name)
}

/// Decodes a whole file to mono at its own rate.
fn decode_all(path: &Path) -> Result<(Vec<f32>, u32), CodecError> {
    let mut src = FileSource::open(path, Limits::default())?;
    let rate = src.sample_rate();
    let mut pcm = Vec::new();
    while let Some(c) = src.next_chunk()? {
        pcm.extend(c);
    }
    Ok((pcm, rate))
}

/// The normalised PCM a file becomes before encoding.
fn normalised(path: &Path, cfg: &IngestConfig) -> (Vec<f32>, Normalisation) {
    let mut out = Vec::new();
    let (n, _) = normalise_file(path, cfg, &mut |_| {}, &mut |pcm| {
        out.extend_from_slice(pcm);
        Ok(())
    })
    .unwrap();
    (out, n)
}

fn decode_frames(frames: &[Vec<u8>], rate: u32) -> Vec<f32> {
    let mut dec = OpusFrameDecoder::new(rate).unwrap();
    let mut out = vec![0.0; dec.frame_samples()];
    let mut pcm = Vec::new();
    for f in frames {
        dec.decode(f, &mut out).unwrap();
        pcm.extend_from_slice(&out);
    }
    pcm
}

use codec::measure::{best_correlation, snr_db};

#[test]
fn every_format_decodes_with_its_duration() {
    let cases = [
        ("alert-zh.wav", 22_050, 25.0),
        ("alert-zh.mp3", 22_050, 25.0),
        ("notice-zh-48k.flac", 48_000, 15.0),
        ("warning-en.ogg", 44_100, 10.0),
        ("warning-en-8k-ulaw.wav", 8_000, 10.0),
        ("programme-jingle-44k-stereo.mp3", 44_100, 20.0),
        ("silence-5s.wav", 16_000, 5.0),
    ];
    for (name, rate, approx_s) in cases {
        let (pcm, r) = decode_all(&asset(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let secs = pcm.len() as f64 / r as f64;
        println!("{name}: {r} Hz, {secs:.2} s");
        assert_eq!(r, rate, "{name}");
        assert!((secs - approx_s).abs() < approx_s * 0.2, "{name}: {secs} s");
        let energy: f64 = pcm.iter().map(|s| (*s as f64).powi(2)).sum();
        if name.starts_with("silence") {
            assert_eq!(energy, 0.0);
        } else {
            assert!(energy > 1.0, "{name} holds sound");
        }
    }
}

/// Frequency by counting upward zero crossings.
fn frequency(pcm: &[f32], rate: u32) -> f64 {
    let crossings = pcm.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
    crossings as f64 * rate as f64 / pcm.len() as f64
}

#[test]
fn a_sine_keeps_its_frequency_through_resampling() {
    for (in_rate, out_rate) in [
        (44_100, 16_000),
        (48_000, 16_000),
        (8_000, 16_000),
        (22_050, 48_000),
    ] {
        let sine: Vec<f32> = (0..in_rate * 2)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / in_rate as f32).sin() * 0.5)
            .collect();
        let mut r = StreamResampler::new(in_rate, out_rate).unwrap();
        let mut out = Vec::new();
        for chunk in sine.chunks(777) {
            r.push(chunk, &mut out).unwrap();
        }
        r.finish(&mut out).unwrap();
        assert_eq!(
            out.len() as u64,
            (sine.len() as u64 * out_rate as u64) / in_rate as u64
        );
        let f = frequency(&out[1000..out.len() - 1000], out_rate);
        println!("{in_rate} -> {out_rate} Hz: 1 kHz sine measured at {f:.2} Hz");
        assert!((f - 1000.0).abs() < 2.0, "{f}");
    }
}

#[test]
fn resampling_keeps_time_alignment() {
    // A smooth pulse at exactly 1 s must come out at exactly 1 s.
    for (in_rate, out_rate) in [
        (44_100u32, 16_000u32),
        (48_000, 16_000),
        (8_000, 16_000),
        (22_050, 48_000),
    ] {
        let sigma = 0.002 * in_rate as f64;
        let pulse: Vec<f32> = (0..in_rate * 2)
            .map(|i| {
                (-((i as f64 - in_rate as f64).powi(2)) / (2.0 * sigma * sigma)).exp() as f32 * 0.5
            })
            .collect();
        let mut r = StreamResampler::new(in_rate, out_rate).unwrap();
        let mut out = Vec::new();
        r.push(&pulse, &mut out).unwrap();
        r.finish(&mut out).unwrap();
        let peak = out
            .iter()
            .enumerate()
            .fold((0, 0f32), |b, (i, s)| if *s > b.1 { (i, *s) } else { b })
            .0;
        println!("{in_rate} -> {out_rate} Hz: pulse at sample {peak}, expected {out_rate}");
        assert!((peak as i64 - out_rate as i64).abs() <= 1, "{peak}");
    }
}

#[test]
fn quiet_and_loud_alerts_come_out_equally_loud() {
    let cfg = IngestConfig::default();
    for name in [
        "alert-zh-quiet.wav",
        "alert-zh-loud-clipped.wav",
        "alert-zh.mp3",
        "warning-en.ogg",
    ] {
        let (pcm, n) = normalised(&asset(name), &cfg);
        let mut meter = LoudnessMeter::new(cfg.encoder.sample_rate).unwrap();
        meter.add(&pcm).unwrap();
        let lufs = meter.integrated_lufs().unwrap();
        let peak = meter.true_peak_dbtp().unwrap();
        println!(
            "{name}: source {:.1} LUFS, gain {:+.1} dB -> {lufs:.2} LUFS, true peak {peak:.2} dBTP",
            n.source_lufs.unwrap(),
            n.gain_db
        );
        assert!((lufs - cfg.target_lufs).abs() <= 1.0, "{name}: {lufs} LUFS");
        assert!(
            peak <= cfg.true_peak_dbtp + 0.05,
            "{name}: true peak {peak} dBTP"
        );
    }
    // Silence stays silent: never amplified.
    let (pcm, n) = normalised(&asset("silence-5s.wav"), &cfg);
    assert_eq!(n.gain_db, 0.0);
    assert!(pcm.iter().all(|s| *s == 0.0));
}

#[test]
fn the_mandarin_alert_survives_an_opus_round_trip() {
    let cfg = IngestConfig::default();
    let (reference, _) = normalised(&asset("alert-zh.wav"), &cfg);
    let mut progress = Vec::new();
    let encoded = ingest_file(&asset("alert-zh.wav"), &cfg, &mut |p| progress.push(p)).unwrap();
    assert_eq!(encoded.sample_rate, 16_000);
    assert_eq!(encoded.source_rate, 22_050);
    assert!(
        (24_000..27_000).contains(&encoded.duration_ms),
        "{}",
        encoded.duration_ms
    );
    // Progress for both passes, ending at the file's length.
    assert!(progress.iter().any(|p| p.pass == 1) && progress.iter().any(|p| p.pass == 2));
    let last = progress.last().unwrap();
    assert!((last.done_s - encoded.duration_ms as f64 / 1000.0).abs() < 0.1);

    let bytes: usize = encoded.frames.iter().map(Vec::len).sum();
    let kbps = bytes as f64 * 8.0 / (encoded.frames.len() as f64 * 0.02) / 1000.0;
    let decoded = decode_frames(&encoded.frames, 16_000);
    let (corr, lag) = best_correlation(&reference, &decoded, 2000);
    println!(
        "alert-zh: {} frames, {kbps:.1} kbit/s, correlation {corr:.4} at lag {lag} samples",
        encoded.frames.len()
    );
    assert!(corr > 0.90, "correlation {corr}");
    assert!(
        (20.0..=26.0).contains(&kbps),
        "{kbps} kbit/s (24 kbit/s target, VBR)"
    );
    // The whole alert is there: the decoded length covers the source plus the codec delay.
    assert!(decoded.len() >= reference.len());
}

#[test]
fn fec_recovers_lost_frames_better_than_concealment() {
    let cfg = EncoderConfig {
        expected_loss_pct: 5,
        ..EncoderConfig::default()
    };
    let icfg = IngestConfig {
        encoder: cfg,
        ..IngestConfig::default()
    };
    let encoded = ingest_file(&asset("alert-zh.wav"), &icfg, &mut |_| {}).unwrap();
    let clean = decode_frames(&encoded.frames, 16_000);
    // Seeded 5 % loss (never two in a row, so the next packet is there for FEC).
    let mut seed = 0x2545_f491_u64;
    let mut lost = vec![false; encoded.frames.len()];
    for i in 1..lost.len() - 1 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if (seed >> 33) % 100 < 5 && !lost[i - 1] {
            lost[i] = true;
        }
    }
    let n = 320;
    let run = |use_fec: bool| {
        let mut dec = OpusFrameDecoder::new(16_000).unwrap();
        let mut out = vec![0.0; n];
        let mut pcm = Vec::new();
        for (i, f) in encoded.frames.iter().enumerate() {
            if lost[i] {
                if use_fec {
                    dec.recover(&encoded.frames[i + 1], &mut out).unwrap();
                } else {
                    dec.conceal(&mut out).unwrap();
                }
            } else {
                dec.decode(f, &mut out).unwrap();
            }
            pcm.extend_from_slice(&out);
        }
        pcm
    };
    let (plc, fec) = (run(false), run(true));
    assert_eq!(plc.len(), clean.len());
    assert!(fec
        .iter()
        .chain(&plc)
        .all(|s| s.is_finite() && s.abs() <= 1.0));
    let lost_frames: Vec<usize> = (0..lost.len()).filter(|i| lost[*i]).collect();
    let on_lost = |pcm: &[f32]| {
        let (r, t): (Vec<f32>, Vec<f32>) = lost_frames
            .iter()
            .flat_map(|i| (i * n..(i + 1) * n).map(|k| (clean[k], pcm[k])))
            .unzip();
        snr_db(&r, &t)
    };
    let (snr_plc, snr_fec) = (on_lost(&plc), on_lost(&fec));
    println!("{} of {} frames lost: SNR on lost frames, concealment {snr_plc:.2} dB, FEC {snr_fec:.2} dB; whole signal {:.2} / {:.2} dB", lost_frames.len(), lost.len(), snr_db(&clean, &plc), snr_db(&clean, &fec));
    assert!(lost_frames.len() > 30);
    assert!(
        snr_fec > snr_plc + 2.0,
        "FEC {snr_fec} dB vs concealment {snr_plc} dB"
    );
    // Continuity: no lost frame comes out as a hole of digital silence.
    for i in &lost_frames {
        let energy: f32 = fec[i * n..(i + 1) * n].iter().map(|s| s * s).sum();
        let clean_energy: f32 = clean[i * n..(i + 1) * n].iter().map(|s| s * s).sum();
        assert!(clean_energy < 1e-4 || energy > 0.0, "frame {i} dropped out");
    }
}

/// Runs `f` with a deadline: a corrupt file must never hang the ingest.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs)).expect("no hang")
}

#[test]
fn corrupt_files_get_a_typed_error() {
    let expect = |name: &str| -> Result<Encoded, CodecError> {
        let path = asset(&format!("corrupt/{name}"));
        within(60, move || {
            ingest_file(&path, &IngestConfig::default(), &mut |_| {})
        })
    };
    assert!(matches!(expect("empty.mp3"), Err(CodecError::Empty(_))));
    assert!(matches!(
        expect("not-audio.mp3"),
        Err(CodecError::UnsupportedFormat { .. })
    ));
    assert!(matches!(
        expect("random-bytes.wav"),
        Err(CodecError::UnsupportedFormat { .. })
    ));
    let lying = expect("lying-header.wav");
    assert!(
        matches!(
            lying,
            Err(CodecError::ImplausibleFormat { .. } | CodecError::UnsupportedFormat { .. })
        ),
        "{lying:?}"
    );
    let header_only = expect("header-only.wav");
    assert!(
        matches!(header_only, Err(CodecError::NoAudio { .. })),
        "{header_only:?}"
    );
    // Damaged but partly decodable: what decodes, or an error; never a panic.
    match expect("truncated.mp3") {
        Ok(e) => assert!(
            e.duration_ms > 1000 && e.duration_ms < 25_000,
            "{}",
            e.duration_ms
        ),
        Err(e) => println!("truncated.mp3: {e}"),
    }
    match expect("bitflipped.flac") {
        Ok(e) => println!(
            "bitflipped.flac: decoded {} ms, skipped {} packets",
            e.duration_ms, e.skipped_packets
        ),
        Err(e) => {
            println!("bitflipped.flac: {e}");
            assert!(matches!(
                e,
                CodecError::Corrupt { .. } | CodecError::NoAudio { .. }
            ));
        }
    }
    for e in [
        expect("empty.mp3"),
        expect("not-audio.mp3"),
        expect("lying-header.wav"),
    ] {
        let msg = e.unwrap_err().to_string();
        assert!(
            msg.contains("corrupt/") && !msg.contains('\n'),
            "clear one-line error naming the file: {msg}"
        );
    }
}

#[test]
fn limits_are_enforced() {
    let small = IngestConfig {
        limits: Limits {
            max_bytes: 100_000,
            max_duration_s: 3600,
        },
        ..IngestConfig::default()
    };
    assert!(matches!(
        ingest_file(&asset("alert-zh.wav"), &small, &mut |_| {}),
        Err(CodecError::FileTooLarge { .. })
    ));
    let short = IngestConfig {
        limits: Limits {
            max_bytes: u64::MAX,
            max_duration_s: 10,
        },
        ..IngestConfig::default()
    };
    assert!(matches!(
        ingest_file(&asset("alert-zh.mp3"), &short, &mut |_| {}),
        Err(CodecError::TooLong { limit_s: 10, .. })
    ));
    let bad = IngestConfig {
        encoder: EncoderConfig {
            bitrate_bps: 64_000,
            ..EncoderConfig::default()
        },
        ..IngestConfig::default()
    };
    assert!(matches!(
        ingest_file(&asset("alert-zh.wav"), &bad, &mut |_| {}),
        Err(CodecError::Config(_))
    ));
    assert!(matches!(
        ingest_file(
            Path::new("/nonexistent.wav"),
            &IngestConfig::default(),
            &mut |_| {}
        ),
        Err(CodecError::Io { .. })
    ));
}

#[test]
fn forty_eight_kilohertz_option() {
    let cfg = IngestConfig {
        encoder: EncoderConfig {
            sample_rate: 48_000,
            bitrate_bps: 32_000,
            ..EncoderConfig::default()
        },
        ..IngestConfig::default()
    };
    let (reference, _) = normalised(&asset("notice-zh-48k.flac"), &cfg);
    let encoded = ingest_file(&asset("notice-zh-48k.flac"), &cfg, &mut |_| {}).unwrap();
    let decoded = decode_frames(&encoded.frames, 48_000);
    let (corr, lag) = best_correlation(
        &reference[..48_000 * 5],
        &decoded[..48_000 * 5 + 4000],
        4000,
    );
    println!("notice-zh-48k at 48 kHz: correlation {corr:.4} at lag {lag}");
    assert!(corr > 0.85, "{corr}");
}

#[test]
fn garbage_packets_never_exceed_full_scale() {
    let mut dec = OpusFrameDecoder::new(16_000).unwrap();
    let mut out = vec![0.0; 320];
    let mut seed = 7u64;
    for _ in 0..2000 {
        let len = (seed % 200 + 1) as usize;
        let packet: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                (seed >> 56) as u8
            })
            .collect();
        let _ = dec.decode(&packet, &mut out);
        assert!(out.iter().all(|s| s.is_finite() && s.abs() <= 1.0));
    }
}

#[test]
fn what_the_terminal_decodes_is_on_target_and_under_the_ceiling() {
    let cfg = IngestConfig::default();
    for name in [
        "alert-zh.wav",
        "alert-zh-quiet.wav",
        "alert-zh-loud-clipped.wav",
        "alert-zh.mp3",
        "warning-en.ogg",
        "programme-jingle-44k-stereo.mp3",
    ] {
        let encoded = ingest_file(&asset(name), &cfg, &mut |_| {}).unwrap();
        let (lufs, peak) =
            codec::pipeline::decoded_loudness(&encoded.frames, encoded.sample_rate).unwrap();
        let (lufs, peak) = (lufs.unwrap(), peak.unwrap());
        println!("{name}: decoded {lufs:.2} LUFS, true peak {peak:.2} dBTP");
        assert!(
            (lufs - cfg.target_lufs).abs() <= 0.5,
            "{name}: {lufs:.2} LUFS after the codec"
        );
        assert!(
            peak <= cfg.true_peak_dbtp,
            "{name}: true peak {peak:.2} dBTP after the codec"
        );
    }
}
