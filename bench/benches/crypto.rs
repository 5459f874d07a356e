//! P6: signing and verification cost per segment and per header.
//!
//! Run: `cargo bench -p bench --bench crypto`. Verifies per second per core
//! is 1 / (time per verification) on one core; see README for figures.

use certs::key::verify_batch;
use certs::pki::{DistrictPki, Layout};
use certs::{PublicKey, SignContext, Signature, TrustAnchor};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use protocol::testing::{fake_frame, recorded_broadcast};
use protocol::*;

const NOW_S: i64 = 1_800_000_000;
const NOW: i64 = NOW_S * 1000;

fn bench(c: &mut Criterion) {
    let pki =
        DistrictPki::generate(Layout::ONE_OF_EACH, (NOW_S - 100, NOW_S + 86_400), NOW_S).unwrap();
    let district = &pki.district;
    let county = district.cert().scope()[0];
    let (header, segments) = recorded_broadcast(district, 1, vec![county], NOW, 64);
    let frames: Vec<Vec<u8>> = (0..10).map(fake_frame).collect();
    let anchor = TrustAnchor::new(pki.root.cert().clone()).unwrap();
    let terminal_area = pki.towns[0].villages[0].area;
    let new_verifier = || {
        Verifier::new(
            anchor.clone(),
            Audience::Terminal {
                area: terminal_area,
            },
            Policy::default(),
            MemoryReplayStore::new(),
        )
    };

    let mut g = c.benchmark_group("segment (10 frames x 60 B = 200 ms at 24 kbit/s)");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign", |b| {
        b.iter(|| {
            Segment::sign(
                header.id(),
                1,
                0,
                false,
                frames.clone(),
                header.digest(),
                &district.key,
            )
            .unwrap()
        })
    });
    g.bench_function("verify signature", |b| {
        b.iter(|| {
            assert!(segments[0].signature_valid(header.digest(), district.cert().public_key()))
        })
    });
    g.bench_function("decode + verifier.accept_segment", |b| {
        b.iter_batched(
            || {
                let mut v = new_verifier();
                v.accept_header(&header, NOW).unwrap();
                v
            },
            |mut v| {
                let s = Segment::decode(segments[0].body()).unwrap();
                v.accept_segment(&s, NOW).unwrap();
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("batch of 64 segment signatures");
    g.throughput(Throughput::Elements(64));
    let key: PublicKey = *district.cert().public_key();
    let unsigned: Vec<(&[u8], Signature)> = segments
        .iter()
        .map(|s| {
            let body = s.body();
            let (signed, sig) = body.split_at(body.len() - 64);
            (signed, sig.try_into().unwrap())
        })
        .collect();
    let parts: Vec<[&[u8]; 2]> = unsigned
        .iter()
        .map(|(m, _)| [header.digest().as_slice(), *m])
        .collect();
    g.bench_function("one by one", |b| {
        b.iter(|| {
            for (p, (_, sig)) in parts.iter().zip(&unsigned) {
                assert!(key.verify(SignContext::Segment, p, sig));
            }
        })
    });
    g.bench_function("batch", |b| {
        b.iter(|| {
            let items: Vec<(&PublicKey, &[&[u8]], &Signature)> = parts
                .iter()
                .zip(&unsigned)
                .map(|(p, (_, s))| (&key, &p[..], s))
                .collect();
            assert!(verify_batch(SignContext::Segment, &items));
        })
    });
    g.finish();

    let mut g = c.benchmark_group("header (district chain, 2 certificates)");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign", |b| {
        b.iter(|| SignedHeader::sign(header.header().clone(), district).unwrap())
    });
    g.bench_function("decode + verifier.accept_header", |b| {
        b.iter_batched(
            new_verifier,
            |mut v| {
                let h = SignedHeader::decode(header.body()).unwrap();
                v.accept_header(&h, NOW).unwrap();
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
