//! The playout-control platform: one program for district, town and
//! village (the certificate decides). A library with a thin `main`, so tests
//! start real platforms in-process on port 0.

pub mod api;
pub mod book;
pub mod config;
pub mod demo;
pub mod downstream;
pub mod expiry;
pub mod issue;
pub mod metrics;
pub mod relay;
pub mod revoke;
pub mod store;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use certs::{Bundle, RevocationState};
use tokio::task::JoinHandle;
use tracing::info;

pub use relay::Relay;

/// Security events are kept this long in the store (the audit trail of
/// attacks); older ones are pruned with the ended broadcasts.
pub const EVENT_RETENTION_MS: i64 = 400 * 86_400_000;

/// Everything a platform starts with.
pub struct PlatformOptions {
    pub name: String,
    pub bundle: Bundle,
    /// QUIC address for children (port 0: any).
    pub listen: SocketAddr,
    /// HTTP API address; None for no API.
    pub http: Option<SocketAddr>,
    /// Parent platforms in failover order; empty at the district.
    pub parents: Vec<SocketAddr>,
    pub store: PathBuf,
    /// Bearer token for changes through the API.
    pub api_token: String,
    pub ingest: codec::IngestConfig,
    /// Accepted → first frame presented (ms); see `issue::DEFAULT_LEAD_MS`.
    pub lead_ms: i64,
    /// Warn this long before any certificate of the chain expires.
    pub expiry_warning: std::time::Duration,
}

/// A running platform.
pub struct PlatformHandle {
    pub name: String,
    pub quic_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    pub relay: Arc<Relay>,
    /// Taken on kill, so the socket is released (a restart can bind the
    /// same address).
    endpoint: std::sync::Mutex<Option<quinn::Endpoint>>,
    tasks: Vec<JoinHandle<()>>,
}

impl PlatformHandle {
    /// Stops at once, as a crash would: no goodbye to peers.
    pub fn kill(&self) {
        for t in &self.tasks {
            t.abort();
        }
        let endpoint = self
            .endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(e) = endpoint {
            e.close(0u32.into(), b"stopped");
        }
    }
}

impl Drop for PlatformHandle {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn start(opts: PlatformOptions) -> anyhow::Result<PlatformHandle> {
    let store = store::Store::open(&opts.store)
        .with_context(|| format!("opening store {}", opts.store.display()))?;
    let revocations = Arc::new(RwLock::new(RevocationState::new()));
    let (up_tx, up_rx) = tokio::sync::mpsc::channel(8192);
    let ids = issue::IdAllocator::new(
        store.clone(),
        opts.bundle.identity.cert().body().resource_code,
    );
    let relay = Relay::new(
        opts.bundle.identity,
        opts.bundle.anchor.clone(),
        store,
        revocations.clone(),
        up_tx,
    );
    let restored = relay.restore()?;
    // Lists provisioned with the bundle, unless the store has newer ones.
    for list in opts.bundle.revocations {
        let held = relay
            .revocation_numbers()
            .iter()
            .any(|(s, n)| *s == list.signer_serial && *n >= list.number);
        if !held {
            if let Err(e) = relay.apply_revocation(list) {
                tracing::error!("a provisioned revocation list does not apply: {e}");
            }
        }
    }
    // A peer refused in the TLS handshake is a security event like any other.
    let weak = Arc::downgrade(&relay);
    let on_reject: certs::tls::RejectHook = Arc::new(move |e, leaf| {
        if let Some(r) = weak.upgrade() {
            r.refuse(&protocol::Refusal::from_peer(e), None, leaf.unwrap_or(0));
        }
    });
    let crypto = transport::NodeCrypto {
        anchor: opts.bundle.anchor,
        revocations,
        on_reject: Some(on_reject),
    };
    let endpoint = transport::platform_endpoint(&relay.identity, &crypto, opts.listen)?;
    let quic_addr = endpoint.local_addr()?;
    let mut tasks = vec![
        tokio::spawn(downstream::serve(endpoint.clone(), relay.clone())),
        tokio::spawn(upstream::run(
            endpoint.clone(),
            opts.parents,
            relay.clone(),
            up_rx,
        )),
    ];
    let reporter = relay.clone();
    tasks.push(tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            every.tick().await;
            reporter.flush_events();
        }
    }));
    tasks.push(tokio::spawn(expiry::watch(
        relay.clone(),
        opts.expiry_warning,
    )));
    let pruner = relay.clone();
    tasks.push(tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            every.tick().await;
            let n = pruner.prune(relay::now_ms(), 3_600_000);
            pruner.prune_events(relay::now_ms(), EVENT_RETENTION_MS);
            if n > 0 {
                info!(pruned = n, "forgot broadcasts that ended over an hour ago");
            }
        }
    }));
    let mut http_addr = None;
    if let Some(addr) = opts.http {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding HTTP {addr}"))?;
        http_addr = Some(listener.local_addr()?);
        let state = api::ApiState {
            relay: relay.clone(),
            ids,
            token: Arc::new(opts.api_token),
            ingest: opts.ingest,
            name: Arc::new(opts.name.clone()),
            lead_ms: opts.lead_ms,
            expiry_warning: opts.expiry_warning,
        };
        let app = api::router(state);
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }
    info!(name = %opts.name, tier = %relay.tier, %quic_addr, ?http_addr, restored, "platform started");
    Ok(PlatformHandle {
        name: opts.name,
        quic_addr,
        http_addr,
        relay,
        endpoint: std::sync::Mutex::new(Some(endpoint)),
        tasks,
    })
}
