//! A platform's receipts and terminal status survive a restart: coverage
//! ("how many played it") is not lost with the process.

use std::sync::Arc;
use std::time::Duration;

use certs::pki::{DistrictPki, Layout};
use protocol::{BroadcastId, Receipt, ReceiptKind, RefusalReason};

/// A district with one town, one village and `terminals` terminals, valid
/// from a minute ago until `until`.
fn one_village(now: i64, terminals: usize, until: i64) -> DistrictPki {
    DistrictPki::generate(
        Layout {
            towns: 1,
            villages: 1,
            terminals,
        },
        (now - 60, until),
        now,
    )
    .unwrap()
}

/// Starts a district platform with no parent on `store` (with an API if
/// `http`).
async fn start_district(
    pki: &DistrictPki,
    store: &std::path::Path,
    http: bool,
) -> (platform::PlatformHandle, testbed::Credentials) {
    let bundle = tests::range::bundle(&pki.root, &pki.district);
    let mut config = tests::range::platform_config(store, "district", vec![]);
    config.store = store.to_path_buf();
    let creds = testbed::Credentials::generate().unwrap();
    let p = testbed::node::start_platform(config, bundle, &creds, http)
        .await
        .expect("district starts");
    (p, creds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_survive_a_platform_restart() {
    let now = certs::time::unix_now();
    let pki = one_village(now, 3, now + 86_400);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let id: BroadcastId = format!("{}202611280001", pki.district.cert().body().resource_code)
        .parse()
        .unwrap();
    let terminals: Vec<_> = pki.terminals().map(|(_, t)| t).collect();
    let (handle, _) = start_district(&pki, &store, false).await;
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
    handle
        .relay
        .record_event(&event.sign(&terminals[2].key), platform::now_ms());
    let before = handle.relay.coverage(id, platform::now_ms());
    assert_eq!((before.finished, before.playing, before.refused), (1, 1, 1));
    handle.relay.flush().unwrap();

    // Stop it, wait until its store is released, start it again.
    let weak = Arc::downgrade(&handle.relay);
    handle.shutdown().await;
    for _ in 0..100 {
        if weak.upgrade().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (again, _) = start_district(&pki, &store, false).await;
    let after = again.relay.coverage(id, platform::now_ms());
    assert_eq!(after, before, "coverage restored from the store");
    assert_eq!(
        again.relay.book().refusals.get(&RefusalReason::CertRevoked),
        Some(&3),
        "security events restored"
    );
    let events = again.relay.book().events();
    assert_eq!(events.len(), 1);
    // Kept for the audit retention, pruned after it.
    let now_ms = now * 1000;
    assert_eq!(
        again
            .relay
            .prune_events(now_ms, platform::EVENT_RETENTION_MS),
        0
    );
    assert_eq!(
        again.relay.prune_events(
            now_ms + platform::EVENT_RETENTION_MS + 60_000,
            platform::EVENT_RETENTION_MS
        ),
        1
    );
    assert_eq!((events[0].reason, events[0].count), ("cert_revoked", 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_broadcasts_are_pruned_from_memory_and_store() {
    let now = certs::time::unix_now();
    let pki = one_village(now, 1, now + 86_400);
    let dir = tempfile::tempdir().unwrap();
    let (handle, _) = start_district(&pki, &dir.path().join("store"), false).await;
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
        .ingest_header(
            protocol::Message::Header(header).encode().into(),
            true,
            platform::now_ms(),
        )
        .unwrap();
    for s in segments {
        handle
            .relay
            .ingest_segment(
                protocol::Message::Segment(s).encode().into(),
                true,
                platform::now_ms(),
            )
            .unwrap();
    }
    assert!(handle.relay.broadcasts.get(id).is_some());
    assert_eq!(handle.relay.prune(end, 0), 0, "kept until it ends");
    assert_eq!(handle.relay.prune(end + 1, 0), 1, "forgotten after");
    assert!(handle.relay.broadcasts.get(id).is_none());
    assert!(handle.relay.broadcasts.all().is_empty());
}

/// The chain's expiry as the API and the metrics show it, for a PKI valid
/// `days` more days.
async fn expiry_seen(days: i64) -> (serde_json::Value, String) {
    let now = certs::time::unix_now();
    let pki = one_village(now, 1, now + days * 86_400);
    let dir = tempfile::tempdir().unwrap();
    let (p, creds) = start_district(&pki, &dir.path().join("store"), true).await;
    let api = testbed::ApiClient::of(&p, &creds).unwrap();
    let status = api.get("/api/status").await.unwrap();
    let metrics = api.get_text("/metrics").await.unwrap();
    (status, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_near_expiry_is_warned_in_the_api_and_the_metrics() {
    let (status, metrics) = expiry_seen(10).await;
    let certs = status["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 2, "root and district: {status}");
    for c in certs {
        assert_eq!(c["warning"], true, "{c}");
        let left = c["seconds_left"].as_i64().unwrap();
        assert!((9 * 86_400..=10 * 86_400).contains(&left), "{c}");
    }
    let district = certs.iter().find(|c| c["tier"] == "district").unwrap();
    let serial = district["serial"].as_str().unwrap();
    assert!(
        metrics.contains(&format!(
            "ebs_certificate_expiry_warning{{serial=\"{serial}\",tier=\"district\"}} 1"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("# TYPE ebs_certificate_expiry_seconds gauge"));

    let (status, metrics) = expiry_seen(400).await;
    for c in status["certificates"].as_array().unwrap() {
        assert_eq!(c["warning"], false, "{c}");
    }
    let warnings: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("ebs_certificate_expiry_warning{"))
        .collect();
    assert_eq!(warnings.len(), 2, "{metrics}");
    assert!(warnings.iter().all(|l| l.ends_with(" 0")), "{warnings:?}");
}
