//! The playout-control platform: one program for district, town and
//! village (the certificate decides). A library with a thin `main`: a test
//! loads a [`Platform`] from its configuration, binds its sockets on port 0
//! and runs it in-process (mini-redis's `server::run`).

pub mod accounts;
pub mod ahead;
pub mod alerts;
pub mod api;
pub mod audit;
pub mod book;
pub mod broadcast;
pub mod cli;
pub mod config;
pub mod console;
pub mod downstream;
pub mod drafts;
pub mod expiry;
pub mod issue;
pub mod lead;
pub mod live;
pub mod live_client;
pub mod members;
pub mod metrics;
pub mod plays;
pub mod policy;
pub mod relay;
pub mod reporter;
pub mod requests;
pub mod revoke;
pub mod scheduling;
pub mod spoken;
pub mod store;
pub mod timetable;
pub mod upload;
pub mod upstream;
pub mod workflow;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use certs::{Bundle, RevocationState};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

pub use config::PlatformConfig;
pub use relay::Relay;

/// Unix ms from the system clock: the platform program's one clock. The
/// library parts (relay, broadcasts, cursors) take the time as a parameter.
pub fn now_ms() -> i64 {
    certs::time::unix_now_ms()
}

/// Security events are kept this long in the store (the audit trail of
/// attacks); older ones are pruned with the ended broadcasts.
pub const EVENT_RETENTION_MS: i64 = 400 * 86_400_000;

/// The sockets a platform serves on, bound by the caller.
pub struct Listeners {
    /// QUIC: lower platforms and terminals dial here; the parent is dialled
    /// from it too.
    pub quic: std::net::UdpSocket,
    /// The HTTP API, if any.
    pub http: Option<tokio::net::TcpListener>,
    /// The GY/T 384 interface (`[gateway] listen`), if any.
    pub gateway: Option<tokio::net::TcpListener>,
}

impl Listeners {
    /// Binds the addresses `config` names.
    pub async fn bind(config: &PlatformConfig) -> anyhow::Result<Self> {
        let quic = transport::bind_udp(config.listen)?;
        let http = match config.http {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("http: cannot bind {addr}"))?,
            ),
            None => None,
        };
        let gateway = match config.gateway.as_ref().and_then(|g| g.listen) {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("gateway.listen: cannot bind {addr}"))?,
            ),
            None => None,
        };
        Ok(Listeners {
            quic,
            http,
            gateway,
        })
    }

    /// QUIC and (if `http`) HTTP on loopback, any port: for tests.
    pub async fn loopback(http: bool) -> anyhow::Result<Self> {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        Ok(Listeners {
            quic: transport::bind_udp(any)?,
            http: match http {
                true => Some(tokio::net::TcpListener::bind(any).await?),
                false => None,
            },
            gateway: None,
        })
    }

    /// Adds a GY/T listener on loopback, any port: for tests.
    pub async fn with_gateway(mut self) -> anyhow::Result<Self> {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        self.gateway = Some(tokio::net::TcpListener::bind(any).await?);
        Ok(self)
    }
}

/// Creates accounts in a platform's store as it starts (before its API
/// answers or a setup code is needed).
pub type AccountSeed = Box<dyn FnOnce(&accounts::Accounts) -> anyhow::Result<()> + Send>;

/// A platform ready to run: its configuration and its provisioning.
pub struct Platform {
    config: PlatformConfig,
    bundle: Bundle,
    seed: Option<AccountSeed>,
}

impl Platform {
    /// Checks `config` and reads its bundle.
    pub fn load(config: PlatformConfig) -> anyhow::Result<Self> {
        config.check()?;
        anyhow::ensure!(
            !config.bundle.as_os_str().is_empty(),
            "bundle: no provisioning bundle given"
        );
        let bundle = Bundle::read_file(&config.bundle, certs::time::unix_now())
            .with_context(|| format!("loading bundle {}", config.bundle.display()))?;
        Ok(Platform {
            config,
            bundle,
            seed: None,
        })
    }

    /// A platform provisioned in memory (tests): `config`'s bundle is not
    /// read.
    pub fn new(config: PlatformConfig, bundle: Bundle) -> anyhow::Result<Self> {
        config.check()?;
        Ok(Platform {
            config,
            bundle,
            seed: None,
        })
    }

