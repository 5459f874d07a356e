//! The whole district on one machine: a fresh PKI in a temporary folder,
//! every platform and terminal started in-process on loopback with real
//! QUIC, the HTTP API listening. Used by `platform demo` and by the
//! integration tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use certs::pki::{DistrictPki, Layout};
use certs::{AreaCode, Bundle, Identity};
use codec::PlayoutConfig;
use terminal_agent::{TerminalHandle, TerminalOptions};

use crate::{PlatformHandle, PlatformOptions};

/// Reports start-up progress: (what, done, of).
pub type ProgressFn = Box<dyn Fn(&str, usize, usize) + Send + Sync>;

/// Where a terminal's audio goes.
pub type SinkFactory =
    Box<dyn Fn(usize, &Path) -> anyhow::Result<Box<dyn codec::Sink>> + Send + Sync>;

pub struct LocalOptions {
    pub layout: Layout,
    /// Temporary folder for PKI, stores and WAV files.
    pub dir: PathBuf,
    pub sink: SinkFactory,
    pub heartbeat: Duration,
    /// Give every platform an HTTP API (the district always has one).
    pub api_everywhere: bool,
    /// Called as nodes start: (what, done, of).
    pub progress: ProgressFn,
    /// Run the platforms on this runtime (a benchmark separates relay CPU
    /// from terminal CPU by thread); None: the current one.
    pub platform_runtime: Option<tokio::runtime::Handle>,
}

pub struct LocalTerminal {
    handle: Option<TerminalHandle>,
    pub bundle: PathBuf,
    pub upstreams: Vec<SocketAddr>,
    pub town: usize,
    pub village: usize,
    pub area: AreaCode,
    pub dir: PathBuf,
}

impl LocalTerminal {
    pub fn handle(&self) -> &TerminalHandle {
        self.handle.as_ref().expect("terminal running")
    }

    /// Stops the terminal and closes its sink (a WAV file gets its header).
    pub async fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }
}

pub struct LocalVillage {
    pub platform: PlatformHandle,
    pub area: AreaCode,
    pub town: usize,
}

pub struct LocalDistrict {
    pub dir: PathBuf,
    pub token: String,
    pub district: PlatformHandle,
    pub towns: Vec<PlatformHandle>,
    pub villages: Vec<LocalVillage>,
    pub terminals: Vec<LocalTerminal>,
    pub root: certs::Certificate,
}

const VALIDITY_DAYS: i64 = 365;

/// Writes a node's bundle and reads it back: the real provisioning path.
fn provision(
    dir: &Path,
    root: &Identity,
    id: &Identity,
    name: &str,
    now: i64,
) -> anyhow::Result<Bundle> {
    let path = dir.join(format!("{name}.bundle"));
    let key = certs::SecretKey::from_pem(&id.key.to_pem(), name)?;
    Bundle::new(
        root.cert().clone(),
        Identity {
            key,
            chain: id.chain.clone(),
        },
        now,
    )?
    .write_file(&path)?;
    Ok(Bundle::read_file(&path, now)?)
}

fn any_port() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

