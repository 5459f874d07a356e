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
    pub progress: Box<dyn Fn(&str, usize, usize) + Send + Sync>,
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

const VALIDITY_DAYS: i64 = 30;

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
            };
        let total_platforms = 1 + pki.towns.len() + pki.villages().count();
        let district = crate::start(platform(
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
                crate::start(platform(
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
                    platform: crate::start(platform(name, b, parents, opts.api_everywhere)).await?,
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
    let resp = reqwest::Client::new()
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
    let resp = reqwest::Client::new()
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
