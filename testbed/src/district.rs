//! The whole district on one machine: a fresh PKI, every node's bundle
//! written and read back, every platform and terminal started in-process
//! on loopback with real QUIC, the HTTP APIs listening.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use certs::pki::{DistrictPki, Layout};
use certs::{AreaCode, Bundle};
use platform::PlatformHandle;
use terminal_agent::{Host, Terminal, TerminalConfig, TerminalHandle};

use crate::client::ApiClient;
use crate::node::{platform_config, provision, start_platform};

/// Reports start-up progress: (what, done, of).
pub type ProgressFn = Box<dyn Fn(&str, usize, usize) + Send + Sync>;

/// Changes a platform's configuration before it starts: (name, config).
pub type ConfigureFn = Box<dyn Fn(&str, &mut platform::PlatformConfig) + Send + Sync>;

/// Changes a terminal's configuration before it starts: (terminal index, config).
pub type ConfigureTerminalFn = Box<dyn Fn(usize, &mut TerminalConfig) + Send + Sync>;

/// Where a terminal's audio goes: (terminal index, its folder).
pub type SinkFactory =
    Box<dyn Fn(usize, &Path) -> anyhow::Result<Box<dyn codec::Sink>> + Send + Sync>;

pub struct LocalOptions {
    pub layout: Layout,
    /// Folder for PKI, stores and WAV files.
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
    /// Changes each platform's configuration (by name: `district`,
    /// `town-T`, `village-T-V`) before it starts.
    pub configure: ConfigureFn,
    /// Changes each terminal's configuration (by index) before it starts.
    pub configure_terminal: ConfigureTerminalFn,
}

impl LocalOptions {
    /// `layout` in `dir`, every terminal writing `dir/terminals/NAME/played.wav`,
    /// 500 ms heartbeats, an API on every platform.
    pub fn wav(layout: Layout, dir: &Path) -> Self {
        LocalOptions {
            layout,
            dir: dir.to_path_buf(),
            sink: Box::new(|_, dir| {
                Ok(
                    Box::new(codec::WavSink::create(&dir.join("played.wav"), 16_000)?)
                        as Box<dyn codec::Sink>,
                )
            }),
            heartbeat: Duration::from_millis(500),
            api_everywhere: true,
            progress: Box::new(|_, _, _| {}),
            platform_runtime: None,
            configure: Box::new(|_, _| {}),
            configure_terminal: Box::new(|_, _| {}),
        }
    }

    /// The smallest district in `dir`, every terminal on a null sink, with
    /// the default 30 s heartbeat and an API at the district only: the
    /// settings of a long run (set `layout` for the size).
    pub fn null(dir: &Path) -> Self {
        LocalOptions {
            layout: Layout::ONE_OF_EACH,
            dir: dir.to_path_buf(),
            sink: Box::new(|_, _| {
                Ok(Box::new(codec::NullSink::new(16_000)) as Box<dyn codec::Sink>)
            }),
            heartbeat: Duration::from_secs(30),
            api_everywhere: false,
            progress: Box::new(|_, _, _| {}),
            platform_runtime: None,
            configure: Box::new(|_, _| {}),
            configure_terminal: Box::new(|_, _| {}),
        }
    }
}

pub struct LocalTerminal {
    handle: Option<TerminalHandle>,
    pub config: TerminalConfig,
    pub town: usize,
    pub village: usize,
    pub area: AreaCode,
    pub dir: PathBuf,
}

impl LocalTerminal {
    pub fn handle(&self) -> &TerminalHandle {
        self.handle.as_ref().expect("terminal running")
    }

    /// It played a broadcast titled `title` to its end.
    pub fn played_in_full(&self, title: &str) -> bool {
        self.handle()
            .snapshot()
            .records
            .values()
            .any(|r| r.title == title && r.finished && r.frames_played > 0)
    }

    /// Stops the terminal in order and closes its sink (a WAV file gets
    /// its header).
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
    /// Its platform's name (`village-T-V`).
    pub name: String,
}

pub struct LocalDistrict {
    pub dir: PathBuf,
    /// The test accounts every platform with an API has.
    pub creds: crate::Credentials,
    pub district: PlatformHandle,
    pub towns: Vec<PlatformHandle>,
    pub villages: Vec<LocalVillage>,
    pub terminals: Vec<LocalTerminal>,
    pub root: certs::Certificate,
    /// The playout clock and store thread every terminal here shares.
    pub host: Host,
    /// Each platform's configuration, by name, to restart it as it was.
    configs: std::collections::HashMap<String, platform::PlatformConfig>,
}