    /// Runs `seed` on the accounts store at start, before anything is
    /// served (test districts give every platform the same test accounts).
    pub fn with_accounts(mut self, seed: AccountSeed) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Runs on `listeners` until `shutdown` resolves, then stops in order.
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let handle = self.start(listeners).await?;
        shutdown.await;
        handle.shutdown().await;
        Ok(())
    }

    /// Starts on `listeners` and returns at once with a handle.
    pub async fn start(self, listeners: Listeners) -> anyhow::Result<PlatformHandle> {
        let Platform {
            config,
            bundle,
            seed,
        } = self;
        let store = store::Store::open(&config.store).map_err(|e| store_error(&config, e))?;
        let accounts = accounts::Accounts::open(store.db(), config.accounts.clone())?;
        if let Some(seed) = seed {
            seed(&accounts)?;
        }
        let drafts = drafts::DraftStore::open(store.db())?;
        let revocations = Arc::new(RwLock::new(RevocationState::new()));
        // The top of the tree has no queue up: nothing would read it.
        let (up_tx, up_rx) = tokio::sync::mpsc::channel(8192);
        let up_tx = (!config.parents.is_empty()).then_some(up_tx);
        let ids =
            issue::IdAllocator::new(store.clone(), bundle.identity.cert().body().resource_code);
        let relay = Relay::new(
            bundle.identity,
            bundle.anchor.clone(),
            store.clone(),
            revocations.clone(),
            up_tx,
            if config.parents.is_empty() {
                transport::clock::TreeClock::root()
            } else {
                transport::clock::TreeClock::follower(Default::default())
            },
            ahead::Ahead::open(store.db())?,
        );
        let restored = relay.restore(crate::now_ms())?;
        relay.restore_ahead(crate::now_ms())?;
        let sealing = relay.clone();
        let audit = audit::AuditTrail::open(
            store.db(),
            Arc::new(move |m: &[u8]| audit::seal_with(&sealing.identity, m)),
        )?;
        // Lists provisioned with the bundle, unless the store has newer ones.
        for list in bundle.revocations {
            let held = relay
                .revocations
                .numbers()
                .iter()
                .any(|(s, n)| *s == list.signer_serial && *n >= list.number);
            if !held {
                if let Err(e) = relay.apply_revocation(list, crate::now_ms()) {
                    tracing::error!("a provisioned revocation list does not apply: {e}");
                }
            }
        }
        let workflow = Arc::new(workflow::Workflow {
            relay: relay.clone(),
            ids,
            drafts,
            audit,
            accounts,
            policy: config.review.clone(),
            ingest: config.ingest(),
            lead_ms: config.lead_ms,
            live_delay_ms: config.live_playout_delay_ms,
            now: crate::now_ms,
            next_start_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
            voice: config.tts.voice(),
        });
        anyhow::ensure!(
            !(relay.tier == certs::Tier::District && config.review.any_above()),
            "review: approver = \"above\" at the district, which has no tier above"
        );
        // What a crash interrupted between approval and publishing, and
        // requests whose outbox entry it lost.
        let recovered = tokio::task::spawn_blocking({
            let w = workflow.clone();
            move || {
                w.recover_requests()?;
                w.publish_due()
            }
        })
        .await??;
        if recovered > 0 {
            info!(
                recovered,
                "published approved drafts whose publishing a stop had interrupted"
            );
        }
        let setup_code =
            (workflow.accounts.is_empty() && listeners.http.is_some()).then(setup_code);
        if let Some(code) = &setup_code {
            // Printed once: the way to the first admin without a shell on
            // the store (`platform account add` is the other).
            tracing::warn!(
                "no account exists: create the first admin with the one-time setup code {code} \
                 (POST /api/setup, or `platform account add --role admin NAME` while stopped)"
            );
        }
        // A peer refused in the TLS handshake is a security event like any other.
        let weak = Arc::downgrade(&relay);
        let on_reject: certs::tls::RejectHook = Arc::new(move |e, leaf| {
            if let Some(r) = weak.upgrade() {
                r.refuse(
                    &protocol::Refusal::from_peer(e),
                    None,
                    leaf.unwrap_or(0),
                    crate::now_ms(),
                );
            }
        });
        let crypto = transport::NodeCrypto {
            anchor: bundle.anchor,
            revocations,
            on_reject: Some(on_reject),
        };
        let endpoint = transport::platform_endpoint(&relay.identity, &crypto, listeners.quic)?;
        let quic_addr = endpoint.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let stop_signal = shutdown_rx.clone();
        let stopping = move || {
            let mut rx = shutdown_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let mut tasks = vec![
            tokio::spawn(downstream::serve(
                endpoint.clone(),
                relay.clone(),
                config.admission.clone(),
                stopping(),
            )),
            tokio::spawn(upstream::run(
                endpoint.clone(),
                config.parents.clone(),
                relay.clone(),
                up_rx,
                stopping(),
            )),
            tokio::spawn(request_desk(workflow.clone(), stopping())),
            tokio::spawn(housekeeping(
                relay.clone(),
                workflow.clone(),
                config.expiry_warning(),
                stopping(),
            )),
        ];
        let places = Arc::new(console::places::Places::from_config(
            &config.areas,
            &config.sites,
        )?);
        let gateway = match &config.gateway {
            Some(g) => Some(Arc::new(alerts::Gateway::new(
                g,
                g.key()?,
                workflow.clone(),
                places.clone(),
            )?)),
            None => None,
        };
        if let Some(g) = &gateway {
            tasks.push(tokio::spawn(alerts::reports::run(g.clone(), stopping())));
        }
        let mut gateway_addr = None;
        if let (Some(listener), Some(g)) = (listeners.gateway, &gateway) {
            let addr = listener.local_addr()?;
            gateway_addr = Some(addr);
            let tls = if g.plain_http {
                None
            } else {
                let mut served = config.clone();
                served.http = Some(addr);
                api::tls::for_config(&served)?.map(|t| t.config)
            };
            info!(
                "GY/T interface at {}://{addr}/ ({} sources)",
                if tls.is_some() { "https" } else { "http" },
                g.sources.len()
            );
            tasks.push(tokio::spawn(api::serve(
                listener,
                alerts::gyt_http::router(g.clone()),
                tls,
                stopping(),
            )));
        }
        let mut http_addr = None;
        let mut tls_fingerprint = None;
        if let Some(listener) = listeners.http {
            let addr = listener.local_addr()?;
            http_addr = Some(addr);
            let mut served = config.clone();
            served.http = Some(addr);
            let tls = api::tls::for_config(&served)?;
            if let Some(t) = &tls {
                info!(
                    "console and API over HTTPS at https://{addr}/ (certificate {}, SHA-256 fingerprint {})",
                    t.cert_path.display(),
                    t.fingerprint
                );
            } else {
                info!("console and API over plain HTTP on loopback at http://{addr}/");
            }
            tls_fingerprint = tls.as_ref().map(|t| t.fingerprint.clone());
            let state = api::ApiState {
                workflow: workflow.clone(),
                name: Arc::new(config.name.clone()),
                expiry_warning: config.expiry_warning(),
                max_upload_bytes: config.max_upload_mb * 1024 * 1024,
                hashing: Arc::new(tokio::sync::Semaphore::new(api::MAX_HASHING)),
                setup: Arc::new(std::sync::Mutex::new(
                    setup_code
                        .as_deref()
                        .map(|c| accounts::sha256(c.as_bytes())),
                )),
                auth_failures: Default::default(),
                secure_cookies: tls.is_some(),
                places: places.clone(),
                tls_fingerprint: tls_fingerprint.clone(),
                gateway: gateway.clone(),
                stopping: stop_signal.clone(),
            };
            let app = api::router(state);
            tasks.push(tokio::spawn(api::serve(
                listener,
                app,
                tls.map(|t| t.config),
                stopping(),
            )));
        }
        info!(name = %config.name, tier = %relay.tier, %quic_addr, ?http_addr, restored, "platform started");
        Ok(PlatformHandle {
            name: config.name,
            quic_addr,
            http_addr,
            gateway_addr,
            tls_fingerprint,
            relay,
            workflow,
            gateway,
            setup_code,
            shutdown: shutdown_tx,
            endpoint: std::sync::Mutex::new(Some(endpoint)),
            tasks,
        })
    }
}

