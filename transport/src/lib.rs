//! QUIC links between nodes of the broadcast network.
//!
//! Every endpoint authenticates its peer with the EBS chain (`certs::tls`):
//! a platform accepts lower platforms and terminals; a node dialling up
//! accepts only a platform responsible for its area. Messages travel as
//! frames (`protocol::frame`) on QUIC streams: one bidirectional control
//! stream per connection, one unidirectional stream per broadcast.

pub mod admission;
pub mod clock;
pub mod config;
pub mod guard;
pub mod liveness;
pub mod uplink;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use certs::tls::{self, ChainVerifier, PeerPolicy};
use certs::{AreaCode, Certificate, Identity, RevocationState, TrustAnchor};
use protocol::frame::{FrameReader, RawFrame};
use protocol::Message;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, RecvStream, SendStream, TransportConfig, VarInt};
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LinkError {
    #[error("TLS setup: {0}")]
    Tls(#[from] certs::tls::TlsError),
    #[error("QUIC setup: {0}")]
    Setup(String),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to {addr}: {detail}")]
    Connect { addr: SocketAddr, detail: String },
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("stream write: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream read: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("peer sent a bad frame: {0}")]
    Frame(#[from] certs::encoding::DecodeError),
    #[error("peer identity: {0}")]
    Peer(String),
}

impl LinkError {
    /// The peer broke the framing (garbage, oversized lengths): an attack
    /// or a broken peer, unlike a link that merely went away.
    pub fn framing(&self) -> Option<&certs::encoding::DecodeError> {
        match self {
            LinkError::Frame(d) => Some(d),
            _ => None,
        }
    }
}

/// Who is at the dialling end of a link: its keep-alive and idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// A lower platform: a few dozen links per district, so a dead parent
    /// is noticed within seconds whether or not anything plays.
    Platform,
    /// A terminal: hundreds to thousands per relay, so each costs its
    /// relay a packet exchange every `TERMINAL_KEEP_ALIVE` at most while
    /// nothing plays (carrier NAT bindings need one every 20–30 s). While
    /// a broadcast flows, a dead link is noticed from the audio stopping
    /// (`liveness`), not from this timeout.
    Terminal,
}

/// A platform link's keep-alive and idle timeout.
pub const PLATFORM_KEEP_ALIVE: Duration = Duration::from_secs(2);
pub const PLATFORM_IDLE_TIMEOUT: Duration = Duration::from_secs(6);
/// A terminal link's: the clock's slowest probes come this often too, and
/// any packet received restarts the keep-alive, so an idle terminal's link
/// costs one probe exchange per interval.
pub const TERMINAL_KEEP_ALIVE: Duration = Duration::from_secs(25);
pub const TERMINAL_IDLE_TIMEOUT: Duration = Duration::from_secs(40);

impl LinkKind {
    fn keep_alive(self) -> Duration {
        match self {
            LinkKind::Platform => PLATFORM_KEEP_ALIVE,
            LinkKind::Terminal => TERMINAL_KEEP_ALIVE,
        }
    }

    pub fn idle_timeout(self) -> Duration {
        match self {
            LinkKind::Platform => PLATFORM_IDLE_TIMEOUT,
            LinkKind::Terminal => TERMINAL_IDLE_TIMEOUT,
        }
    }
}

/// Limits shared by both ends. What a peer can make a node buffer is
/// bounded by these windows, and each connection's memory with them: a
/// child sends only small control frames up, a broadcast stream carries
/// 24 kbit/s.
fn base_config() -> TransportConfig {
    let mut t = TransportConfig::default();
    t.stream_receive_window(VarInt::from_u32(256 * 1024));
    t.receive_window(VarInt::from_u32(1024 * 1024));
    t.send_window(1024 * 1024);
    t.datagram_receive_buffer_size(Some(16 * 1024));
    t.datagram_send_buffer_size(16 * 1024);
    // One datagram per send: a connection's transmit buffer stays one MTU
    // (with segmentation offload it grows to ten: 13 kB more per child, to
    // batch bursts that 24 kbit/s streams never make).
    t.enable_segmentation_offload(false);
    t
}

/// The dialling end's transport: it keeps the link alive.
fn dial_config(kind: LinkKind) -> Arc<TransportConfig> {
    let mut t = base_config();
    // The upstream opens one uni stream per broadcast (a bounded number
    // at once), never a bidirectional one.
    t.max_concurrent_uni_streams(VarInt::from_u32(64));
    t.max_concurrent_bidi_streams(VarInt::from_u32(0));
    t.keep_alive_interval(Some(kind.keep_alive()));
    t.max_idle_timeout(Some(idle(kind.idle_timeout())));
    Arc::new(t)
}

/// The accepting end's: no keep-alive of its own (its children's keep
/// theirs, and each link's idle timeout is the lower of the two ends', so
/// a platform child's 6 s applies to its link).
fn accept_config() -> Arc<TransportConfig> {
    let mut t = base_config();
    // A child opens its control stream and nothing else: every stream a
    // peer may open costs state at this end, for each of thousands.
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.max_concurrent_bidi_streams(VarInt::from_u32(1));
    t.keep_alive_interval(None);
    t.max_idle_timeout(Some(idle(TERMINAL_IDLE_TIMEOUT)));
    Arc::new(t)
}

fn idle(d: Duration) -> quinn::IdleTimeout {
    d.try_into().unwrap_or(VarInt::from_u32(6_000).into())
}

/// What a node needs to build its endpoint.
#[derive(Clone)]
pub struct NodeCrypto {
    pub anchor: TrustAnchor,
    pub revocations: Arc<RwLock<RevocationState>>,
    /// Told of every peer refused in a handshake (a security event).
    pub on_reject: Option<tls::RejectHook>,
}

fn client_config(
    identity: &Identity,
    crypto: &NodeCrypto,
    area: AreaCode,
    kind: LinkKind,
) -> Result<quinn::ClientConfig, LinkError> {
    let verifier = Arc::new(
        ChainVerifier::new(
            crypto.anchor.clone(),
            crypto.revocations.clone(),
            PeerPolicy::upstream_of(area),
        )
        .with_reject_hook(crypto.on_reject.clone()),
    );
    let tls = tls::client_config(identity, verifier)?;
    let quic = QuicClientConfig::try_from(tls).map_err(|e| LinkError::Setup(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(dial_config(kind));
    Ok(config)
}

/// A platform's endpoint: accepts lower platforms and terminals on
/// `socket` (bound by the caller) and dials its parent from it.
pub fn platform_endpoint(
    identity: &Identity,
    crypto: &NodeCrypto,
    socket: std::net::UdpSocket,
) -> Result<Endpoint, LinkError> {
    let verifier = Arc::new(
        ChainVerifier::new(
            crypto.anchor.clone(),
            crypto.revocations.clone(),
            PeerPolicy::downstream(),
        )
        .with_reject_hook(crypto.on_reject.clone()),
    );
    let tls = tls::server_config(identity, verifier)?;
    let quic = QuicServerConfig::try_from(tls).map_err(|e| LinkError::Setup(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    server.transport_config(accept_config());
    let mut endpoint = endpoint_on(socket, Some(server), platform_endpoint_config(identity))?;
    endpoint.set_default_client_config(client_config(
        identity,
        crypto,
        own_area(identity),
        LinkKind::Platform,
    )?);
    Ok(endpoint)
}

/// A terminal's endpoint: dials out only, from `socket` (bound by the
/// caller; port 0 for any).
pub fn client_endpoint(
    identity: &Identity,
    crypto: &NodeCrypto,
    socket: std::net::UdpSocket,
) -> Result<Endpoint, LinkError> {
    let mut endpoint = endpoint_on(socket, None, quinn::EndpointConfig::default())?;
    endpoint.set_default_client_config(client_config(
        identity,
        crypto,
        own_area(identity),
        LinkKind::Terminal,
    )?);
    Ok(endpoint)
}

/// Binds a UDP socket for an endpoint, naming the address when it fails.
pub fn bind_udp(addr: SocketAddr) -> Result<std::net::UdpSocket, LinkError> {
    std::net::UdpSocket::bind(addr).map_err(|source| LinkError::Bind { addr, source })
}

/// A platform's endpoint settings. Its stateless reset key is derived
/// from its identity, so it is the same after a restart: a child whose
/// link the restart (a crash, a reboot) killed is told so by a stateless
/// reset (RFC 9000 §10.3) answering the first packet it sends, and redials
/// at once instead of waiting out its idle timeout (up to 55 s for a
/// terminal). Resets may go out 1,000 a second (quinn's default, 50), so
/// the thousands of children of a restarted relay all hear within seconds.
fn platform_endpoint_config(identity: &Identity) -> quinn::EndpointConfig {
    use ring::hmac;
    let mut config = match identity.key.to_pkcs8_der() {
        Ok(der) => {
            let derive = hmac::Key::new(hmac::HMAC_SHA256, &der);
            let key = hmac::sign(&derive, b"ebs/1 QUIC stateless reset key");
            let mut config = quinn::EndpointConfig::new(Arc::new(hmac::Key::new(
                hmac::HMAC_SHA256,
                key.as_ref(),
            )));
            // The connection ids carry a keyed hash: the restarted endpoint
            // must recognise its predecessor's as its own to answer them.
            let cid = hmac::sign(&derive, b"ebs/1 QUIC connection id key");
            let mut cid_key = [0u8; 8];
            cid_key.copy_from_slice(&cid.as_ref()[..8]);
            let cid_key = u64::from_le_bytes(cid_key);
            config.cid_generator(move || {
                Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
            });
            config
        }
        // A key that cannot be exported: random keys (children then notice
        // a restart at their idle timeout).
        Err(_) => quinn::EndpointConfig::default(),
    };
    config.min_reset_interval(Duration::from_millis(1));
    config
}

fn endpoint_on(
    socket: std::net::UdpSocket,
    server: Option<quinn::ServerConfig>,
    config: quinn::EndpointConfig,
) -> Result<Endpoint, LinkError> {
    let addr = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let runtime = quinn::default_runtime()
        .ok_or_else(|| LinkError::Setup("no async runtime for QUIC".into()))?;
    Endpoint::new(config, server, socket, runtime)
        .map_err(|source| LinkError::Bind { addr, source })
}

/// The area a node's upstream must cover: its own certificate's first scope area.
pub fn own_area(identity: &Identity) -> AreaCode {
    identity
        .cert()
        .scope()
        .first()
        .copied()
        .unwrap_or(AreaCode::NATION)
}

pub async fn connect(endpoint: &Endpoint, addr: SocketAddr) -> Result<Connection, LinkError> {
    let connecting = endpoint
        .connect(addr, tls::SERVER_NAME)
        .map_err(|e| LinkError::Connect {
            addr,
            detail: e.to_string(),
        })?;
    match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(LinkError::Connect {
            addr,
            detail: e.to_string(),
        }),
        Err(_) => Err(LinkError::Connect {
            addr,
            detail: "timed out".into(),
        }),
    }
}

/// The peer's verified EBS chain (the TLS handshake checked it).
pub fn peer_chain(conn: &Connection) -> Result<Vec<Certificate>, LinkError> {
    let any = conn
        .peer_identity()
        .ok_or_else(|| LinkError::Peer("no peer certificate".into()))?;
    let certs = any
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .map_err(|_| LinkError::Peer("unexpected peer identity type".into()))?;
    tls::peer_chain(&certs).map_err(|e| LinkError::Peer(e.to_string()))
}

pub async fn send(stream: &mut SendStream, message: &Message) -> Result<(), LinkError> {
    stream.write_all(&message.encode()).await?;
    Ok(())
}

/// Reads frames from a stream, bounded by the protocol's limits. It holds
/// no read buffer of its own: QUIC's chunks go straight to the frame
/// reader, which keeps only a frame not yet complete (a relay has one of
/// these per child and per broadcast, so an idle one must cost nothing).
pub struct FrameStream {
    recv: RecvStream,
    reader: FrameReader,
    ready: std::collections::VecDeque<RawFrame>,
}

/// Most bytes taken from QUIC at once.
const READ_CHUNK: usize = 16 * 1024;

impl FrameStream {
    pub fn new(recv: RecvStream) -> Self {
        FrameStream {
            recv,
            reader: FrameReader::new(),
            ready: Default::default(),
        }
    }

    /// The next frame; None when the peer finished the stream. A framing
    /// error is returned once and the stream is then unusable.
    pub async fn next(&mut self) -> Result<Option<RawFrame>, LinkError> {
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Ok(Some(f));
            }
            match self.recv.read_chunk(READ_CHUNK, true).await? {
                // A frame cut off by the end of the stream is a framing
                // error, counted like any other.
                None if self.reader.buffered() > 0 => {
                    return Err(LinkError::Frame(certs::encoding::DecodeError::Truncated(
                        "frame cut off by the end of its stream",
                    )))
                }
                None => return Ok(None),
                Some(chunk) => self.ready.extend(self.reader.push(&chunk.bytes)?),
            }
        }
    }

    /// Stops reading: tells the peer to stop sending.
    pub fn stop(&mut self) {
        let _ = self.recv.stop(VarInt::from_u32(1));
    }
}

/// Aborts a task when dropped.
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    pub fn new(task: tokio::task::JoinHandle<()>) -> Self {
        AbortOnDrop(task)
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Tries `preferred` upstreams every 3 s in the background (a dead one costs
/// a handshake timeout, which must not stall the session using the current
/// link) and notifies `found` when one answers. Stops when the returned
/// guard is dropped; None when there is nothing to probe.
pub fn probe_preferred(
    endpoint: &Endpoint,
    preferred: &[SocketAddr],
    found: &Arc<tokio::sync::Notify>,
) -> Option<AbortOnDrop> {
    if preferred.is_empty() {
        return None;
    }
    let (endpoint, preferred, found) = (endpoint.clone(), preferred.to_vec(), found.clone());
    Some(AbortOnDrop(tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(3));
        every.tick().await;
        loop {
            every.tick().await;
            for addr in &preferred {
                if let Ok(better) = connect(&endpoint, *addr).await {
                    better.close(0u32.into(), b"probe");
                    found.notify_one();
                    return;
                }
            }
        }
    })))
}