impl LocalDistrict {
    pub async fn start(opts: LocalOptions) -> anyhow::Result<Self> {
        let now = certs::time::unix_now();
        let pki =
            DistrictPki::generate(opts.layout, (now - 3600, now + VALIDITY_DAYS * 86_400), now)
                .context("generating the PKI")?;
        let pki_dir = opts.dir.join("pki");
        std::fs::create_dir_all(&pki_dir)?;
        std::fs::write(pki_dir.join("root.pem"), pki.root.cert().to_pem())?;
        let token = crate::config::api_token(&opts.dir.join("api-token"))?;
        let platform =
            |name: String, bundle: Bundle, parents: Vec<SocketAddr>, http: bool| PlatformOptions {
                store: opts.dir.join("stores").join(&name),
                name,
                bundle,
                listen: any_port(),
                http: http.then(any_port),
                parents,
                api_token: token.clone(),
                ingest: codec::IngestConfig::default(),
                lead_ms: crate::issue::DEFAULT_LEAD_MS,
                expiry_warning: crate::expiry::DEFAULT_WARNING,
            };
        let total_platforms = 1 + pki.towns.len() + pki.villages().count();
        let runtime = opts.platform_runtime.clone();
        let start_on = |o: PlatformOptions| {
            let runtime = runtime.clone();
            async move {
                match runtime {
                    Some(rt) => rt
                        .spawn(crate::start(o))
                        .await
                        .map_err(anyhow::Error::from)?,
                    None => crate::start(o).await,
                }
            }
        };
        let district = start_on(platform(
            "district".into(),
            provision(&pki_dir, &pki.root, &pki.district, "district", now)?,
            vec![],
            true,
        ))
        .await?;
        (opts.progress)("platforms", 1, total_platforms);
        let mut towns = Vec::new();
        for (t, town) in pki.towns.iter().enumerate() {
            let name = format!("town-{t}");
            let b = provision(&pki_dir, &pki.root, &town.identity, &name, now)?;
            towns.push(
                start_on(platform(
                    name,
                    b,
                    vec![district.quic_addr],
                    opts.api_everywhere,
                ))
                .await?,
            );
            (opts.progress)("platforms", 1 + towns.len(), total_platforms);
        }
        let mut villages = Vec::new();
        for (t, town) in pki.towns.iter().enumerate() {
            for (v, village) in town.villages.iter().enumerate() {
                let name = format!("village-{t}-{v}");
                let b = provision(&pki_dir, &pki.root, &village.identity, &name, now)?;
                let parents = vec![towns[t].quic_addr, district.quic_addr];
                villages.push(LocalVillage {
                    platform: start_on(platform(name, b, parents, opts.api_everywhere)).await?,
                    area: village.area,
                    town: t,
                });
                (opts.progress)(
                    "platforms",
                    1 + towns.len() + villages.len(),
                    total_platforms,
                );
            }
        }
        let total_terminals = pki.terminals().count();
        let mut terminals = Vec::new();
        let mut vi = 0;
        for (t, town) in pki.towns.iter().enumerate() {
            for (v, village) in town.villages.iter().enumerate() {
                for (k, term) in village.terminals.iter().enumerate() {
                    let name = format!("terminal-{t}-{v}-{k}");
                    let dir = opts.dir.join("terminals").join(&name);
                    std::fs::create_dir_all(&dir)?;
                    let bundle = provision(&pki_dir, &pki.root, term, &name, now)?;
                    let upstreams = vec![
                        villages[vi].platform.quic_addr,
                        towns[t].quic_addr,
                        district.quic_addr,
                    ];
                    let handle = terminal_agent::start(TerminalOptions {
                        bundle,
                        upstreams: upstreams.clone(),
                        sink: (opts.sink)(terminals.len(), &dir)?,
                        store: dir.join("store"),
                        heartbeat: opts.heartbeat,
                        playout: PlayoutConfig::default(),
                    })
                    .await?;
                    terminals.push(LocalTerminal {
                        handle: Some(handle),
                        bundle: pki_dir.join(format!("{name}.bundle")),
                        upstreams,
                        town: t,
                        village: vi,
                        area: village.area,
                        dir,
                    });
                    if terminals.len() % 25 == 0 || terminals.len() == total_terminals {
                        (opts.progress)("terminals", terminals.len(), total_terminals);
                    }
                }
                vi += 1;
            }
        }
        Ok(LocalDistrict {
            dir: opts.dir,
            token,
            district,
            towns,
            villages,
            terminals,
            root: pki.root.cert().clone(),
        })
    }

    /// Waits until every terminal (except `skip`) is connected upstream.
    pub async fn wait_connected(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self
                .terminals
                .iter()
                .filter(|t| t.handle().snapshot().connected_to.is_some())
                .count();
            if n == self.terminals.len() || Instant::now() > deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Restarts terminal `i` with the same bundle and store, as after a
    /// power cut: the old one stops first and lets go of its store.
    pub async fn restart_terminal(
        &mut self,
        i: usize,
        sink: Box<dyn codec::Sink>,
        heartbeat: Duration,
    ) -> anyhow::Result<()> {
        let t = &mut self.terminals[i];
        if let Some(old) = t.handle.take() {
            old.shutdown().await;
        }
        let bundle = Bundle::read_file(&t.bundle, certs::time::unix_now())?;
        t.handle = Some(
            terminal_agent::start(TerminalOptions {
                bundle,
                upstreams: t.upstreams.clone(),
                sink,
                store: t.dir.join("store"),
                heartbeat,
                playout: PlayoutConfig::default(),
            })
            .await?,
        );
        Ok(())
    }

    pub fn district_api(&self) -> String {
        format!(
            "http://{}",
            self.district.http_addr.expect("the district has an API")
        )
    }
}

/// An HTTP client whose calls end with an error, never hang.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap_or_default()
}

