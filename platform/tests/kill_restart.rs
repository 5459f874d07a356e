//! A district platform run as its own process and killed with SIGKILL again
//! and again: right after approvals it acknowledged, and in the middle of
//! one. Each time it is restarted on the same store and issues again.
//! Every acknowledged approval must still be there with its audit entry,
//! its broadcast listed whole, published exactly once and delivered to the
//! town below; every issue after a restart must be accepted; no broadcast
//! id may ever repeat; the audit trail verifies after it all.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certs::pki::{copy, DistrictPki, Layout};
use certs::Bundle;
use protocol::BroadcastId;

const CYCLES: usize = 15;

fn free_port() -> u16 {
    // A port free for both UDP (QUIC) and TCP (HTTP).
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A 1.5 s 16 kHz mono WAV: a tone that changes with `n`.
fn tone_wav(path: &Path, n: usize) {
    let rate = 16_000u32;
    let samples: Vec<i16> = (0..rate as usize * 3 / 2)
        .map(|i| {
            let f = 300.0 + 40.0 * n as f32;
            let t = i as f32 / rate as f32;
            ((2.0 * std::f32::consts::PI * f * t).sin() * 12_000.0) as i16
        })
        .collect();
    let data_len = samples.len() as u32 * 2;
    let mut b = Vec::with_capacity(44 + data_len as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

struct District {
    dir: PathBuf,
    config: PathBuf,
    api: String,
    quic: SocketAddr,
    drafter: String,
    approver: String,
    auditor: String,
    maintainer: String,
    child: Option<Child>,
    starts: usize,
}

impl District {
    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join(format!("run-{}.log", self.starts))).unwrap();
        self.starts += 1;
        let child = Command::new(env!("CARGO_BIN_EXE_platform"))
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("platform binary starts");
        self.child = Some(child);
    }

    /// SIGKILL: no flush, no goodbye.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9");
            c.wait().expect("reaped");
        }
    }

    async fn wait_up(&self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = http.get(format!("{}/api/health", self.api)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the platform did not answer within 30 s (see {})",
            self.dir.display()
        );
    }
}

