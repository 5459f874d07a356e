//! The reference check: opus-pure (what terminals run) against libopus (the
//! `opus` crate), both directions, on the real Mandarin alert. Outside the
//! default build because libopus needs cmake; CI installs it and runs
//! `cargo test -p codec-reference`.

use std::path::Path;

use codec::{FrameEncoder, IngestConfig, OpusFrameEncoder};
use opus::{Application, Bitrate, Channels};

fn alert(rate: u32) -> Vec<f32> {
    let cfg = IngestConfig {
        encoder: codec::EncoderConfig {
            sample_rate: rate,
            ..Default::default()
        },
        ..Default::default()
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/audio/alert-zh.wav");
    let mut pcm = Vec::new();
    codec::normalise_file(&path, &cfg, &mut |_| {}, &mut |c| {
        pcm.extend_from_slice(c);
        Ok(())
    })
    .unwrap();
    pcm.truncate(pcm.len() / (rate as usize / 50) * (rate as usize / 50));
    pcm
}

fn libopus_encode(pcm: &[f32], rate: u32) -> Vec<Vec<u8>> {
    let mut enc = opus::Encoder::new(rate, Channels::Mono, Application::Voip).unwrap();
    enc.set_bitrate(Bitrate::Bits(24_000)).unwrap();
    enc.set_inband_fec(true).unwrap();
    enc.set_packet_loss_perc(5).unwrap();
    enc.set_complexity(10).unwrap();
    let mut buf = vec![0u8; 1500];
    pcm.chunks_exact(rate as usize / 50)
        .map(|f| {
            let n = enc.encode_float(f, &mut buf).unwrap();
            buf[..n].to_vec()
        })
        .collect()
}

fn pure_encode(pcm: &[f32], rate: u32) -> Vec<Vec<u8>> {
    let mut enc = OpusFrameEncoder::new(codec::EncoderConfig {
        sample_rate: rate,
        ..Default::default()
    })
    .unwrap();
    pcm.chunks_exact(rate as usize / 50)
        .map(|f| enc.encode(f).unwrap())
        .collect()
}

/// Decodes with both decoders; `lost` frames are recovered from the next
/// packet's FEC (or concealed when there is none).
fn decode_both(packets: &[Vec<u8>], rate: u32, lost: &[bool]) -> (Vec<f32>, Vec<f32>) {
    let n = rate as usize / 50;
    let mut lib = opus::Decoder::new(rate, Channels::Mono).unwrap();
    let mut pure = opus_pure::OpusDecoder::new(rate as i32, 1).unwrap();
    let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
    let (mut out_lib, mut out_pure) = (Vec::new(), Vec::new());
    for (i, p) in packets.iter().enumerate() {
        if lost[i] {
            match packets.get(i + 1) {
                Some(next) => {
                    lib.decode_float(next, &mut a, true).unwrap();
                    pure.decode_fec(next, n, &mut b).unwrap();
                }
                None => {
                    lib.decode_float(&[], &mut a, false).unwrap();
                    pure.decode(&[], n, &mut b).unwrap();
                }
            }
        } else {
            lib.decode_float(p, &mut a, false).unwrap();
            pure.decode(p, n, &mut b).unwrap();
        }
        out_lib.extend_from_slice(&a);
        out_pure.extend_from_slice(&b);
    }
    (out_lib, out_pure)
}

/// Largest absolute difference (1 ULP at full scale is 6e-8).
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |d, (x, y)| d.max((x - y).abs()))
}

fn correlation_at_best_lag(a: &[f32], b: &[f32]) -> f64 {
    codec::measure::best_correlation(a, b, 1000).0
}

fn loss_pattern(n: usize) -> Vec<bool> {
    (0..n).map(|i| i % 20 == 7).collect()
}

#[test]
fn libopus_packets_decode_identically_with_opus_pure() {
    for rate in [16_000, 48_000] {
        let pcm = alert(rate);
        let packets = libopus_encode(&pcm, rate);
        let clean = vec![false; packets.len()];
        let (lib, pure) = decode_both(&packets, rate, &clean);
        let diff = max_diff(&lib, &pure);
        println!(
            "{rate} Hz, libopus packets: opus-pure vs libopus decoder differ by at most {diff:e}"
        );
        let (lib_l, pure_l) = decode_both(&packets, rate, &loss_pattern(packets.len()));
        let diff_l = max_diff(&lib_l, &pure_l);
        println!("{rate} Hz, 5 % loss with FEC: at most {diff_l:e}");
        if rate == 16_000 {
            assert_eq!(lib, pure, "bit-identical at 16 kHz");
        }
        assert!(diff <= 1e-6 && diff_l <= 1e-6, "{diff} / {diff_l}");
        let c = correlation_at_best_lag(&pcm, &pure);
        assert!(c > 0.9, "{c}");
    }
}

#[test]
fn opus_pure_packets_decode_in_libopus() {
    for rate in [16_000, 48_000] {
        let pcm = alert(rate);
        let packets = pure_encode(&pcm, rate);
        let (lib, pure) = decode_both(&packets, rate, &vec![false; packets.len()]);
        let diff = max_diff(&lib, &pure);
        let c_lib = correlation_at_best_lag(&pcm, &lib);
        let c_pure = correlation_at_best_lag(&pcm, &pure);
        println!("{rate} Hz, opus-pure packets: libopus decodes with correlation {c_lib:.4} (opus-pure {c_pure:.4}); decoders differ by at most {diff:e}");
        assert!(c_lib > 0.9, "{c_lib}");
        assert!(diff <= 1e-6, "{diff}");
    }
}

#[test]
fn garbage_packets_are_safe_in_both() {
    let mut lib = opus::Decoder::new(16_000, Channels::Mono).unwrap();
    let mut pure = opus_pure::OpusDecoder::new(16_000, 1).unwrap();
    let (mut a, mut b) = (vec![0f32; 320], vec![0f32; 320]);
    let mut seed = 99u64;
    for _ in 0..5000 {
        let len = (seed % 120 + 1) as usize;
        let p: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 56) as u8
            })
            .collect();
        let _ = lib.decode_float(&p, &mut a, false);
        if pure.decode(&p, 320, &mut b).is_ok() {
            assert!(b.iter().all(|s| s.is_finite()));
        }
    }
}
