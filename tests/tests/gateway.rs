//! Alerts from above (R13), end to end against a running district with
//! real terminals: GY/T 384/385 packages signed with SM2 keys made here,
//! posted to the district's GY/T listener, and CAP 1.2 documents posted to
//! its API. A verified EBM plays at the terminals of the areas it names
//! (PCM compared) and nowhere else; a wrong signature gets result code 4
//! and plays nowhere; cancels (EBM and CAP) stop what they name; an
//! Exercise plays as a drill; hostile input is refused with nothing
//! stored. The answers are signed packages that verify with the
//! district's SM2 key.

use std::time::Duration;

use base64::Engine;
use certs::pki::Layout;
use gateway::ebd::{Ebd, EbdBody};
use gateway::package::Package;
use gateway::{SmKey, TrustStore};
use platform::alerts::{GatewayConfig, SourceConfig};
use serde_json::Value;
use tests::*;

use testbed::from_above::CITY_EBRID;
const CITY_CERT: &str = "CITY-0001";
const DISTRICT_CERT: &str = "DIST-0001";
const CITY_TOKEN: &str = "city-token-7c1f0d9e2b";
const METEO_TOKEN: &str = "meteo-token-51a9c3e7d4";

struct Rig {
    district: testbed::LocalDistrict,
    city: SmKey,
    /// Verifies the district's answers.
    answers: TrustStore,
    gyt: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

fn sha256_hex(s: &str) -> String {
    hex::encode(platform::accounts::sha256(s.as_bytes()))
}

/// A district of one town, two villages, one terminal each, taking GY/T
/// from the city (severities I–II at once) and CAP from the weather
/// service (I at once, drills too), with no text to speech (so an alert
/// without audio waits for it, on any machine).
async fn rig(fetch_hosts: Vec<String>) -> Rig {
    rig_with(fetch_hosts, false, String::new(), false).await
}

/// As [`rig`]; with `voice`, the district speaks text with espeak-ng; with
/// a `report_url`, it reports the state of the city's messages there; if
/// `certified`, the city is known by the SM2 certificate a CA issued it
/// (X.509 made with OpenSSL: gateway/tests/certs), not by a bare key.
async fn rig_with(
    fetch_hosts: Vec<String>,
    voice: bool,
    report_url: String,
    certified: bool,
) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let certs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/tests/certs");
    let city = if certified {
        let hex = std::fs::read_to_string(certs.join("city.key.hex")).unwrap();
        SmKey::from_hex("3601000001", hex.trim()).unwrap()
    } else {
        SmKey::generate(CITY_CERT)
    };
    let district_key = SmKey::generate(DISTRICT_CERT);
    let key_path = dir.path().join("district.sm2");
    std::fs::write(&key_path, district_key.secret_hex()).unwrap();
    let gateway = GatewayConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        plain_http: false,
        sm2_key: key_path,
        sm2_cert_sn: DISTRICT_CERT.into(),
        sm2_certificate: None,
        fetch_hosts,
        ca_certificates: if certified {
            vec![certs.join("ca.pem")]
        } else {
            vec![]
        },
        sources: vec![
            SourceConfig {
                name: "南昌市应急广播平台".into(),
                format: "gyt".into(),
                certificate: certified.then(|| certs.join("city.pem")),
                cert_sn: if certified {
                    String::new()
                } else {
                    CITY_CERT.into()
                },
                public_key: if certified {
                    String::new()
                } else {
                    city.public_hex()
                },
                token_sha256: sha256_hex(CITY_TOKEN),
                addresses: vec![],
                relay_at_once: vec![1, 2],
                drills_at_once: false,
                report_url,
            },
            SourceConfig {
                name: "江西省气象台".into(),
                format: "cap".into(),
                certificate: None,
                cert_sn: String::new(),
                public_key: String::new(),
                token_sha256: sha256_hex(METEO_TOKEN),
                addresses: vec![],
                relay_at_once: vec![1],
                drills_at_once: true,
                report_url: String::new(),
            },
        ],
    };
    let layout = Layout {
        towns: 1,
        villages: 2,
        terminals: 2,
    };
    let district = district_taking_alerts(dir.path(), layout, gateway, voice).await;
    let gyt = format!(
        "http://{}/ebd",
        district.district.gateway_addr.expect("GY/T listener")
    );
    let answers = TrustStore::new(vec![gateway::Sender::new(
        "district",
        DISTRICT_CERT,
        &district_key.public_hex(),
    )
    .unwrap()]);
    Rig {
        district,
        city,
        answers,
        gyt,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

/// An EBM's fields, as the city writes them.
struct Msg<'a> {
    seq: u32,
    msg_type: u8,
    related: Option<String>,
    severity: u8,
    areas: String,
    title: &'a str,
    /// (file name, bytes, give its SM3 digest)
    audio: Option<(&'a str, Vec<u8>, bool)>,
}

/// The city's cancel (MsgType 2), EBD `seq`, of its message `of`.
fn cancel_of(seq: u32, of: u32, area: String) -> Msg<'static> {
    Msg {
        seq,
        msg_type: 2,
        related: Some(ebm_id(of)),
        severity: 2,
        areas: area,
        title: "取消",
        audio: None,
    }
}

fn ebm_id(seq: u32) -> String {
    format!("{CITY_EBRID}20261207{seq:04}")
}

fn ebd_id(seq: u32) -> String {
    format!("{CITY_EBRID}{seq:016}")
}