const VALIDITY_DAYS: i64 = 365;

impl LocalDistrict {
    pub async fn start(opts: LocalOptions) -> anyhow::Result<Self> {
        let now = certs::time::unix_now();
        let pki =
            DistrictPki::generate(opts.layout, (now - 3600, now + VALIDITY_DAYS * 86_400), now)
                .context("generating the PKI")?;
        let dir = opts.dir.clone();
        let pki_dir = dir.join("pki");
        std::fs::create_dir_all(&pki_dir)?;
        std::fs::write(pki_dir.join("root.pem"), pki.root.cert().to_pem())?;
        let creds = crate::Credentials::generate()?;
        let host = Host::new().context("starting the terminals' host threads")?;
        let total_platforms = 1 + pki.towns.len() + pki.villages().count();
        let runtime = opts.platform_runtime.clone();
        let configs = std::sync::Mutex::new(std::collections::HashMap::new());
        let areas = crate::places::district_areas(&pki);
        let start = |name: String, parents: Vec<SocketAddr>, bundle: Bundle, http: bool| {
            let runtime = runtime.clone();
            let mut config = platform_config(&dir, &name, parents);
            config.areas = areas.clone();
            (opts.configure)(&name, &mut config);
            configs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.clone(), config.clone());
            let creds = creds.clone();
            async move {
                let run = async move { start_platform(config, bundle, &creds, http).await };
                match runtime {
                    Some(rt) => rt.spawn(run).await.map_err(anyhow::Error::from)?,
                    None => run.await,
                }
            }
        };
        let district = start(
            "district".into(),
            vec![],
            provision(&pki_dir, &pki.root, &pki.district, "district", now)?,
            true,
        )
        .await?;
        (opts.progress)("platforms", 1, total_platforms);
        let mut towns = Vec::new();
        for (t, town) in pki.towns.iter().enumerate() {
            let name = format!("town-{t}");
            let b = provision(&pki_dir, &pki.root, &town.identity, &name, now)?;
            towns.push(start(name, vec![district.quic_addr], b, opts.api_everywhere).await?);
            (opts.progress)("platforms", 1 + towns.len(), total_platforms);
        }
        let mut villages = Vec::new();
        for (t, town) in pki.towns.iter().enumerate() {
            for (v, village) in town.villages.iter().enumerate() {
                let name = format!("village-{t}-{v}");
                let b = provision(&pki_dir, &pki.root, &village.identity, &name, now)?;
                let parents = vec![towns[t].quic_addr, district.quic_addr];
                villages.push(LocalVillage {
                    platform: start(name.clone(), parents, b, opts.api_everywhere).await?,
                    area: village.area,
                    town: t,
                    name,
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
                    let tdir = dir.join("terminals").join(&name);
                    std::fs::create_dir_all(&tdir)?;
                    let bundle = provision(&pki_dir, &pki.root, term, &name, now)?;
                    let mut config = TerminalConfig::new(
                        pki_dir.join(format!("{name}.bundle")),
                        vec![
                            villages[vi].platform.quic_addr,
                            towns[t].quic_addr,
                            district.quic_addr,
                        ],
                        tdir.join("store"),
                    );
                    config.heartbeat_ms = opts.heartbeat.as_millis() as u64;
                    (opts.configure_terminal)(terminals.len(), &mut config);
                    let sink = (opts.sink)(terminals.len(), &tdir)?;
                    let handle = Terminal::new(config.clone(), bundle)?
                        .with_sink(sink)
                        .start(&host, None)
                        .await?;
                    terminals.push(LocalTerminal {
                        handle: Some(handle),
                        config,
                        town: t,
                        village: vi,
                        area: village.area,
                        dir: tdir,
                    });
                    if terminals.len() % 25 == 0 || terminals.len() == total_terminals {
                        (opts.progress)("terminals", terminals.len(), total_terminals);
                    }
                }
                vi += 1;
            }
        }
        Ok(LocalDistrict {
            dir,
            creds,
            district,
            towns,
            villages,
            terminals,
            root: pki.root.cert().clone(),
            host,
            configs: configs.into_inner().unwrap_or_else(|p| p.into_inner()),
        })
    }

    /// Stops town `t` at once, as a crash would; `restart_town` brings it
    /// back.
    pub fn kill_town(&self, t: usize) {
        self.towns[t].kill();
    }