/// Runs the `platform` command line with `args`, `stdin` on its input; its
/// standard output.
fn cli(args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_platform"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("platform binary starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "platform {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// An account made with the command line, and a token for it.
fn account(config: &Path, name: &str, roles: &str) -> String {
    let c = config.to_str().unwrap();
    cli(
        &[
            "account",
            "add",
            "--config",
            c,
            "--role",
            roles,
            "--password-stdin",
            name,
        ],
        "a long enough password\n",
    );
    cli(&["account", "token", "--config", c, name], "")
        .trim()
        .to_string()
}

async fn get_json(http: &reqwest::Client, api: &str, token: &str, path: &str) -> serde_json::Value {
    http.get(format!("{api}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the API answers")
        .json()
        .await
        .expect("JSON")
}

/// Drafts and submits an emergency: the draft waiting for approval.
async fn draft(
    http: reqwest::Client,
    api: String,
    token: String,
    wav: PathBuf,
    n: usize,
) -> Result<(reqwest::StatusCode, serde_json::Value), reqwest::Error> {
    let form = reqwest::multipart::Form::new()
        .part(
            "audio",
            reqwest::multipart::Part::bytes(std::fs::read(&wav).unwrap()).file_name("tone.wav"),
        )
        .text("areas", "360121000000")
        .text("class", "emergency")
        .text("severity", "2")
        .text("title", format!("重启测试 {n}"))
        .text("valid_minutes", "30");
    let r = http
        .post(format!("{api}/api/broadcasts"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await?;
    let status = r.status();
    Ok((status, r.json().await.unwrap_or_default()))
}

async fn approve(
    http: reqwest::Client,
    api: String,
    token: String,
    draft: u64,
) -> Result<(reqwest::StatusCode, serde_json::Value), reqwest::Error> {
    let r = http
        .post(format!("{api}/api/drafts/{draft}/approve"))
        .bearer_auth(token)
        .json(&serde_json::json!({"comment": "同意播发"}))
        .send()
        .await?;
    let status = r.status();
    Ok((status, r.json().await.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_district_killed_again_and_again_loses_nothing_and_issues_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let now = certs::time::unix_now();
    let pki = DistrictPki::generate(Layout::ONE_OF_EACH, (now - 3600, now + 86_400), now).unwrap();
    let bundle = path.join("district.bundle");
    Bundle::new(pki.root.cert().clone(), copy(&pki.district), now)
        .unwrap()
        .write_file(&bundle)
        .unwrap();
    let port = free_port();
    let config = path.join("district.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"经开区\"\nbundle = {:?}\nlisten = \"127.0.0.1:{port}\"\nhttp = \"127.0.0.1:{port}\"\n\
             store = {:?}\n",
            bundle,
            path.join("store"),
        ),
    )
    .unwrap();
    // The first accounts come from the shell, before the first start.
    let drafter = account(&config, "zhang", "drafter");
    let approver = account(&config, "li", "approver");
    let auditor = account(&config, "wang", "auditor");
    let maintainer = account(&config, "zhao", "maintainer");
    let mut district = District {
        dir: path.clone(),
        config,
        api: format!("http://127.0.0.1:{port}"),
        quic: ([127, 0, 0, 1], port).into(),
        drafter,
        approver,
        auditor,
        maintainer,
        child: None,
        starts: 0,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    district.spawn();
    district.wait_up(&http).await;

    // The town below, in this process: it must end up holding every
    // acknowledged broadcast, whole, through all the district's deaths.
    let town_bundle =
        Bundle::new(pki.root.cert().clone(), copy(&pki.towns[0].identity), now).unwrap();
    let mut town_config = platform::PlatformConfig::new(
        "town",
        PathBuf::new(),
        ([127, 0, 0, 1], 0).into(),
        path.join("town-store"),
    );
    town_config.parents = vec![district.quic];
    let town = platform::Platform::new(town_config, town_bundle)
        .unwrap()
        .start(platform::Listeners::loopback(false).await.unwrap())
        .await
        .unwrap();

    let revoked = pki
        .terminals()
        .next()
        .expect("a terminal")
        .1
        .cert()
        .serial();
    let mut acknowledged: Vec<(u64, BroadcastId)> = Vec::new();
    let mut refused_after_restart = Vec::new();
    for n in 0..CYCLES {
        let wav = path.join(format!("tone-{n}.wav"));
        tone_wav(&wav, n);
        let (status, body) = draft(
            http.clone(),
            district.api.clone(),
            district.drafter.clone(),
            wav,
            n,
        )
        .await
        .expect("the API answers");
        if status != reqwest::StatusCode::ACCEPTED {
            refused_after_restart.push((n, status, body));
            district.kill9();
            district.spawn();
            district.wait_up(&http).await;
            continue;
        }
        let id = body["draft"]["id"].as_u64().unwrap();
        let request = tokio::spawn(approve(
            http.clone(),
            district.api.clone(),
            district.approver.clone(),
            id,
        ));
        if n % 3 == 2 {
            // Killed in the middle of the approval: acknowledged or not, both
            // are fine; what was acknowledged must hold.
            tokio::time::sleep(Duration::from_millis(20 + 37 * n as u64 % 200)).await;
            district.kill9();
            if let Ok(Ok((s, body))) = request.await {
                if s == reqwest::StatusCode::OK {
                    acknowledged.push((id, body["broadcast"].as_str().unwrap().parse().unwrap()));
                }
            }
        } else {
            let (status, body) = request.await.unwrap().expect("the API answers");
            if status == reqwest::StatusCode::OK && body["state"] == "published" {
                acknowledged.push((id, body["broadcast"].as_str().unwrap().parse().unwrap()));
            } else {
                refused_after_restart.push((n, status, body));
            }
            if n == 4 {
                // A revocation acknowledged, then killed at once; an
                // approver is no maintainer.
                let revoke = |token: &str| {
                    http.post(format!("{}/api/revocations", district.api))
                        .bearer_auth(token.to_string())
                        .body(format!("{{\"revoke\": [\"{revoked:016x}\"]}}"))
                        .send()
                };
                let r = revoke(&district.approver).await.unwrap();
                assert_eq!(r.status(), 403, "{:?}", r.text().await);
                let r = revoke(&district.maintainer).await.unwrap();
                assert!(r.status().is_success(), "{:?}", r.text().await);
            }
            // At once after the acknowledgement.
            district.kill9();
        }
        district.spawn();
        district.wait_up(&http).await;
    }
    assert!(
        refused_after_restart.is_empty(),
        "issues refused after a restart: {refused_after_restart:?}"
    );
    assert!(
        acknowledged.len() >= CYCLES * 2 / 3,
        "only {} of {CYCLES} issues were acknowledged",
        acknowledged.len()
    );
    let unique: BTreeSet<_> = acknowledged.iter().map(|(_, b)| b).collect();
    assert_eq!(
        unique.len(),
        acknowledged.len(),
        "an id repeated: {acknowledged:?}"
    );
    let ids: Vec<BroadcastId> = acknowledged.iter().map(|(_, b)| *b).collect();
    for pair in ids.windows(2) {
        let same_day = pair[0].as_u128() / 10_000 == pair[1].as_u128() / 10_000;
        assert!(
            !same_day || pair[0].sequence() < pair[1].sequence(),
            "sequence went backwards: {pair:?}"
        );
    }

    // Every acknowledged approval is there after the last restart, its
    // broadcast listed whole and published once: no draft has two.
    let token = district.drafter.clone();
    let rows: Vec<serde_json::Value> =
        serde_json::from_value(get_json(&http, &district.api, &token, "/api/broadcasts").await)
            .unwrap();
    for (draft, id) in &acknowledged {
        let row = rows
            .iter()
            .find(|r| r["id"] == id.to_string())
            .unwrap_or_else(|| panic!("acknowledged broadcast {id} lost; listed: {rows:?}"));
        assert_eq!(row["segments"], row["total_segments"], "{row}");
        assert!(row["total_segments"].as_u64().unwrap() > 0, "{row}");
        assert_eq!(row["draft"], *draft, "{row}");
        let d = get_json(
            &http,
            &district.api,
            &token,
            &format!("/api/drafts/{draft}"),
        )
        .await;
        assert_eq!(d["state"], "published", "{d}");
        assert_eq!(d["approvals"][0]["by"], "li", "{d}");
    }
    let mut per_draft = std::collections::BTreeMap::new();
    for r in &rows {
        if let Some(d) = r["draft"].as_u64() {
            *per_draft.entry(d).or_insert(0) += 1;
        }
    }
    assert!(
        per_draft.values().all(|n| *n == 1),
        "a draft was published twice: {per_draft:?}"
    );
    // The acknowledged revocation is in force after every later crash.
    let lists = get_json(&http, &district.api, &token, "/api/revocations").await;
    assert!(
        lists.to_string().contains(&format!("{revoked:016x}")),
        "the acknowledged revocation was lost: {lists}"
    );
    // The audit trail holds each acknowledged approval and its publishing.
    let trail = get_json(
        &http,
        &district.api,
        &district.auditor,
        "/api/audit?from=1&limit=5000",
    )
    .await;
    let entries = trail.as_array().unwrap();
    for (draft, id) in &acknowledged {
        let object = format!("draft {draft}");
        assert!(
            entries.iter().any(|e| e["action"] == "draft.approve"
                && e["object"] == object
                && e["actor"] == "li"
                && e["outcome"] == "ok"),
            "no audit entry for the approval of {object}"
        );
        let published = entries
            .iter()
            .filter(|e| {
                e["action"] == "broadcast.publish"
                    && e["object"] == format!("broadcast {id} (draft {draft})")
            })
            .count();
        assert_eq!(
            published, 1,
            "{object} published {published} times by the trail"
        );
    }
    // And it issues again, at once.
    let wav = path.join("tone-last.wav");
    tone_wav(&wav, CYCLES);
    let (status, body) = draft(
        http.clone(),
        district.api.clone(),
        district.drafter.clone(),
        wav,
        CYCLES,
    )
    .await
    .unwrap();
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
    let (status, body) = approve(
        http.clone(),
        district.api.clone(),
        district.approver.clone(),
        body["draft"]["id"].as_u64().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let last: BroadcastId = body["broadcast"].as_str().unwrap().parse().unwrap();
    let mut acknowledged: Vec<BroadcastId> = acknowledged.iter().map(|(_, b)| *b).collect();
    assert!(!acknowledged.contains(&last));
    acknowledged.push(last);

    // Delivered: the town holds each one complete.
    let deadline = Instant::now() + Duration::from_secs(30);
    let missing = loop {
        let missing: Vec<BroadcastId> = acknowledged
            .iter()
            .copied()
            .filter(|id| {
                !town.relay.broadcasts.get(*id).is_some_and(|b| {
                    b.is_complete()
                        && b.segment_count() as u32 == b.header.header().audio.total_segments
                })
            })
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(missing.is_empty(), "the town never got {missing:?}");
    // The town refused nothing of the district's: no reused id, no replay.
    let refused = town.relay.refusals();
    assert_eq!(
        refused.total(),
        0,
        "the town refused: {:?}",
        refused.iter().collect::<Vec<_>>()
    );
    district.kill9();
    // The trail of all those deaths verifies, store and export alike.
    let c = district.config.to_str().unwrap().to_string();
    let out = cli(&["audit", "verify", "--config", &c], "");
    assert!(out.contains("audit trail good"), "{out}");
    let export = path.join("audit.jsonl");
    cli(
        &[
            "audit",
            "export",
            "--config",
            &c,
            "--out",
            export.to_str().unwrap(),
        ],
        "",
    );
    let out = cli(
        &[
            "audit",
            "verify",
            "--export",
            export.to_str().unwrap(),
            "--config",
            &c,
        ],
        "",
    );
    assert!(out.contains("audit trail good"), "{out}");
}