fn china(ms: i64) -> String {
    gateway::ebd::format_time(ms)
}

fn ebm_xml(m: &Msg<'_>) -> String {
    testbed::from_above::CityMessage {
        id: ebm_id(m.seq),
        msg_type: m.msg_type,
        related: m.related.clone(),
        severity: m.severity,
        title: m.title,
        text: "请立即转移到安全地带。",
        areas: m.areas.split(',').map(str::to_string).collect(),
        audio: m.audio.as_ref().map(|(n, b, d)| (*n, b.as_slice(), *d)),
    }
    .document(&ebd_id(m.seq), certs::time::unix_now_ms())
}

/// The package of `xml` as EBD `seq`, signed with `key`, with `files`.
fn package(key: &SmKey, seq: u32, xml: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    gateway::gyt::signed_package(&ebd_id(seq), xml, key, &china(0), files)
}

fn ebm_package(key: &SmKey, m: &Msg<'_>) -> Vec<u8> {
    let files: Vec<(&str, &[u8])> = m.audio.iter().map(|(n, b, _)| (*n, b.as_slice())).collect();
    package(key, m.seq, &ebm_xml(m), &files)
}

impl Rig {
    /// Posts a package (with the city's token); the HTTP status and the
    /// answer, verified as the district's signed EBD.
    async fn post(&self, body: Vec<u8>) -> (u16, Option<Ebd>) {
        self.post_as(body, Some(CITY_TOKEN), "application/x-tar")
            .await
    }

    async fn post_as(
        &self,
        body: Vec<u8>,
        token: Option<&str>,
        content_type: &str,
    ) -> (u16, Option<Ebd>) {
        let mut req = self
            .http
            .post(&self.gyt)
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("the GY/T listener answers");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_default();
        let ebd = gateway::gyt::receive(&bytes, &self.answers)
            .ok()
            .map(|v| v.ebd);
        (status, ebd)
    }

    fn drafts_with_alerts(&self) -> Vec<platform::drafts::Draft> {
        self.district
            .district
            .workflow
            .drafts
            .list(None, usize::MAX)
            .unwrap()
            .into_iter()
            .filter(|d| d.alert.is_some())
            .collect()
    }

    fn village(&self, v: usize) -> String {
        self.district.villages[v].area.to_string()
    }

    /// The details of the audit entries of `action`, as the auditor reads
    /// them.
    async fn audit_details(&self, action: &str) -> Vec<String> {
        let trail = self
            .district
            .district_api()
            .with_token(&self.district.creds.auditor.token)
            .get("/api/audit?limit=500")
            .await
            .unwrap();
        trail
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action)
            .map(|e| e["detail"].as_str().unwrap_or("").to_string())
            .collect()
    }

    async fn metrics(&self) -> String {
        self.district
            .district_api()
            .get_text("/metrics")
            .await
            .unwrap()
    }

    async fn cap(&self, doc: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!(
                "{}/api/alerts/cap",
                self.district.district_api().base()
            ))
            .header("content-type", "application/cap+xml")
            .body(doc.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        answer(req).await
    }
}

fn code_of(ebd: &Option<Ebd>) -> Option<u8> {
    match ebd.as_ref().map(|e| &e.body) {
        Some(EbdBody::Response { code, .. }) => Some(*code),
        _ => None,
    }
}