    /// Restarts town `t` on its store and addresses, as after a crash
    /// (stopped at once: no goodbye, nothing flushed beyond what it had).
    pub async fn restart_town(&mut self, t: usize) -> anyhow::Result<()> {
        let old = self.towns.remove(t);
        let p = self.restart_platform(old, &format!("town-{t}")).await?;
        self.towns.insert(t, p);
        Ok(())
    }

    /// Restarts village `v` on its store and addresses, as after a crash.
    pub async fn restart_village(&mut self, v: usize) -> anyhow::Result<()> {
        let old = self.villages.remove(v);
        let platform = self.restart_platform(old.platform, &old.name).await?;
        self.villages.insert(
            v,
            LocalVillage {
                platform,
                area: old.area,
                town: old.town,
                name: old.name,
            },
        );
        Ok(())
    }

    async fn restart_platform(
        &self,
        old: PlatformHandle,
        name: &str,
    ) -> anyhow::Result<PlatformHandle> {
        let (quic, http, gateway) = (old.quic_addr, old.http_addr, old.gateway_addr);
        old.kill();
        drop(old);
        let config = self
            .configs
            .get(name)
            .cloned()
            .with_context(|| format!("no platform {name}"))?;
        let now = certs::time::unix_now();
        let mut last = anyhow::anyhow!("{name} did not restart");
        // The sockets and the store's lock go with the old tasks: retry a while.
        for _ in 0..100 {
            let bundle =
                Bundle::read_file(&self.dir.join("pki").join(format!("{name}.bundle")), now)?;
            let listeners = async {
                Ok::<_, anyhow::Error>(platform::Listeners {
                    quic: transport::bind_udp(quic)?,
                    http: match http {
                        Some(a) => Some(tokio::net::TcpListener::bind(a).await?),
                        None => None,
                    },
                    gateway: match gateway {
                        Some(a) => Some(tokio::net::TcpListener::bind(a).await?),
                        None => None,
                    },
                })
            };
            match listeners.await {
                Ok(l) => {
                    let creds = self.creds.clone();
                    let mut p = platform::Platform::new(config.clone(), bundle)?;
                    if http.is_some() {
                        p = p.with_accounts(Box::new(move |a| creds.provision(a)));
                    }
                    match p.start(l).await {
                        Ok(p) => return Ok(p),
                        Err(e) => last = e,
                    }
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last)
    }

    /// Waits until every terminal is connected upstream; how many are.
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

    /// Stops every terminal in order (sinks closed, WAV headers written);
    /// each one's folder, where its sink wrote.
    pub async fn stop_terminals(&mut self) -> Vec<PathBuf> {
        let mut dirs = Vec::with_capacity(self.terminals.len());
        for t in &mut self.terminals {
            t.stop().await;
            dirs.push(t.dir.clone());
        }
        dirs
    }

    /// Waits until every terminal's play record of `id` satisfies `done`;
    /// false if `timeout` passes first.
    pub async fn all_terminals(
        &self,
        id: protocol::BroadcastId,
        timeout: Duration,
        done: impl Fn(&terminal_agent::PlayRecord) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let all = self
                .terminals
                .iter()
                .all(|t| t.handle().snapshot().records.get(&id).is_some_and(&done));
            if all {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every terminal played `id` to its end.
    pub async fn all_finished(&self, id: protocol::BroadcastId, timeout: Duration) -> bool {
        self.all_terminals(id, timeout, |r| r.finished).await
    }

    /// Restarts terminal `i` on the same bundle file and store, as after a
    /// power cut: the old one stops first and lets go of its store.
    pub async fn restart_terminal(
        &mut self,
        i: usize,
        sink: Box<dyn codec::Sink>,
    ) -> anyhow::Result<()> {
        let t = &mut self.terminals[i];
        if let Some(old) = t.handle.take() {
            old.shutdown().await;
        }
        t.handle = Some(
            Terminal::load(t.config.clone())?
                .with_sink(sink)
                .start(&self.host, None)
                .await?,
        );
        Ok(())
    }

    /// The district's API.
    pub fn district_api(&self) -> ApiClient {
        ApiClient::of(&self.district, &self.creds).expect("the district has an API")
    }

    /// A platform's API.
    pub fn api(&self, p: &PlatformHandle) -> ApiClient {
        ApiClient::of(p, &self.creds).expect("the platform has an API")
    }
}
