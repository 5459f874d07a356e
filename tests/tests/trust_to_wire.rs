//! From provisioning to the wire, across `certs` and `protocol`: a terminal
//! provisioned from a bundle file verifies a district's byte stream, gets
//! exactly the audio that was sent, applies a revocation list pushed on the
//! same stream, and plays nothing after it from the revoked key.

use certs::pki::{DistrictPki, Layout};
use certs::{Bundle, Identity, RevocationList, SecretKey};
use protocol::testing::recorded_broadcast;
use protocol::*;

const NOW_S: i64 = 1_800_000_000;
const NOW: i64 = NOW_S * 1000;

/// What a terminal does with a stream: decode, verify, keep what plays.
struct Terminal {
    verifier: Verifier<MemoryReplayStore>,
    played: Vec<Vec<u8>>,
    refusals: Vec<RefusalReason>,
}

impl Terminal {
    fn receive(&mut self, stream: &[u8], chunk: usize) {
        let mut reader = FrameReader::new();
        for piece in stream.chunks(chunk) {
            let frames = match reader.push(piece) {
                Ok(f) => f,
                Err(e) => {
                    self.refusals.push(Refusal::from(e).reason());
                    return; // the stream is closed
                }
            };
            for raw in frames {
                let result = match raw.message() {
                    Ok(Message::Header(h)) => self.verifier.accept_header(&h, NOW).map(|_| ()),
                    Ok(Message::Segment(s)) => self
                        .verifier
                        .accept_segment(&s, NOW)
                        .map(|_| self.played.extend(s.frames.clone())),
                    Ok(Message::Revocation(l)) => {
                        self.verifier
                            .apply_revocation(l, NOW)
                            .expect("genuine list");
                        Ok(())
                    }
                    Ok(_) => Ok(()),
                    Err(e) => Err(Refusal::from(e)),
                };
                if let Err(r) = result {
                    self.refusals.push(r.reason());
                }
            }
        }
    }
}

#[test]
fn provisioned_terminal_verifies_a_district_stream() {
    let pki = DistrictPki::generate(
        Layout {
            towns: 2,
            villages: 4,
            terminals: 4,
        },
        (NOW_S - 60, NOW_S + 86_400),
        NOW_S,
    )
    .unwrap();
    let village = &pki.towns[0].villages[0];
    let t = &village.terminals[0];

    // Provision through the bundle file, as the `certs bundle` command writes it.
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("t.key");
    t.key.write_file(&key_path).unwrap();
    let bundle = Bundle::new(
        pki.root.cert().clone(),
        Identity {
            key: SecretKey::read_file(&key_path).unwrap(),
            chain: t.chain.clone(),
        },
        NOW_S,
    )
    .unwrap();
    let path = dir.path().join("terminal.bundle");
    bundle.write_file(&path).unwrap();
    let bundle = Bundle::read_file(&path, NOW_S).unwrap();
    let area = bundle.identity.cert().scope()[0];
    let mut terminal = Terminal {
        verifier: Verifier::new(
            bundle.anchor,
            Audience::Terminal { area },
            Policy::default(),
            MemoryReplayStore::new(),
        ),
        played: Vec::new(),
        refusals: Vec::new(),
    };

    // The district's alert and the village's notice, then a revocation of the
    // village, then a second notice from the revoked village key.
    let county = pki.district.cert().scope()[0];
    let (alert, alert_segments) = recorded_broadcast(&pki.district, 1, vec![county], NOW, 6);
    let (notice, notice_segments) =
        recorded_broadcast(&village.identity, 1, vec![village.area], NOW, 2);
    let list = RevocationList::sign(
        pki.district.cert().serial(),
        pki.district.chain.clone(),
        &pki.district.key,
        1,
        NOW_S,
        vec![village.identity.cert().serial()],
    )
    .unwrap();
    let (late, late_segments) =
        recorded_broadcast(&village.identity, 2, vec![village.area], NOW, 2);

    let mut stream = Vec::new();
    stream.extend(Message::Header(alert).encode());
    stream.extend(Message::Header(notice).encode());
    for s in alert_segments.iter().chain(&notice_segments) {
        stream.extend(Message::Segment(s.clone()).encode());
    }
    stream.extend(Message::Revocation(list).encode());
    stream.extend(Message::Header(late).encode());
    stream.extend(Message::Segment(late_segments[0].clone()).encode());
    // Garbage at the end closes the stream.
    stream.extend([7u8; 40]);

    terminal.receive(&stream, 7);

    let sent: Vec<Vec<u8>> = alert_segments
        .iter()
        .chain(&notice_segments)
        .flat_map(|s| s.frames.clone())
        .collect();
    assert_eq!(
        terminal.played, sent,
        "exactly the genuine audio, in order, and nothing after the revocation"
    );
    assert_eq!(
        terminal.refusals,
        vec![
            RefusalReason::CertRevoked,
            RefusalReason::UnknownBroadcast,
            RefusalReason::UnsupportedVersion
        ]
    );
    assert_eq!(
        terminal.verifier.counts().get(RefusalReason::CertRevoked),
        1
    );
}