/// Frames terminal `i` played of the broadcast titled `title`.
fn played(r: &Rig, i: usize, title: &str) -> (u64, bool, bool) {
    r.district.terminals[i]
        .handle()
        .snapshot()
        .records
        .values()
        .filter(|p| p.title == title)
        .fold((0, false, false), |(n, f, c), p| {
            (n + p.frames_played, f || p.finished, c || p.cancelled)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_ebm_plays_where_it_names_and_an_ebm_cancel_stops_it() {
    let mut r = rig(vec![]).await;
    let mp3 = std::fs::read(asset("alert-zh.mp3")).unwrap();

    // 1. A severity II flood alert for village 0, its MP3 bound by the
    //    SM3 digest in the signed message: relayed at once.
    let title = "上级暴雨橙色预警";
    let m = Msg {
        seq: 1,
        msg_type: 1,
        related: None,
        severity: 2,
        areas: r.village(0),
        title,
        audio: Some(("EBDR_0001_1.mp3", mp3.clone(), true)),
    };
    let (status, answer) = r.post(ebm_package(&r.city, &m)).await;
    assert_eq!(status, 200);
    assert_eq!(code_of(&answer), Some(1), "verified: {answer:?}");
    let drafts = r.drafts_with_alerts();
    assert_eq!(drafts.len(), 1);
    let d = &drafts[0];
    let origin = d.alert.as_ref().unwrap();
    assert_eq!(
        (origin.format.as_str(), origin.id.as_str()),
        ("GY/T 385", ebm_id(1).as_str())
    );
    assert!(origin.verified.contains(CITY_CERT), "{}", origin.verified);
    assert_eq!(
        d.state,
        platform::drafts::DraftState::Published,
        "relayed at once"
    );
    assert_eq!(d.target_codes(), [r.village(0)]);
    let bid = d.broadcast_id().expect("a broadcast of ours");

    // The city asks how it stands: playing, with coverage from receipts.
    assert!(
        eventually(Duration::from_secs(20), || played(&r, 0, title).0 > 0).await,
        "village 0's terminal plays it"
    );
    let ask = gateway::ebd::state_request(
        &gateway::ebd::Envelope {
            id: &ebd_id(2),
            src: CITY_EBRID,
            dest: "",
            time_ms: certs::time::unix_now_ms(),
            related: None,
        },
        &ebm_id(1),
    );
    let (_, state) = r.post(package(&r.city, 2, &ask, &[])).await;
    match state.map(|e| e.body) {
        Some(EbdBody::StateResponse {
            ebm_id: id,
            state,
            coverage,
            ..
        }) => {
            assert_eq!(id, ebm_id(1));
            assert_eq!(state, 2, "playing");
            assert!(coverage.ends_with("/1"), "one terminal has it: {coverage}");
        }
        other => panic!("an EBMStateResponse: {other:?}"),
    }
    assert!(
        eventually(Duration::from_secs(60), || r.district.terminals[0]
            .handle()
            .snapshot()
            .records
            .get(&bid)
            .is_some_and(|p| p.finished))
        .await,
        "it plays to the end"
    );
    assert_eq!(
        played(&r, 1, title).0,
        0,
        "village 1 is not named: nothing plays there"
    );

    // 2. A second alert, then the city's cancel (MsgType 2) stops it.
    let title2 = "上级山洪预警";
    let m2 = Msg {
        seq: 3,
        title: title2,
        areas: format!("{},{}", r.village(0), r.village(1)),
        ..m
    };
    let (_, a2) = r.post(ebm_package(&r.city, &m2)).await;
    assert_eq!(code_of(&a2), Some(1));
    assert!(
        eventually(Duration::from_secs(20), || played(&r, 0, title2).0 > 50
            && played(&r, 1, title2).0 > 50)
        .await,
        "both villages play the second alert"
    );
    let cancel = cancel_of(4, 3, r.village(0));
    let (_, a3) = r.post(ebm_package(&r.city, &cancel)).await;
    assert_eq!(code_of(&a3), Some(1), "{a3:?}");
    assert!(
        eventually(Duration::from_secs(10), || played(&r, 0, title2).2
            && played(&r, 1, title2).2)
        .await,
        "the cancel stops it at every terminal"
    );
    let (n0, finished, _) = played(&r, 0, title2);
    assert!(!finished && n0 < 25 * 50, "cut short: {n0} frames");
    // The same cancel again changes nothing and is answered the same way.
    let (_, again) = r.post(ebm_package(&r.city, &cancel)).await;
    assert_eq!(code_of(&again), Some(1));

    // 3. What played is what went in.
    let wavs = played_wavs(&mut r.district).await;
    let reference = normalised(&asset("alert-zh.mp3"));
    let c = correlation(&reference[..16_000 * 5], &wavs[0].1, 2_000);
    assert!(
        c > 0.9,
        "village 0 played the city's audio (correlation {c:.3})"
    );

    // 4. Every receipt is in the audit trail with sender and verification.
    let receipts = r.audit_details("alert.receive").await;
    assert!(receipts.len() >= 4, "{receipts:?}");
    assert!(receipts.iter().any(|d| d.contains("relayed")));
    assert!(receipts.iter().any(|d| d.contains("cancelled")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_city_hears_each_state_unasked_though_its_interface_was_down_at_first() {
    use std::sync::atomic::Ordering;
    let (url, city) = testbed::from_above::Interface::serve().await.unwrap();
    city.down.store(2, Ordering::SeqCst);
    // The city is known by its CA-issued certificate here.
    let r = rig_with(vec![], false, url, true).await;
    let city_key = SmKey::from_hex(&r.city.cert_sn, &r.city.secret_hex()).unwrap();
    assert!(city.trust(r.answers.clone(), city_key));

    // A severity II alert for village 0: relayed at once, played to its end.
    let title = "上级暴雨预警（状态上报）";
    let m = Msg {
        seq: 21,
        msg_type: 1,
        related: None,
        severity: 2,
        areas: r.village(0),
        title,
        audio: Some((
            "EBDR_0021_1.mp3",
            std::fs::read(asset("alert-zh.mp3")).unwrap(),
            true,
        )),
    };
    let (_, answer) = r.post(ebm_package(&r.city, &m)).await;
    assert_eq!(code_of(&answer), Some(1), "{answer:?}");
    let states = || city.states_of(&ebm_id(21));
    // Unasked, the city hears it playing (after two refused posts and the
    // back-off), then done with the terminal that finished it.
    assert!(
        eventually(Duration::from_secs(90), || states().contains(&2)).await,
        "a report of playing: {:?}",
        city.heard()
    );
    assert!(
        eventually(Duration::from_secs(120), || states().contains(&3)).await,
        "a report of done: {:?}",
        city.heard()
    );
    assert!(
        city.posts.load(Ordering::SeqCst) >= 4,
        "the two refused posts were sent again"
    );
    assert!(
        eventually(Duration::from_secs(60), || city.heard().iter().any(|h| h
            .ebm_id
            == ebm_id(21)
            && h.state == 3
            && h.coverage.ends_with("/1/1")))
        .await,
        "done, and the one terminal finished it: {:?}",
        city.heard()
    );
    let s = states();
    let first_done = s.iter().position(|x| *x == 3).unwrap();
    assert!(
        s[..first_done].iter().all(|x| *x == 1 || *x == 2),
        "states go forward: {s:?}"
    );
    assert!(r
        .metrics()
        .await
        .contains("ebs_gateway_state_reports_total{outcome=\"failed\"} 2"));

    // A second alert, cancelled by the city: the city hears "cancelled".
    let m2 = Msg {
        seq: 23,
        title: "上级山洪预警（状态上报）",
        ..m
    };
    let (_, a2) = r.post(ebm_package(&r.city, &m2)).await;
    assert_eq!(code_of(&a2), Some(1));
    let cancel = cancel_of(24, 23, r.village(0));
    let (_, a3) = r.post(ebm_package(&r.city, &cancel)).await;
    assert_eq!(code_of(&a3), Some(1));
    assert!(
        eventually(Duration::from_secs(30), || city
            .states_of(&ebm_id(23))
            .contains(&5))
        .await,
        "a report of cancelled: {:?}",
        city.heard()
    );
    assert!(
        city.states_of(&ebm_id(24)).is_empty(),
        "the cancel itself is not a broadcast to report on"
    );
    // Both are in the audit trail.
    let reported = r.audit_details("alert.report").await;
    assert!(
        reported.iter().any(|d| d.contains("not delivered")),
        "{reported:?}"
    );
    assert!(
        reported.iter().any(|d| d.contains("BrdState 5")),
        "{reported:?}"
    );

    // A package signed with another key is refused (code 4) ...
    let forged = Msg {
        seq: 25,
        title: "伪造预警",
        ..m2
    };
    let (_, a4) = r
        .post(ebm_package(&SmKey::generate(&r.city.cert_sn), &forged))
        .await;
    assert_eq!(code_of(&a4), Some(4));
    // ... and the console's page of alerts from above shows the operator
    // all of it: the source and where its reports go, each alert with
    // what was done, how it stands and what the city was told, the refusal.
    let api = r.district.district_api();
    let drafter = &r.district.creds.drafter;
    let cookie = login(api.base(), &drafter.name, &drafter.password).await;
    let console = |path: &'static str, lang: &'static str| {
        let cookie = format!("{cookie}; ebs_lang={lang}");
        let url = format!("{}{path}", api.base());
        let http = r.http.clone();
        async move { page(&http, url, &cookie).await }
    };
    let html = console("/from-above", "zh-CN").await;
    let row = |id: &str| -> String {
        let at = html
            .find(&format!("data-original=\"{id}\""))
            .unwrap_or_else(|| panic!("a row for {id}"));
        html[at..].split("</tr>").next().unwrap().to_string()
    };
    let done = row(&ebm_id(21));
    assert!(
        done.contains("播发完成")
            && done.contains("播完 1")
            && (done.contains("已上报：播发完成") || done.contains("已全部上报")),
        "{done}"
    );
    let cancelled = row(&ebm_id(23));
    assert!(
        cancelled.contains("已撤销") && cancelled.contains("已上报：已取消"),
        "{cancelled}"
    );
    assert!(
        html.contains("主动上报至 127.0.0.1:"),
        "the source's reports"
    );
    assert!(
        html.contains("3601000001，有效期至 2046-"),
        "the source's certificate and its end"
    );
    assert!(r.metrics().await.contains(
        "ebs_gateway_source_certificate_not_after_seconds{source=\"南昌市应急广播平台\",serial=\"3601000001\"} "
    ));
    let refused = html
        .split("id=\"refused-heading\"")
        .nth(1)
        .expect("the refusals");
    assert!(
        refused.contains(&ebd_id(25)) && refused.contains("result code 4"),
        "the forged package is listed with why"
    );
    assert!(
        console("/", "zh-CN").await.contains("href=\"/from-above\""),
        "the menu leads there"
    );
    let english = console("/from-above", "en").await;
    assert!(
        english.contains("reported unasked to 127.0.0.1:")
            && english.contains("cancelled")
            && !english.contains('⟦'),
        "every word in English too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_signature_and_hostile_packages_are_refused_with_nothing_stored() {
    let r = rig(vec![]).await;
    let mp3 = std::fs::read(asset("alert-zh.mp3")).unwrap();
    let msg = |seq: u32| Msg {
        seq,
        msg_type: 1,
        related: None,
        severity: 1,
        areas: r.village(0),
        title: "伪造的预警",
        audio: Some(("EBDR_1.mp3", mp3.clone(), true)),
    };

    // Signed with a key that is not the city's certificate's: code 4.
    let forger = SmKey::generate(CITY_CERT);
    let (status, a) = r.post(ebm_package(&forger, &msg(1))).await;
    assert_eq!((status, code_of(&a)), (200, Some(4)), "{a:?}");
    // The audio swapped after signing: its digest no longer matches.
    let mut p = Package::read(&ebm_package(&r.city, &msg(2)), usize::MAX).unwrap();
    for (n, b) in &mut p.files {
        if n.ends_with(".mp3") {
            b[1000] ^= 0xFF;
        }
    }
    assert_eq!(
        code_of(&r.post(p.write()).await.1),
        Some(4),
        "a swapped audio file"
    );
    // A connection check is verified like anything else.
    let check = format!(
        "<EBD><EBDVersion>1.0</EBDVersion><EBDID>{}</EBDID><EBDType>ConnectionCheck</EBDType><SRC><EBRID>{CITY_EBRID}</EBRID></SRC><EBDTime>{}</EBDTime></EBD>",
        ebd_id(3),
        china(0)
    );
    assert_eq!(
        code_of(&r.post(package(&forger, 3, &check, &[])).await.1),
        Some(4)
    );
    assert_eq!(
        code_of(&r.post(package(&r.city, 3, &check, &[])).await.1),
        Some(1)
    );

    // Signed by the city itself, and still hostile.
    let xxe = r#"<?xml version="1.0"?><!DOCTYPE EBD [<!ENTITY x SYSTEM "file:///etc/passwd">]><EBD><EBDID>&x;</EBDID></EBD>"#;
    let laughs = r#"<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><EBD>&c;</EBD>"#;
    for (seq, doc) in [(4, xxe), (5, laughs)] {
        let (_, a) = r.post(package(&r.city, seq, doc, &[])).await;
        assert_eq!(code_of(&a), Some(2), "a DTD is refused: {a:?}");
    }
    let big = ebm_xml(&msg(6)).replace("请立即转移到安全地带。", &"很".repeat(400_000));
    assert_eq!(
        code_of(&r.post(package(&r.city, 6, &big, &[])).await.1),
        Some(2),
        "an oversized message"
    );
    // A tar entry named outside the package.
    let mut evil = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    let name = b"../../etc/EBDB_7.xml";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_size(5);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    evil.append(&h, &b"<EBD>"[..]).unwrap();
    let (_, a) = r.post(evil.into_inner().unwrap()).await;
    assert_eq!(code_of(&a), Some(2), "path traversal: {a:?}");
    // A body over the package limit.
    let (status, a) = r
        .post(vec![0u8; gateway::package::MAX_PACKAGE_BYTES + 100 * 1024])
        .await;
    assert_eq!((status, code_of(&a)), (200, Some(2)), "an oversized body");
    // No token: refused before the body, no answer package at all.
    let (status, a) = r
        .post_as(ebm_package(&r.city, &msg(8)), None, "application/x-tar")
        .await;
    assert_eq!((status, a.is_none()), (401, true));
    let (status, _) = r
        .post_as(
            ebm_package(&r.city, &msg(8)),
            Some(METEO_TOKEN),
            "application/x-tar",
        )
        .await;
    assert_eq!(status, 401, "a CAP source's token is not a GY/T sender's");
    // A sender with a wrong token whose body is still on its way when
    // the refusal comes hears why (401), not a reset connection; and the
    // connection it was refused on is not offered again for its next post.
    let package = ebm_package(&r.city, &msg(8));
    for i in 0..20 {
        let chunks = futures_util::stream::unfold(0, |n| async move {
            if n == 4 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            Some((Ok::<_, std::io::Error>(vec![7u8; 64 * 1024]), n + 1))
        });
        let resp = r
            .http
            .post(&r.gyt)
            .bearer_auth("wrong-token")
            .header("content-type", "application/x-tar")
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await;
        assert_eq!(
            resp.map(|r| r.status().as_u16()).map_err(|e| e.to_string()),
            Ok(401),
            "refused post {i}"
        );
        let (status, _) = r
            .post_as(package.clone(), Some("wrong-token"), "application/x-tar")
            .await;
        assert_eq!(status, 401, "the post after {i}");
    }

    // Nothing was stored, nothing plays, and every refusal is counted.
    assert!(r.drafts_with_alerts().is_empty());
    assert!(r.district.district.relay.broadcasts.all().is_empty());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(played(&r, 0, "伪造的预警").0, 0);
    let m = r.metrics().await;
    assert_eq!(
        metric(&m, "ebs_gateway_packages_total{result_code=\"4\"}"),
        3,
        "{m}"
    );
    assert_eq!(
        metric(&m, "ebs_gateway_packages_total{result_code=\"2\"}"),
        5,
        "{m}"
    );
    assert_eq!(metric(&m, "ebs_gateway_unauthenticated_total"), 42, "{m}");

    // A multipart form holding a good package works as the raw one does.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(ebm_package(&r.city, &msg(9))).file_name("EBD_9.tar"),
    );
    let resp = r
        .http
        .post(&r.gyt)
        .bearer_auth(CITY_TOKEN)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let bytes = resp.bytes().await.unwrap();
    let a = gateway::gyt::receive(&bytes, &r.answers)
        .ok()
        .map(|v| v.ebd);
    assert_eq!(code_of(&a), Some(1), "{a:?}");
    assert_eq!(r.drafts_with_alerts().len(), 1);
}

/// A CAP alert from the weather service.
fn cap_alert(
    id: &str,
    status: &str,
    msg_type: &str,
    severity: &str,
    extra_info: &str,
    references: &str,
) -> String {
    let now = certs::time::unix_now_ms();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
<identifier>{id}</identifier><sender>jxqx@cma.gov.cn</sender><sent>{}</sent>
<status>{status}</status><msgType>{msg_type}</msgType><scope>Public</scope>{references}
<info><language>zh-CN</language><category>Met</category><event>暴雨</event>
<urgency>Immediate</urgency><severity>{severity}</severity><certainty>Likely</certainty>
<eventCode><valueName>GB/T 35965</valueName><value>11B03</value></eventCode>
<expires>{}</expires><senderName>江西省气象台</senderName>
<headline>气象台暴雨预警（{id}）</headline><description>预计未来3小时有强降雨。</description>
{extra_info}</info></alert>"#,
        gateway::cap::format_datetime(now),
        gateway::cap::format_datetime(now + 3_600_000),
    )
}

/// A polygon around area `code`'s configured point (±0.001°).
fn polygon_around(r: &Rig, code: &str) -> String {
    let entry = r
        .district
        .district
        .gateway
        .as_ref()
        .unwrap()
        .places
        .point(code.parse().unwrap())
        .expect("the village has a point on the map");
    let (lon, lat) = entry;
    let d = 0.001;
    format!(
        "<area><areaDesc>村</areaDesc><polygon>{a},{b} {a},{c} {e},{c} {e},{b} {a},{b}</polygon></area>",
        a = lat - d,
        b = lon - d,
        c = lon + d,
        e = lat + d
    )
}

fn deref(path: &std::path::Path) -> String {
    format!(
        "<resource><resourceDesc>预警音频</resourceDesc><mimeType>audio/wav</mimeType><derefUri>{}</derefUri></resource>",
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_exercise_plays_as_a_drill_and_a_cap_cancel_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(vec![]).await;
    let clip_path = dir.path().join("cap.wav");
    clip("alert-zh.wav", 20.0, &clip_path);

    // An Exercise of severity Extreme for village 1 only (by its polygon):
    // the weather service's drills are relayed at once, as drills.
    let area = polygon_around(&r, &r.village(1));
    let doc = cap_alert(
        "QX-0001",
        "Exercise",
        "Alert",
        "Extreme",
        &format!("{}{area}", deref(&clip_path)),
        "",
    );
    let (status, a) = r.cap(&doc, Some(METEO_TOKEN)).await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["outcome"], "relayed", "{a}");
    let bid: protocol::BroadcastId = a["broadcast"].as_str().unwrap().parse().unwrap();
    let held = r.district.district.relay.broadcasts.get(bid).unwrap();
    assert_eq!(
        held.header.header().class,
        protocol::BroadcastClass::Drill,
        "shown and played as a drill"
    );
    assert_eq!(
        held.header.header().targets,
        vec![r.district.villages[1].area]
    );
    let title = "气象台暴雨预警（QX-0001）";
    assert!(
        eventually(Duration::from_secs(20), || played(&r, 1, title).0 > 50).await,
        "village 1 plays the drill"
    );
    assert_eq!(
        played(&r, 0, title).0,
        0,
        "village 0 lies outside the polygon"
    );

    // The feed shows it as an Exercise, in CAP 1.2.
    let api = r.district.district_api();
    let feed = api.get_text("/api/alerts/feed").await.unwrap();
    assert!(
        feed.contains("<status>Exercise</status>") && feed.contains(&bid.to_string()),
        "{feed}"
    );
    let one = api
        .get_text(&format!("/api/alerts/cap/{bid}"))
        .await
        .unwrap();
    let back = gateway::cap::CapAlert::parse(one.as_bytes()).expect("our CAP reads back");
    assert_eq!(back.status, gateway::cap::Status::Exercise);
    validate_against_schema(&[&one]);

    // The service cancels it (msgType Cancel, referencing it): it stops.
    let refs = format!(
        "<references>jxqx@cma.gov.cn,QX-0001,{}</references>",
        gateway::cap::format_datetime(certs::time::unix_now_ms())
    );
    let cancel = cap_alert("QX-0002", "Exercise", "Cancel", "Extreme", "", &refs);
    let (status, a) = r.cap(&cancel, Some(METEO_TOKEN)).await;
    assert_eq!(
        (status, a["outcome"].as_str()),
        (200, Some("cancelled")),
        "{a}"
    );
    assert!(
        eventually(Duration::from_secs(10), || played(&r, 1, title).2).await,
        "the CAP cancel stops it"
    );
    assert!(!played(&r, 1, title).1, "it did not play to the end");
    let feed = api.get_text("/api/alerts/feed").await.unwrap();
    assert!(
        feed.contains("<msgType>Cancel</msgType>"),
        "the cancel is in the feed: {feed}"
    );
    let alerts: Vec<&str> = feed
        .split("<content type=\"application/cap+xml\">")
        .skip(1)
        .filter_map(|s| s.split("</content>").next())
        .collect();
    assert!(alerts.len() >= 2);
    validate_against_schema(&alerts);

    // A Moderate Actual alert without audio waits in review (no voice
    // here), and approving it needs audio first.
    let doc = cap_alert("QX-0003", "Actual", "Alert", "Moderate", &area, "");
    let (_, a) = r.cap(&doc, Some(METEO_TOKEN)).await;
    assert_eq!(a["outcome"], "review", "{a}");
    let id = a["draft"].as_u64().unwrap();
    let approve = api.approve(id, "核实").await.unwrap_err().to_string();
    assert!(approve.contains("audio"), "{approve}");
    // The approver's review queue shows where it came from.
    let approver = &r.district.creds.approver;
    let cookie = login(api.base(), &approver.name, &approver.password).await;
    let html = page(&r.http, format!("{}/review", api.base()), &cookie).await;
    assert!(
        html.contains("CAP 1.2 · 江西省气象台") && html.contains("QX-0003"),
        "the review card names the alert's origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cap_faults_are_named_and_audio_comes_only_from_configured_hosts() {
    // A resource server on loopback: one allowed host, one not.
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let wav = std::fs::read(asset("warning-en-8k-ulaw.wav")).unwrap();
    let serve = |hits: std::sync::Arc<std::sync::atomic::AtomicUsize>, wav: Vec<u8>| async move {
        let app = axum::Router::new().route(
            "/a.wav",
            axum::routing::get(move || {
                hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let wav = wav.clone();
                async move { wav }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        addr
    };
    let allowed = serve(hits.clone(), wav.clone()).await;
    let other_hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let other = serve(other_hits.clone(), wav).await;
    let r = rig(vec![allowed.to_string()]).await;
    let area = format!(
        "<area><areaDesc>村</areaDesc><geocode><valueName>GB/T 2260</valueName><value>{}</value></geocode></area>",
        r.village(0)
    );
    let uri = |addr: std::net::SocketAddr| {
        format!("<resource><resourceDesc>音频</resourceDesc><mimeType>audio/wav</mimeType><uri>http://{addr}/a.wav</uri></resource>")
    };

    // Fetched from the configured host: it plays.
    let doc = cap_alert(
        "QX-0101",
        "Actual",
        "Alert",
        "Extreme",
        &format!("{}{area}", uri(allowed)),
        "",
    );
    let (status, a) = r.cap(&doc, Some(METEO_TOKEN)).await;
    assert_eq!(
        (status, a["outcome"].as_str()),
        (200, Some("relayed")),
        "{a}"
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    let first: protocol::BroadcastId = a["broadcast"].as_str().unwrap().parse().unwrap();
    // An Update replaces it: the new one goes out, the old one is cancelled.
    let refs = format!(
        "<references>jxqx@cma.gov.cn,QX-0101,{}</references>",
        gateway::cap::format_datetime(certs::time::unix_now_ms())
    );
    let update = cap_alert(
        "QX-0103",
        "Actual",
        "Update",
        "Extreme",
        &format!("{}{area}", uri(allowed)),
        &refs,
    );
    let (_, a) = r.cap(&update, Some(METEO_TOKEN)).await;
    assert_eq!(a["outcome"], "relayed", "{a}");
    let relay = &r.district.district.relay;
    assert!(
        relay
            .broadcasts
            .get(first)
            .is_some_and(|b| b.is_cancelled()),
        "the alert it updates is cancelled"
    );
    let second: protocol::BroadcastId = a["broadcast"].as_str().unwrap().parse().unwrap();
    assert!(relay
        .broadcasts
        .get(second)
        .is_some_and(|b| !b.is_cancelled()));
    // Any other host is never asked: the alert waits in review for audio.
    let doc = cap_alert(
        "QX-0102",
        "Actual",
        "Alert",
        "Extreme",
        &format!("{}{area}", uri(other)),
        "",
    );
    let (_, a) = r.cap(&doc, Some(METEO_TOKEN)).await;
    assert_eq!(a["outcome"], "review", "{a}");
    assert_eq!(
        other_hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "never fetched"
    );
    assert!(a["warnings"].to_string().contains("fetch_hosts"), "{a}");

    // Faults are named; hostile documents are refused; nothing is kept.
    let before = r.drafts_with_alerts().len();
    let cases = [
        (cap_alert("QX-0201", "Real", "Alert", "Extreme", &area, ""), "alert/status"),
        (cap_alert("QX-0202", "Actual", "Cancel", "Extreme", &area, ""), "alert/references"),
        (cap_alert("QX-0203", "Actual", "Alert", "Awful", &area, ""), "alert/info[1]/severity"),
        (cap_alert("QX 0204", "Actual", "Alert", "Extreme", &area, ""), "alert/identifier"),
        (
            cap_alert("QX-0205", "Actual", "Alert", "Extreme", "<area><areaDesc>x</areaDesc><polygon>28,115 29,115 28,115</polygon></area>", ""),
            "polygon",
        ),
        (
            r#"<?xml version="1.0"?><!DOCTYPE alert [<!ENTITY x SYSTEM "file:///etc/passwd">]><alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">&x;</alert>"#.to_string(),
            "DTD",
        ),
    ];
    for (doc, named) in &cases {
        let (status, a) = r.cap(doc, Some(METEO_TOKEN)).await;
        assert_eq!(status, 422, "{a}");
        assert!(
            a["message"].as_str().unwrap_or("").contains(named),
            "{named}: {a}"
        );
    }
    let (status, _) = r.cap(&cases[0].0, None).await;
    assert_eq!(status, 401);
    let (status, _) = r.cap(&cases[0].0, Some(CITY_TOKEN)).await;
    assert_eq!(status, 401, "a GY/T sender's token is not a CAP source's");
    let huge = "x".repeat(gateway::cap::MAX_CAP_BYTES + 1);
    let (status, _) = r.cap(&huge, Some(METEO_TOKEN)).await;
    assert_eq!(status, 413);
    assert_eq!(r.drafts_with_alerts().len(), before, "nothing kept");
    let m = r.metrics().await;
    assert_eq!(
        metric(&m, "ebs_gateway_cap_total{outcome=\"refused\"}"),
        cases.len() as u64,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_alert_without_audio_is_spoken_and_relayed() {
    if !voice_installed() {
        return;
    }
    let r = rig_with(vec![], true, String::new(), false).await;
    let area = format!(
        "<area><areaDesc>村</areaDesc><geocode><valueName>GB/T 2260</valueName><value>{}</value></geocode></area>",
        r.village(1)
    );
    let (status, a) = r
        .cap(
            &cap_alert("QX-0301", "Actual", "Alert", "Extreme", &area, ""),
            Some(METEO_TOKEN),
        )
        .await;
    assert_eq!(
        (status, a["outcome"].as_str()),
        (200, Some("relayed")),
        "{a}"
    );
    let d = r.drafts_with_alerts().pop().unwrap();
    assert!(
        d.audio.spoken.is_some() && d.audio.duration_ms > 2_000,
        "{:?}",
        d.audio
    );
    assert!(d.alert.unwrap().audio.contains("spoken"));
    assert!(
        eventually(Duration::from_secs(20), || played(
            &r,
            1,
            "气象台暴雨预警（QX-0301）"
        )
        .0 > 50)
        .await,
        "the spoken alert plays in village 1"
    );
}

/// Validates CAP documents against the OASIS CAP 1.2 schema with xmllint,
/// when `EBS_CAP_XSD` names the schema file (CI fetches it; see
/// docs/gateways.md); otherwise says it did not.
fn validate_against_schema(docs: &[&str]) {
    let Ok(xsd) = std::env::var("EBS_CAP_XSD") else {
        eprintln!("EBS_CAP_XSD not set: CAP output not validated against the schema here");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (i, doc) in docs.iter().enumerate() {
        let path = dir.path().join(format!("alert-{i}.xml"));
        std::fs::write(&path, doc).unwrap();
        let out = std::process::Command::new("xmllint")
            .args(["--noout", "--schema", &xsd])
            .arg(&path)
            .output()
            .expect("xmllint runs (apt install libxml2-utils)");
        assert!(
            out.status.success(),
            "not valid CAP 1.2: {}\n{doc}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The city's certificate, issued by the configured CA, runs out while the
/// district runs: a package signed under it is then refused (code 4), with
/// nothing filed, though the signature itself verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_signed_under_an_expired_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let valid = Duration::from_secs(30);
    let ends = tokio::time::Instant::now() + valid;
    let (city, gateway) = testbed::from_above::City::start_with(dir.path(), valid)
        .await
        .unwrap();
    let layout = Layout {
        towns: 1,
        villages: 1,
        terminals: 1,
    };
    let district = district_taking_alerts(dir.path(), layout, gateway, true).await;
    let listener = district.district.gateway_addr.unwrap();
    let village = district.villages[0].area.to_string();
    let audio = asset("alert-zh.mp3");
    let (_, code, _) = city
        .send(
            listener,
            2,
            "证书有效期内",
            "请转移。",
            std::slice::from_ref(&village),
            &audio,
        )
        .await
        .unwrap();
    assert_eq!(code, 1, "within its validity: taken");
    // Wait until the certificate has ended (its end is in whole seconds).
    tokio::time::sleep_until(ends + Duration::from_secs(2)).await;
    let (_, code, desc) = city
        .send(listener, 2, "证书已过期", "请转移。", &[village], &audio)
        .await
        .unwrap();
    assert_eq!(code, 4, "{desc}");
    assert!(
        desc.contains("3601000001") && desc.contains("not now"),
        "{desc}"
    );
    let titles: Vec<String> = district
        .district
        .workflow
        .drafts
        .list(None, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|d| d.title)
        .collect();
    assert_eq!(
        titles,
        ["证书有效期内"],
        "nothing filed for the refused one"
    );
}

/// What the district owes the city survives a restart: with the city's
/// interface down, the district takes an alert (answering code 1, which
/// promises the reports), fails to report it, is stopped at once and
/// started again on its store; once the interface is up the city hears the
/// alert's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owed_state_reports_survive_a_restart_of_the_district() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let (city, gateway) = testbed::from_above::City::start(dir.path()).await.unwrap();
    city.interface.down.store(u32::MAX, Ordering::SeqCst);
    let now = certs::time::unix_now();
    let pki = certs::pki::DistrictPki::generate(Layout::ONE_OF_EACH, (now - 60, now + 86_400), now)
        .unwrap();
    testbed::node::provision(dir.path(), &pki.root, &pki.district, "district", now).unwrap();
    let start = |listeners: platform::Listeners| {
        let mut config = testbed::node::platform_config(dir.path(), "district", vec![]);
        config.gateway = Some(gateway.clone());
        let bundle = certs::Bundle::read_file(&config.bundle, now).unwrap();
        async move {
            platform::Platform::new(config, bundle)
                .unwrap()
                .start(listeners)
                .await
                .unwrap()
        }
    };
    let listeners = platform::Listeners::loopback(false)
        .await
        .unwrap()
        .with_gateway()
        .await
        .unwrap();
    let district = start(listeners).await;
    let at = district.gateway_addr.unwrap();
    let county = district.relay.scope[0].to_string();
    let (ebm, code, _) = city
        .send(
            at,
            2,
            "重启前收到的预警",
            "请转移。",
            &[county],
            &asset("alert-zh.mp3"),
        )
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(
        eventually(Duration::from_secs(10), || city
            .interface
            .posts
            .load(Ordering::SeqCst)
            >= 1)
        .await,
        "a report was tried while the interface was down"
    );
    district.kill();
    drop(district);

    // Started again on the same store and listener address.
    city.interface.down.store(0, Ordering::SeqCst);
    let mut district = None;
    for _ in 0..100 {
        if let (Ok(quic), Ok(gyt)) = (
            transport::bind_udp(([127, 0, 0, 1], 0).into()),
            tokio::net::TcpListener::bind(at).await,
        ) {
            let listeners = platform::Listeners {
                quic,
                http: None,
                gateway: Some(gyt),
            };
            district = Some(start(listeners).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _district = district.expect("the district starts again");
    assert!(
        eventually(Duration::from_secs(60), || !city
            .interface
            .states_of(&ebm)
            .is_empty())
        .await,
        "the city hears the alert's state after the restart: {:?}",
        city.interface.heard()
    );
}