/// Issues a broadcast through a platform's HTTP API; returns its id.
pub async fn issue_via_api(
    api: &str,
    token: &str,
    audio: &Path,
    fields: &[(&str, String)],
) -> anyhow::Result<String> {
    let bytes = std::fs::read(audio).with_context(|| format!("reading {}", audio.display()))?;
    let name = audio
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("audio.wav")
        .to_string();
    let mut form = reqwest::multipart::Form::new().part(
        "audio",
        reqwest::multipart::Part::bytes(bytes).file_name(name),
    );
    for (k, v) in fields {
        form = form.text(k.to_string(), v.clone());
    }
    let resp = http()
        .post(format!("{api}/api/broadcasts"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await?;
    anyhow::ensure!(
        status.is_success(),
        "issue refused ({status}): {}",
        body["error"]
    );
    body["id"]
        .as_str()
        .map(str::to_string)
        .context("no id in the answer")
}

pub async fn cancel_via_api(api: &str, token: &str, id: &str) -> anyhow::Result<()> {
    let resp = http()
        .post(format!("{api}/api/broadcasts/{id}/cancel"))
        .bearer_auth(token)
        .send()
        .await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "cancel refused: {}",
        resp.text().await.unwrap_or_default()
    );
    Ok(())
}

/// What `platform demo` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub terminals: usize,
    pub connected: usize,
    /// Terminals that verified and played the whole alert, every frame.
    pub played_full: usize,
    /// Refusals counted by all terminals (0 in a clean run).
    pub refused: u64,
    /// From the API accepting the alert to the first sample at each terminal.
    pub activation_ms: Percentiles,
    /// Terminals of the notice's village that played it.
    pub notice_played: usize,
    pub notice_village_terminals: usize,
    /// Terminals outside that village that received or played it (must be 0).
    pub notice_outside_village: usize,
    /// Frames of the alert per terminal: fewest played, most concealed or recovered.
    pub alert_frames: FrameStats,
    pub alert_id: String,
    pub notice_id: String,
    pub startup_s: f64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FrameStats {
    pub total: u64,
    pub played_min: u64,
    pub concealed_max: u64,
    pub recovered_max: u64,
    pub unfinished: usize,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Percentiles {
    pub p50: i64,
    pub p95: i64,
    pub max: i64,
    pub count: usize,
}

pub fn percentiles(mut v: Vec<i64>) -> Percentiles {
    v.sort_unstable();
    let at = |q: f64| {
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    Percentiles {
        p50: at(0.5),
        p95: at(0.95),
        max: v.last().copied().unwrap_or(0),
        count: v.len(),
    }
}

pub struct DemoOptions {
    pub layout: Layout,
    pub alert: PathBuf,
    pub notice: PathBuf,
    /// Say what happens on stderr.
    pub verbose: bool,
    /// Terminal 0 plays on the loudspeaker instead of a WAV file.
    pub speaker: bool,
    pub dir: PathBuf,
    pub platform_runtime: Option<tokio::runtime::Handle>,
}

fn full(r: &terminal_agent::PlayRecord, frames_per_segment: u64) -> bool {
    r.finished
        && r.frames_concealed == 0
        && r.frames_recovered == 0
        && r.frames_played + frames_per_segment > r.total_frames
}

/// Runs the demo: start, alert, notice, summary.
pub async fn run(opts: DemoOptions) -> anyhow::Result<Summary> {
    let say = |s: String| {
        if opts.verbose {
            eprintln!("{s}");
        }
    };
    let started = Instant::now();
    let verbose = opts.verbose;
    let speaker = opts.speaker;
    let district = LocalDistrict::start(LocalOptions {
        layout: opts.layout,
        dir: opts.dir.clone(),
        sink: Box::new(move |i, dir| {
            if i == 0 {
                if speaker {
                    match codec::open_sink("speaker", 16_000) {
                        Ok(s) => return Ok(s),
                        Err(e) => eprintln!(
                            "speaker unavailable ({e}); terminal 0 writes a WAV file instead"
                        ),
                    }
                }
                return Ok(Box::new(codec::WavSink::create(
                    &dir.join("played.wav"),
                    16_000,
                )?));
            }
            Ok(Box::new(codec::NullSink::new(16_000)))
        }),
        heartbeat: Duration::from_secs(5),
        api_everywhere: true,
        platform_runtime: opts.platform_runtime.clone(),
        progress: Box::new(move |what, done, of| {
            if verbose {
                eprint!("\rstarting {what}: {done}/{of}   ");
                if done == of {
                    eprintln!();
                }
            }
        }),
    })
    .await?;
    let connected = district.wait_connected(Duration::from_secs(120)).await;
    let startup_s = started.elapsed().as_secs_f64();
    say(format!(
        "{connected}/{} terminals connected after {startup_s:.1} s; district API at {}",
        district.terminals.len(),
        district.district_api()
    ));

    // 1. The district-wide emergency alert, through the district's API.
    let api = district.district_api();
    let county = district.district.relay.scope[0].to_string();
    let fields = [
        ("areas", county),
        ("class", "emergency".to_string()),
        ("severity", "1".to_string()),
        ("event_type", "11B06".to_string()),
        ("title", "防汛紧急转移通知".to_string()),
        ("valid_minutes", "30".to_string()),
    ];
    let requested = certs::time::unix_now_ms();
    let alert = issue_via_api(&api, &district.token, &opts.alert, &fields).await?;
    let accepted = certs::time::unix_now_ms();
    say(format!(
        "alert {alert} accepted by the district API in {} ms",
        accepted - requested
    ));
    let alert_id: protocol::BroadcastId = alert.parse()?;
    watch(&district, alert_id, "alert", verbose).await;

    // 2. A notice from one village, to that village only.
    let village = &district.villages[district.villages.len() / 2];
    let village_api = format!(
        "http://{}",
        village.platform.http_addr.context("village API")?
    );
    let nfields = [
        ("areas", village.area.to_string()),
        ("class", "daily".to_string()),
        ("title", "村民大会通知".to_string()),
        ("valid_minutes", "10".to_string()),
    ];
    let notice = issue_via_api(&village_api, &district.token, &opts.notice, &nfields).await?;
    say(format!(
        "village notice {notice} issued by {} for {}",
        village.platform.name, village.area
    ));
    let notice_id: protocol::BroadcastId = notice.parse()?;
    let vi = district.villages.len() / 2;
    let in_village: Vec<&LocalTerminal> = district
        .terminals
        .iter()
        .filter(|t| t.village == vi)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline
        && !in_village.iter().all(|t| {
            t.handle()
                .snapshot()
                .records
                .get(&notice_id)
                .is_some_and(|r| r.finished)
        })
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 3. Summary from the terminals themselves.
    let mut activation = Vec::new();
    let mut frames = FrameStats {
        played_min: u64::MAX,
        ..Default::default()
    };
    let (mut played_full, mut refused, mut notice_played, mut notice_outside) = (0, 0, 0, 0);
    for t in &district.terminals {
        let s = t.handle().snapshot();
        if let Some(r) = s.records.get(&alert_id) {
            if let Some(first) = r.first_sample_ms {
                activation.push(first - accepted);
            }
            played_full += full(r, 10) as usize;
            frames.total = r.total_frames;
            frames.played_min = frames.played_min.min(r.frames_played);
            frames.concealed_max = frames.concealed_max.max(r.frames_concealed);
            frames.recovered_max = frames.recovered_max.max(r.frames_recovered);
            frames.unfinished += (!r.finished) as usize;
        }
        refused += s.refusals.iter().map(|(_, n)| n).sum::<u64>();
        let got_notice = s.records.get(&notice_id);
        if t.village == vi {
            notice_played += got_notice.is_some_and(|r| r.finished && r.frames_played > 0) as usize;
        } else if got_notice.is_some() {
            notice_outside += 1;
        }
    }
    let mut district = district;
    for t in district.terminals.iter_mut().take(1) {
        t.stop().await;
    }
    Ok(Summary {
        terminals: district.terminals.len(),
        connected,
        played_full,
        refused,
        activation_ms: percentiles(activation),
        notice_played,
        notice_village_terminals: in_village_count(&district, vi),
        notice_outside_village: notice_outside,
        alert_frames: frames,
        alert_id: alert,
        notice_id: notice,
        startup_s,
    })
}

fn in_village_count(d: &LocalDistrict, vi: usize) -> usize {
    d.terminals.iter().filter(|t| t.village == vi).count()
}

/// Prints coverage once a second (from the district's receipts) until every
/// terminal finished or a minute passed.
async fn watch(d: &LocalDistrict, id: protocol::BroadcastId, what: &str, verbose: bool) {
    let total = d.terminals.len() as u32;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let c = d.district.relay.book().coverage(id);
        if verbose {
            eprintln!(
                "{what}: {} / {total} playing, {} finished, {} refused",
                c.playing, c.finished, c.refused
            );
        }
        let done = d.terminals.iter().all(|t| {
            t.handle()
                .snapshot()
                .records
                .get(&id)
                .is_some_and(|r| r.finished)
        });
        if done || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Sends a remote command through a platform's API (JSON body as the API takes it).
pub async fn command_via_api(
    api: &str,
    token: &str,
    body: serde_json::Value,
) -> anyhow::Result<String> {
    let resp = http()
        .post(format!("{api}/api/commands"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await?;
    anyhow::ensure!(
        status.is_success(),
        "command refused ({status}): {}",
        v["error"]
    );
    v["command_id"]
        .as_str()
        .map(str::to_string)
        .context("no command id")
}
