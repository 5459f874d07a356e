//! The terminal agent: dials out to its upstream platforms in failover
//! order, verifies every header and segment before anything reaches the
//! loudspeaker, arbitrates by priority, plays, and reports signed receipts
//! and status. A library with a thin `main`, so tests and the demo run many
//! terminals in one process.
//!
//! Shape: a sans-IO [`core::TerminalCore`] owned by one task (the driver);
//! the link (`transport::uplink`) feeds it frames; the process's [`Host`]
//! plays its audio on the playout clock's thread and writes its journal on
//! the store thread.

pub mod cli;
pub mod config;
pub mod core;
mod driver;
pub mod host;
pub mod journal;
mod link;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use certs::{Bundle, RevocationList, RevocationState};
use protocol::{BroadcastId, Refusal, RefusalReason};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::info;
use transport::uplink::UplinkState;

pub use crate::config::TerminalConfig;
pub use crate::core::{CoreConfig, CoreSnapshot, PlayRecord};
use crate::driver::{Driver, Input};
pub use crate::host::Host;
use crate::host::{PlayerMeter, StoreHandle};
use crate::journal::TerminalStore;

/// Unix µs from the system clock (the terminal itself plays on the tree's
/// clock: `transport::clock::TreeClock`).
pub fn now_us() -> i64 {
    transport::clock::system_now_us()
}

/// What the terminal has done, for its status and for tests.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub connected_to: Option<SocketAddr>,
    pub records: std::collections::HashMap<BroadcastId, PlayRecord>,
    pub refusals: Vec<(RefusalReason, u64)>,
    pub samples_played: u64,
    pub playing: Option<BroadcastId>,
    pub volume: u8,
    pub muted: bool,
    /// Upstream sessions opened so far (a migration is not a new session).
    pub sessions: u32,
    /// (signer, number) of the revocation lists in force.
    pub revocation_numbers: Vec<(u64, u64)>,
    /// Upstreams dropped for sending what fails verification.
    pub hostile_upstreams: u32,
    /// What the terminal knows of the tree's time.
    pub clock: transport::clock::Estimate,
}

/// A terminal ready to start: its configuration, its provisioning and,
/// optionally, a sink other than the one configured.
pub struct Terminal {
    config: TerminalConfig,
    bundle: Bundle,
    sink: Option<Box<dyn codec::Sink>>,
}

impl Terminal {
    /// Checks `config` and reads its bundle.
    pub fn load(config: TerminalConfig) -> anyhow::Result<Self> {
        config.check()?;
        anyhow::ensure!(
            !config.bundle.as_os_str().is_empty(),
            "bundle: no provisioning bundle given"
        );
        let bundle = Bundle::read_file(&config.bundle, certs::time::unix_now())
            .with_context(|| format!("loading bundle {}", config.bundle.display()))?;
        Ok(Terminal {
            config,
            bundle,
            sink: None,
        })
    }

    /// A terminal provisioned in memory (tests): `config`'s bundle file is
    /// not read.
    pub fn new(config: TerminalConfig, bundle: Bundle) -> anyhow::Result<Self> {
        config.check()?;
        Ok(Terminal {
            config,
            bundle,
            sink: None,
        })
    }

