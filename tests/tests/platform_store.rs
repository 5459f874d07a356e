//! A platform's receipts and terminal status survive a restart: coverage
//! ("how many played it") is not lost with the process.

use std::sync::Arc;
use std::time::Duration;

use certs::pki::{DistrictPki, Layout};
use protocol::{BroadcastId, Receipt, ReceiptKind, RefusalReason};

/// A district platform with no API and no parent, on `store`.
fn district_options(
    pki: &DistrictPki,
    store: &std::path::Path,
    now: i64,
) -> platform::PlatformOptions {
    platform::PlatformOptions {
        name: "district".into(),
        bundle: certs::Bundle::new(
            pki.root.cert().clone(),
            certs::Identity {
                key: certs::SecretKey::from_pem(&pki.district.key.to_pem(), "k").unwrap(),
                chain: pki.district.chain.clone(),
            },
            now,
        )
        .unwrap(),
        listen: ([127, 0, 0, 1], 0).into(),
        http: None,
        parents: vec![],
        store: store.to_path_buf(),
        api_token: "x".repeat(32),
        ingest: codec::IngestConfig::default(),
        lead_ms: 1000,
        expiry_warning: platform::expiry::DEFAULT_WARNING,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_survive_a_platform_restart() {
    let now = certs::time::unix_now();
    let pki = DistrictPki::generate(
        Layout {
            towns: 1,
            villages: 1,
            terminals: 3,
        },
        (now - 60, now + 86_400),
        now,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let id: BroadcastId = format!("{}202611280001", pki.district.cert().body().resource_code)
        .parse()
        .unwrap();
    let terminals: Vec<_> = pki.terminals().map(|(_, t)| t).collect();
    let handle = platform::start(district_options(&pki, &store, now))
        .await
        .unwrap();
    let kinds = [
        ReceiptKind::Finished,
        ReceiptKind::Started,
        ReceiptKind::Refused,
    ];
    for (t, kind) in terminals.iter().zip(kinds) {
        let reason = (kind == ReceiptKind::Refused).then_some(RefusalReason::CertRevoked);
        let r = Receipt {
            broadcast: Some(id),
            terminal_serial: t.cert().serial(),
            kind,
            reason,
            at_ms: now * 1000,
            detail: 0,
        };
        handle.relay.record_receipt(&r.sign(&t.key));
    }
    let event = protocol::SecurityEvent {
        reporter_serial: terminals[2].cert().serial(),
        reporter_tier: certs::Tier::Terminal,
        reason: RefusalReason::CertRevoked,
        broadcast: Some(id),
        offender: 7,
        count: 3,
        first_ms: now * 1000,
        last_ms: now * 1000 + 5,
    };
    handle.relay.record_event(&event.sign(&terminals[2].key));
    let before = handle.relay.book().coverage(id);
    assert_eq!((before.finished, before.playing, before.refused), (1, 1, 1));
    handle.relay.flush().unwrap();

    // Stop it, wait until its store is released, start it again.
    let weak = Arc::downgrade(&handle.relay);
    drop(handle);
    for _ in 0..100 {
        if weak.upgrade().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = platform::start(district_options(&pki, &store, now))
        .await
        .unwrap();
    let after = again.relay.book().coverage(id);
    assert_eq!(after, before, "coverage restored from the store");
    assert_eq!(
        again.relay.book().refusals.get(&RefusalReason::CertRevoked),
        Some(&3),
        "security events restored"
    );
    let events = again.relay.book().events();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].reason, events[0].count), ("cert_revoked", 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_broadcasts_are_pruned_from_memory_and_store() {
    let now = certs::time::unix_now();
    let pki = DistrictPki::generate(
        Layout {
            towns: 1,
            villages: 1,
            terminals: 1,
        },
        (now - 60, now + 86_400),
        now,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let handle = platform::start(district_options(&pki, &dir.path().join("store"), now))
        .await
        .unwrap();
    let (header, segments) = protocol::testing::recorded_broadcast(
        &pki.district,
        1,
        vec![pki.district.cert().scope()[0]],
        now * 1000,
        2,
    );
    let id = header.id();
    let end = header.header().end_ms;
    handle
        .relay
        .ingest_header(protocol::Message::Header(header).encode().into(), true)
        .unwrap();
    for s in segments {
        handle
            .relay
            .ingest_segment(protocol::Message::Segment(s).encode().into(), true)
            .unwrap();
    }
    assert!(handle.relay.get(id).is_some());
    assert_eq!(handle.relay.prune(end, 0), 0, "kept until it ends");
    assert_eq!(handle.relay.prune(end + 1, 0), 1, "forgotten after");
    assert!(handle.relay.get(id).is_none());
    assert!(handle.relay.all().is_empty());
}
