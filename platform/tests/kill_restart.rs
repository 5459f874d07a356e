//! A district platform run as its own process and killed with SIGKILL again
//! and again: right after broadcasts it acknowledged, and in the middle of
//! an issue. Each time it is restarted on the same store and issues again.
//! Every acknowledged broadcast must still be listed whole and reach the
//! town below; every issue after a restart must be accepted; no broadcast
//! id may ever repeat.

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
    token: String,
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
            if let Ok(r) = http.get(format!("{}/api/status", self.api)).send().await {
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

async fn get_json(http: &reqwest::Client, api: &str, path: &str) -> serde_json::Value {
    http.get(format!("{api}{path}"))
        .send()
        .await
        .expect("the API answers")
        .json()
        .await
        .expect("JSON")
}

async fn issue(
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
             store = {:?}\napi_token_file = {:?}\n",
            bundle,
            path.join("store"),
            path.join("api-token"),
        ),
    )
    .unwrap();
    let mut district = District {
        dir: path.clone(),
        config,
        api: format!("http://127.0.0.1:{port}"),
        quic: ([127, 0, 0, 1], port).into(),
        token: String::new(),
        child: None,
        starts: 0,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    district.spawn();
    district.wait_up(&http).await;
    district.token = std::fs::read_to_string(path.join("api-token"))
        .unwrap()
        .trim()
        .to_string();

    // The town below, in this process: it must end up holding every
    // acknowledged broadcast, whole, through all the district's deaths.
    let town_bundle =
        Bundle::new(pki.root.cert().clone(), copy(&pki.towns[0].identity), now).unwrap();
    let mut town_config = platform::PlatformConfig::new(
        "town",
        PathBuf::new(),
        ([127, 0, 0, 1], 0).into(),
        path.join("town-store"),
        PathBuf::new(),
    );
    town_config.parents = vec![district.quic];
    let town = platform::Platform::new(town_config, town_bundle, "t".repeat(32))
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
    let mut acknowledged: Vec<BroadcastId> = Vec::new();
    let mut refused_after_restart = Vec::new();
    for n in 0..CYCLES {
        let wav = path.join(format!("tone-{n}.wav"));
        tone_wav(&wav, n);
        let request = tokio::spawn(issue(
            http.clone(),
            district.api.clone(),
            district.token.clone(),
            wav,
            n,
        ));
        if n % 3 == 2 {
            // Killed in the middle of the issue: acknowledged or not, both
            // are fine; what was acknowledged must hold.
            tokio::time::sleep(Duration::from_millis(20 + 37 * n as u64 % 200)).await;
            district.kill9();
            if let Ok(Ok((s, body))) = request.await {
                if s == reqwest::StatusCode::CREATED {
                    acknowledged.push(body["id"].as_str().unwrap().parse().unwrap());
                }
            }
        } else {
            let (status, body) = request.await.unwrap().expect("the API answers");
            if status == reqwest::StatusCode::CREATED {
                acknowledged.push(body["id"].as_str().unwrap().parse().unwrap());
            } else {
                refused_after_restart.push((n, status, body));
            }
            if n == 4 {
                // A revocation acknowledged, then killed at once.
                let r = http
                    .post(format!("{}/api/revocations", district.api))
                    .bearer_auth(&district.token)
                    .body(format!("{{\"revoke\": [\"{revoked:016x}\"]}}"))
                    .send()
                    .await
                    .unwrap();
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
    let unique: BTreeSet<_> = acknowledged.iter().collect();
    assert_eq!(
        unique.len(),
        acknowledged.len(),
        "an id repeated: {acknowledged:?}"
    );
    for pair in acknowledged.windows(2) {
        let same_day = pair[0].as_u128() / 10_000 == pair[1].as_u128() / 10_000;
        assert!(
            !same_day || pair[0].sequence() < pair[1].sequence(),
            "sequence went backwards: {pair:?}"
        );
    }

    // Every acknowledged broadcast is listed, whole, after the last restart.
    let rows: Vec<serde_json::Value> =
        serde_json::from_value(get_json(&http, &district.api, "/api/broadcasts").await).unwrap();
    for id in &acknowledged {
        let row = rows
            .iter()
            .find(|r| r["id"] == id.to_string())
            .unwrap_or_else(|| panic!("acknowledged broadcast {id} lost; listed: {rows:?}"));
        assert_eq!(row["segments"], row["total_segments"], "{row}");
        assert!(row["total_segments"].as_u64().unwrap() > 0, "{row}");
    }
    // The acknowledged revocation is in force after every later crash.
    let lists = get_json(&http, &district.api, "/api/revocations").await;
    assert!(
        lists.to_string().contains(&format!("{revoked:016x}")),
        "the acknowledged revocation was lost: {lists}"
    );
    // And it issues again, at once.
    let wav = path.join("tone-last.wav");
    tone_wav(&wav, CYCLES);
    let (status, body) = issue(
        http.clone(),
        district.api.clone(),
        district.token.clone(),
        wav,
        CYCLES,
    )
    .await
    .unwrap();
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let last: BroadcastId = body["id"].as_str().unwrap().parse().unwrap();
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
}
