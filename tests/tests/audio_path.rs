//! The path of a broadcast through the libraries, with real audio: the
//! district ingests the Mandarin alert, signs header and segments; the
//! terminal verifies the byte stream, schedules frames by presentation time
//! against its clock, decodes and writes a WAV file. The PCM in the file
//! matches the source; a tampered segment contributes no sample.

use std::path::Path;

use certs::pki::{DistrictPki, Layout};
use codec::{
    FrameDecoder, IngestConfig, Join, OpusFrameDecoder, Playout, PlayoutConfig, Sink, Slot, WavSink,
};
use protocol::build::{segments_needed, SegmentSigner};
use protocol::testing::alert_header;
use protocol::*;

const NOW_S: i64 = 1_800_000_000;
const NOW: i64 = NOW_S * 1000;

#[test]
fn the_alert_that_went_in_comes_out_of_the_terminal() {
    let pki =
        DistrictPki::generate(Layout::ONE_OF_EACH, (NOW_S - 60, NOW_S + 86_400), NOW_S).unwrap();
    let district = &pki.district;
    let asset = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/audio/alert-zh.wav");

    // Issuer: ingest, sign the header with the segment count, sign segments.
    let cfg = IngestConfig::default();
    let encoded = codec::ingest_file(&asset, &cfg, &mut |_| {}).unwrap();
    let segments = segments_needed(encoded.frames.len(), 10);
    let header = SignedHeader::sign(
        alert_header(district, 1, vec![district.cert().scope()[0]], NOW, segments),
        district,
    )
    .unwrap();
    let start_pts = NOW * 1000 + 500_000;
    let signed = SegmentSigner::new(&header, &district.key, start_pts)
        .sign_all(encoded.frames.clone(), 10)
        .unwrap();
    let mut stream = Message::Header(header).encode();
    for (i, s) in signed.iter().enumerate() {
        let mut frame = Message::Segment(s.clone()).encode();
        if i == 40 {
            // Tampered on the way: one bit of audio flipped.
            let at = frame.len() - 100;
            frame[at] ^= 0x01;
        }
        stream.extend(frame);
    }

    // Terminal: verify, schedule, decode, play into a WAV file.
    let area = pki.towns[0].villages[0].area;
    let anchor = certs::TrustAnchor::new(pki.root.cert().clone()).unwrap();
    let mut verifier = Verifier::new(
        anchor,
        Audience::Terminal { area },
        Policy::default(),
        MemoryReplayStore::new(),
    );
    let mut playout = Playout::new(PlayoutConfig::default(), Join::InStep);
    let mut reader = FrameReader::new();
    let now_us = NOW * 1000;
    for raw in reader.push(&stream).unwrap() {
        match raw.message().unwrap() {
            Message::Header(h) => {
                assert_eq!(verifier.accept_header(&h, NOW), Ok(HeaderVerdict::New))
            }
            Message::Segment(s) => {
                if verifier.accept_segment(&s, NOW).is_ok() {
                    playout.push_segment(s.pts_us, s.frames, s.last, now_us);
                }
            }
            other => panic!("unexpected {:?}", other.kind()),
        }
    }
    assert_eq!(verifier.counts().get(RefusalReason::SegmentSignature), 1);

    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("terminal.wav");
    let mut sink = WavSink::create(&wav, 16_000).unwrap();
    let mut decoder = OpusFrameDecoder::new(16_000).unwrap();
    let mut pcm = vec![0f32; 320];
    // The terminal's clock ticks in 20 ms steps from now to past the end.
    let mut slots = Vec::new();
    let mut t = now_us;
    while !playout.finished() && t < now_us + 60_000_000 {
        while let Some(slot) = playout.poll(t) {
            match &slot {
                Slot::Packet(p) => decoder.decode(p, &mut pcm).unwrap(),
                Slot::Recover(next) => decoder.recover(next, &mut pcm).unwrap(),
                Slot::Conceal => decoder.conceal(&mut pcm).unwrap(),
                Slot::Silence => pcm.fill(0.0),
            }
            sink.write(&pcm).unwrap();
            slots.push(slot);
        }
        t += 20_000;
    }
    sink.stop().unwrap();
    let stats = playout.stats();
    println!("playout: {stats:?}");
    assert!(playout.finished());
    // The tampered segment's 10 frames never played: 1 recovered by FEC from
    // the next genuine packet, the rest concealed or silent.
    assert_eq!(stats.played as usize, encoded.frames.len() - 10);
    assert_eq!(stats.underruns, 10);

    // The WAV holds the source.
    let mut normalised = Vec::new();
    codec::normalise_file(&asset, &cfg, &mut |_| {}, &mut |c| {
        normalised.extend_from_slice(c);
        Ok(())
    })
    .unwrap();
    let played: Vec<f32> = hound::WavReader::open(&wav)
        .unwrap()
        .samples::<i16>()
        .map(|s| s.unwrap() as f32 / 32768.0)
        .collect();
    assert_eq!(played.len(), encoded.frames.len() * 320);
    let (corr, lag) = codec::measure::best_correlation(&normalised, &played, 1000);
    println!("terminal WAV vs source: correlation {corr:.4} at lag {lag} samples");
    assert!(corr > 0.9, "{corr}");
    // The tampered segment's span (frames 400..410) is not the source's audio.
    let span = 400 * 320 + lag..410 * 320 + lag;
    let energy_played: f32 = played[span.clone()].iter().map(|s| s * s).sum();
    let energy_source: f32 = normalised[400 * 320..410 * 320].iter().map(|s| s * s).sum();
    println!("tampered span: played energy {energy_played:.3} vs source {energy_source:.3}");
    assert!(
        energy_played < 0.3 * energy_source,
        "the tampered audio was not played, only concealment"
    );
}