    /// Plays into `sink` instead of the configured one.
    pub fn with_sink(mut self, sink: Box<dyn codec::Sink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Starts the terminal on `host`, dialling from `socket` (None: a new
    /// socket on any port).
    pub async fn start(
        self,
        host: &Host,
        socket: Option<std::net::UdpSocket>,
    ) -> anyhow::Result<TerminalHandle> {
        let Terminal {
            config,
            bundle,
            sink,
        } = self;
        let sink = match sink {
            Some(s) => s,
            None => codec::open_sink(&config.sink, 16_000)
                .with_context(|| format!("sink: cannot open {:?}", config.sink))?,
        };
        let path = config.store.clone();
        let (store, loaded) = tokio::task::spawn_blocking(move || {
            let store = TerminalStore::open(&path)?;
            let loaded = store.load()?;
            Ok::<_, sled::Error>((store, loaded))
        })
        .await?
        .with_context(|| format!("store: cannot open {}", config.store.display()))?;

        let (inputs_tx, inputs_rx) = mpsc::channel(1024);
        // One revocation state for the message verifier and the TLS
        // verifier; an upstream refused in a handshake is a security event.
        let revocations = Arc::new(RwLock::new(RevocationState::new()));
        let hook_tx = inputs_tx.clone();
        let on_reject: certs::tls::RejectHook = Arc::new(move |e, leaf| {
            let input = Input::Refusal {
                refusal: Refusal::from_peer(e),
                offender: leaf.unwrap_or(0),
            };
            if hook_tx.try_send(input).is_err() {
                tracing::warn!("a refused handshake could not be counted: the terminal is busy");
            }
        });
        let crypto = transport::NodeCrypto {
            anchor: bundle.anchor.clone(),
            revocations: revocations.clone(),
            on_reject: Some(on_reject),
        };
        let socket = match socket {
            Some(s) => s,
            None => transport::bind_udp(match config.upstreams.first() {
                Some(SocketAddr::V6(_)) => "[::]:0".parse()?,
                _ => "0.0.0.0:0".parse()?,
            })?,
        };
        let endpoint = transport::client_endpoint(&bundle.identity, &crypto, socket)?;
        let serial = bundle.identity.cert().serial();
        let area = bundle.identity.cert().scope().first().copied();
        let core_config = CoreConfig {
            playout: codec::PlayoutConfig {
                delay_us: config.playout_delay_ms as i64 * 1000,
                adapt_max_us: config.live_adapt_max_ms as i64 * 1000,
                ..Default::default()
            },
            heartbeat_us: config.heartbeat_ms as i64 * 1000,
            emergency_min_volume: config.emergency_min_volume,
            programme_cache_bytes: config.programme_cache_mb as usize * (1 << 20),
            ..Default::default()
        };
        let software = core_config.software.clone();
        // Until the first answer from an upstream, the tree's time is the
        // terminal's own.
        let clock = transport::clock::TreeClock::follower(config.local_clock());
        let now = clock.now();
        let mut core = core::TerminalCore::new(
            bundle.identity,
            bundle.anchor,
            revocations,
            loaded.journal,
            core_config,
            now,
        )?;
        // Lists in force before the restart apply before the first
        // handshake; then those provisioned with the bundle, unless the
        // store has newer ones.
        for body in loaded.revocations {
            match RevocationList::decode(&body) {
                Ok(list) => {
                    if let Err(e) = core.apply_revocation(list, false, now) {
                        tracing::error!("a stored revocation list no longer applies: {e}");
                    }
                }
                Err(e) => tracing::error!("a stored revocation list is unreadable: {e}"),
            }
        }
        for list in bundle.revocations {
            if !core.holds_revocation(list.signer_serial, list.number) {
                if let Err(e) = core.apply_revocation(list, true, now) {
                    tracing::error!("a provisioned revocation list does not apply: {e}");
                }
            }
        }
        // The schedule and quiet hours sent before the restart: the
        // terminal keeps them with no link at all.
        core.restore_ahead(loaded.ahead, now);

        let store = host.store(store);
        let player = host.player(sink, clock.clone());
        let meter = player.meter();
        let (up_tx, up_rx) = mpsc::channel(1024);
        let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(core.snapshot()));
        let (uplink_tx, uplink_rx) = watch::channel(UplinkState::default());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let stopping = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let driver = Driver {
            core,
            inputs: inputs_rx,
            player,
            store: store.clone(),
            up: up_tx,
            snapshot: snapshot_tx,
            fault_epoch: 0,
            clock: clock.clone(),
        };
        let link = link::TerminalLink {
            serial,
            clock: clock.clone(),
            software,
            inputs: inputs_tx,
            up: up_rx,
        };
        let tasks = vec![
            tokio::spawn(driver.run(stopping(shutdown_rx.clone()))),
            tokio::spawn(transport::uplink::run(
                endpoint.clone(),
                config.upstreams.clone(),
                link,
                clock.clone(),
                uplink_tx,
                std::time::Duration::from_millis(100),
                stopping(shutdown_rx),
            )),
        ];
        info!(
            serial = format!("{serial:016x}"),
            area = ?area,
            "terminal started"
        );
        Ok(TerminalHandle {
            serial,
            clock,
            core: snapshot_rx,
            uplink: uplink_rx,
            meter,
            store,
            shutdown: shutdown_tx,
            tasks,
            endpoint,
        })
    }
}

/// A running terminal.
pub struct TerminalHandle {
    pub serial: u64,
    clock: Arc<transport::clock::TreeClock>,
    core: watch::Receiver<Arc<CoreSnapshot>>,
    uplink: watch::Receiver<UplinkState>,
    meter: PlayerMeter,
    store: StoreHandle,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    endpoint: quinn::Endpoint,
}

impl TerminalHandle {
    /// What the terminal has done (its core's view is at most 50 ms old).
    pub fn snapshot(&self) -> Snapshot {
        let core = self.core.borrow().clone();
        let link = self.uplink.borrow().clone();
        Snapshot {
            connected_to: link.connected_to,
            records: core.records.clone(),
            refusals: core.refusals.clone(),
            samples_played: self.meter.samples_played(),
            playing: core.playing,
            volume: core.volume,
            muted: core.muted,
            sessions: link.sessions,
            revocation_numbers: core.revocation_numbers.clone(),
            hostile_upstreams: link.hostile,
            clock: self.clock.estimate(),
        }
    }

    /// The clock the terminal plays on (the tree's time as it measured it).
    pub fn tree_clock(&self) -> &Arc<transport::clock::TreeClock> {
        &self.clock
    }

    /// Moves to a new local UDP port, as a 4G re-attach gives the terminal a
    /// new address: the QUIC connection migrates, nothing reconnects.
    pub fn rebind(&self) -> std::io::Result<()> {
        let local = self.endpoint.local_addr()?;
        let socket = std::net::UdpSocket::bind(SocketAddr::new(local.ip(), 0))?;
        self.endpoint.rebind(socket)
    }

    /// Stops at once, as a crash or power loss would: nothing more is
    /// verified, played or reported.
    pub fn kill(&self) {
        for t in &self.tasks {
            t.abort();
        }
        self.endpoint.close(0u32.into(), b"stopped");
    }

    /// Stops in order: the link closes, the core hands its last changes to
    /// the store, the sink closes (a WAV file gets its header). When it
    /// returns, the store may be opened again. Also after `kill`.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.endpoint.close(0u32.into(), b"stopped");
        self.store.sync().await;
    }
}