/// Files publish requests from children and takes the parent's answers,
/// each off the runtime (store flushes, signing).
async fn request_desk(
    workflow: Arc<workflow::Workflow>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let Some((mut incoming, mut answers)) = workflow.relay.requests.take_inputs() else {
        return;
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            Some(r) = incoming.recv() => {
                let w = workflow.clone();
                let serial = r.child_serial;
                match tokio::task::spawn_blocking(move || w.file_request(r)).await {
                    Ok(Ok(outcome)) => {
                        let frame = protocol::Message::RequestOutcome(outcome).encode();
                        workflow.relay.requests.answer(serial, bytes::Bytes::from(frame));
                    }
                    Ok(Err(e)) => tracing::warn!("publish request of {serial:016x} not filed: {e}"),
                    Err(e) => tracing::error!("filing a publish request: {e}"),
                }
            }
            Some(a) = answers.recv() => {
                let w = workflow.clone();
                match tokio::task::spawn_blocking(move || w.apply_outcome(a)).await {
                    Ok(Err(e)) => tracing::warn!("the parent's answer to a request: {e}"),
                    Err(e) => tracing::error!("taking the parent's answer: {e}"),
                    _ => {}
                }
            }
        }
    }
}

/// A one-time setup code: 12 digits in groups of four, easy to type.
fn setup_code() -> String {
    use rand::Rng;
    let n: u64 = rand::rngs::OsRng.gen_range(0..1_000_000_000_000);
    let d = format!("{n:012}");
    format!("{}-{}-{}", &d[0..4], &d[4..8], &d[8..12])
}

fn store_error(config: &PlatformConfig, e: store::StoreError) -> anyhow::Error {
    let held = e.to_string().contains("WouldBlock") || e.to_string().contains("lock");
    if held {
        anyhow::anyhow!(
            "store: {} is in use by a running platform ({e})",
            config.store.display()
        )
    } else {
        anyhow::anyhow!("store: cannot open {}: {e}", config.store.display())
    }
}

/// Opens only the people's part of a stopped platform's store (accounts,
/// the audit trail, sealed with the key of `config`'s bundle) for the
/// command line.
pub fn open_offline(
    config: &PlatformConfig,
) -> anyhow::Result<(accounts::Accounts, audit::AuditTrail)> {
    let identity = Bundle::read_file(&config.bundle, certs::time::unix_now())
        .with_context(|| format!("loading bundle {}", config.bundle.display()))?
        .identity;
    let store = store::Store::open(&config.store).map_err(|e| store_error(config, e))?;
    let accounts = accounts::Accounts::open(store.db(), config.accounts.clone())?;
    let audit = audit::AuditTrail::open(
        store.db(),
        Arc::new(move |m| audit::seal_with(&identity, m)),
    )?;
    Ok((accounts, audit))
}

/// Security events flushed twice a second, due drafts published every
/// second, certificate expiry watched, the audit head sealed, ended
/// broadcasts, old events and expired sessions pruned every minute.
async fn housekeeping(
    relay: Arc<Relay>,
    workflow: Arc<workflow::Workflow>,
    expiry_warning: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut drafts = tokio::time::interval(Duration::from_secs(1));
    let mut events = tokio::time::interval(Duration::from_millis(500));
    let mut expiry = tokio::time::interval(Duration::from_secs(3_600));
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = events.tick() => relay.flush_events(crate::now_ms()),
            _ = drafts.tick() => {
                let w = workflow.clone();
                match tokio::task::spawn_blocking(move || w.publish_due()).await {
                    Ok(Ok(n)) if n > 0 => info!(published = n, "published drafts whose start came"),
                    Ok(Err(e)) => tracing::error!("publishing due drafts: {e}"),
                    _ => {}
                }
            }
            _ = expiry.tick() => expiry::warn(&relay, expiry_warning),
            _ = prune.tick() => {
                let now = crate::now_ms();
                let n = relay.prune(now, 3_600_000);
                relay.prune_events(now, EVENT_RETENTION_MS);
                let w = workflow.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(e) = w.audit.seal_if_due(now) {
                        tracing::error!("sealing the audit trail: {e}");
                    }
                    if let Err(e) = w.accounts.prune_sessions(now) {
                        tracing::error!("pruning sessions: {e}");
                    }
                })
                .await;
                if n > 0 {
                    info!(pruned = n, "forgot broadcasts that ended over an hour ago");
                }
            }
        }
    }
}

/// A running platform.
pub struct PlatformHandle {
    pub name: String,
    pub quic_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    /// The GY/T interface's address, when it listens.
    pub gateway_addr: Option<SocketAddr>,
    /// The console certificate's SHA-256 fingerprint, when over HTTPS.
    pub tls_fingerprint: Option<String>,
    pub relay: Arc<Relay>,
    /// Accounts, drafts, the audit trail and every person's action.
    pub workflow: Arc<workflow::Workflow>,
    /// Alerts from above, when `[gateway]` is configured.
    pub gateway: Option<Arc<alerts::Gateway>>,
    /// The one-time code for the first admin, when there was no account.
    pub setup_code: Option<String>,
    shutdown: watch::Sender<bool>,
    /// Taken on kill, so the socket is released even while this handle
    /// lives on (a restart can bind the same address).
    endpoint: std::sync::Mutex<Option<quinn::Endpoint>>,
    tasks: Vec<JoinHandle<()>>,
}

impl PlatformHandle {
    /// Stops at once, as a crash would: no goodbye to peers. The socket is
    /// released (a restart can bind the same address).
    pub fn kill(&self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(e) = self.take_endpoint() {
            e.close(0u32.into(), b"stopped");
        }
    }

    fn take_endpoint(&self) -> Option<quinn::Endpoint> {
        self.endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Stops in order: every task is told, children and parent hear the
    /// connections close, the API finishes the requests it has, and what
    /// the store holds is flushed. Returns when all of it has ended.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(e) = self.take_endpoint() {
            e.close(0u32.into(), b"shutdown");
        }
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        if let Err(e) = self.workflow.audit.seal(crate::now_ms()) {
            tracing::error!("sealing the audit trail at shutdown: {e}");
        }
        if let Err(e) = self.relay.flush() {
            tracing::error!("flushing the store at shutdown: {e}");
        }
    }
}

impl Drop for PlatformHandle {
    fn drop(&mut self) {
        self.kill();
    }
}
