//! The adversary of the attack suite, over real QUIC.
//!
//! [`RogueRelay`] is a compromised relay (S2): it holds a genuine platform
//! identity (a stolen key), dials up to the district like the platform it
//! impersonates, passes genuine traffic down to whoever connects to it, and
//! can tamper with that traffic or inject anything on new streams and on the
//! control streams. It is the strongest position an attacker can reach: the
//! children authenticate it, so everything it sends reaches their verifiers.
//!
//! [`RogueClient`] dials a platform with any identity and sends what it likes
//! on its control stream (a rogue terminal). [`rogue_server`] answers
//! handshakes with an identity of its own choosing (a fake platform).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use certs::{Identity, RevocationState, TrustAnchor};
use protocol::{Hello, Message, RawFrame, Subscribe};
use tokio::sync::broadcast;
use transport::{FrameStream, NodeCrypto};

/// Rewrites a frame piped from upstream: returns what to send instead
/// (nothing drops it, several inject more on the same stream).
pub type Tamper = Box<dyn FnMut(&RawFrame) -> Vec<Vec<u8>> + Send>;

/// A child connected to the rogue relay.
struct Child {
    conn: quinn::Connection,
    control: tokio::sync::Mutex<quinn::SendStream>,
}

struct State {
    children: RwLock<Vec<Arc<Child>>>,
    /// Frames for the parent, in order (the children's reports, and
    /// whatever the attacker adds).
    up: tokio::sync::mpsc::Sender<Vec<u8>>,
    tamper: Mutex<Option<Tamper>>,
    /// Every broadcast frame piped down so far (for replays).
    recorded: Mutex<Vec<Vec<u8>>>,
    /// Control frames from the parent (commands, revocation lists).
    from_parent: broadcast::Sender<Vec<u8>>,
}

/// A compromised relay. Dropping it closes its endpoint.
pub struct RogueRelay {
    pub addr: SocketAddr,
    endpoint: quinn::Endpoint,
    state: Arc<State>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn crypto(anchor: TrustAnchor) -> NodeCrypto {
    NodeCrypto {
        anchor,
        revocations: Arc::new(RwLock::new(RevocationState::new())),
        on_reject: None,
    }
}

impl RogueRelay {
    /// Starts with a stolen `identity`, dialling `parent` (if any) as the
    /// platform that identity belongs to.
    pub async fn start(
        identity: &Identity,
        anchor: TrustAnchor,
        parent: Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
        let endpoint = transport::platform_endpoint(
            identity,
            &crypto(anchor),
            transport::bind_udp(([127, 0, 0, 1], 0).into())?,
        )?;
        let addr = endpoint.local_addr()?;
        let (up_tx, up_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4096);
        let state = Arc::new(State {
            up: up_tx.clone(),
            children: RwLock::default(),
            tamper: Mutex::default(),
            recorded: Mutex::default(),
            from_parent: broadcast::channel(256).0,
        });
        let mut tasks = vec![tokio::spawn(accept_children(
            endpoint.clone(),
            state.clone(),
            up_tx,
        ))];
        if let Some(parent) = parent {
            let hello = Hello {
                tier: identity.cert().tier(),
                serial: identity.cert().serial(),
                software: "platform 0.1.0".into(),
            };
            tasks.push(tokio::spawn(pipe_from_parent(
                endpoint.clone(),
                parent,
                hello,
                state.clone(),
                up_rx,
            )));
        }
        Ok(RogueRelay {
            addr,
            endpoint,
            state,
            tasks,
        })
    }

    /// Children connected now.
    pub fn children(&self) -> usize {
        self.live_children().len()
    }

    /// Rewrites everything piped from now on.
    pub fn set_tamper(&self, t: Option<Tamper>) {
        *self.state.tamper.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }

    /// Genuine broadcast frames piped so far.
    pub fn recorded(&self) -> Vec<Vec<u8>> {
        self.state
            .recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn live_children(&self) -> Vec<Arc<Child>> {
        self.state
            .children
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|c| c.conn.close_reason().is_none())
            .cloned()
            .collect()
    }

    /// Children that finished their handshake and opened their control
    /// stream; until the first one ever has, waits up to 5 s for it.
    async fn wait_children(&self) -> Vec<Arc<Child>> {
        for _ in 0..50 {
            let ever = !self
                .state
                .children
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty();
            if ever {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        self.live_children()
    }

    /// Sends `frames` to every child on one new stream each, as if they
    /// were a broadcast. Returns how many children took the first frame (a
    /// child may stop the stream once it has refused enough of it).
    pub async fn inject(&self, frames: &[Vec<u8>]) -> usize {
        let mut n = 0;
        for child in self.wait_children().await {
            if let Ok(mut s) = child.conn.open_uni().await {
                for (i, f) in frames.iter().enumerate() {
                    let written = s.write_all(f).await.is_ok();
                    n += (i == 0 && written) as usize;
                    if !written {
                        break;
                    }
                }
                let _ = s.finish();
            }
        }
        n
    }

    /// Sends a frame up to the parent, as if a child had reported it.
    pub async fn report_up(&self, frame: Vec<u8>) -> bool {
        self.state.up.send(frame).await.is_ok()
    }

    /// Sends raw bytes on every child's control stream.
    pub async fn inject_control(&self, bytes: &[u8]) -> usize {
        let mut n = 0;
        for child in self.wait_children().await {
            n += child.control.lock().await.write_all(bytes).await.is_ok() as usize;
        }
        n
    }
}

impl Drop for RogueRelay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.endpoint.close(0u32.into(), b"gone");
    }
}

async fn accept_children(
    endpoint: quinn::Endpoint,
    state: Arc<State>,
    up: tokio::sync::mpsc::Sender<Vec<u8>>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let state = state.clone();
        let up = up.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            let Ok((send, recv)) = conn.accept_bi().await else {
                return;
            };
            let child = Arc::new(Child {
                conn: conn.clone(),
                control: tokio::sync::Mutex::new(send),
            });
            state
                .children
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .push(child.clone());
            // Like an honest relay, it announces the child upward (or its
            // children's reports would be refused above it).
            if let Ok(chain) = transport::peer_chain(&conn) {
                let chain = chain
                    .into_iter()
                    .filter(|c| c.tier() != certs::Tier::Root)
                    .collect();
                let _ = up.try_send(Message::Member(protocol::Member { chain }).encode());
            }
            // Control frames from the parent go down to this child.
            let mut from_parent = state.from_parent.subscribe();
            let down = child.clone();
            tokio::spawn(async move {
                while let Ok(frame) = from_parent.recv().await {
                    if down.control.lock().await.write_all(&frame).await.is_err() {
                        return;
                    }
                }
            });
            // Reports from the child go up unchanged (Hello and Subscribe
            // are this relay's business).
            let mut frames = FrameStream::new(recv);
            while let Ok(Some(raw)) = frames.next().await {
                if !matches!(
                    raw.kind,
                    protocol::FrameKind::Hello | protocol::FrameKind::Subscribe
                ) {
                    let _ = up.try_send(raw.bytes);
                }
            }
        });
    }
}

async fn pipe_from_parent(
    endpoint: quinn::Endpoint,
    parent: SocketAddr,
    hello: Hello,
    state: Arc<State>,
    mut up: tokio::sync::mpsc::Receiver<Vec<u8>>,
) {
    loop {
        let Ok(conn) = transport::connect(&endpoint, parent).await else {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        };
        let Ok((mut send, recv)) = conn.open_bi().await else {
            continue;
        };
        let _ = transport::send(&mut send, &Message::Hello(hello.clone())).await;
        let _ = transport::send(&mut send, &Message::Subscribe(Subscribe::default())).await;
        let mut control = FrameStream::new(recv);
        loop {
            tokio::select! {
                stream = conn.accept_uni() => {
                    let Ok(stream) = stream else { break };
                    tokio::spawn(pipe_stream(FrameStream::new(stream), state.clone()));
                }
                frame = control.next() => match frame {
                    Ok(Some(raw)) => { let _ = state.from_parent.send(raw.bytes); }
                    _ => break,
                },
                report = up.recv() => match report {
                    Some(r) => { let _ = send.write_all(&r).await; }
                    None => return,
                },
            }
        }
    }
}

/// Pipes one broadcast stream from the parent to every child, through the
/// tamper hook.
async fn pipe_stream(mut frames: FrameStream, state: Arc<State>) {
    let children: Vec<Arc<Child>> = state
        .children
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut outs = Vec::new();
    for c in children {
        if let Ok(s) = c.conn.open_uni().await {
            outs.push(s);
        }
    }
    while let Ok(Some(raw)) = frames.next().await {
        state
            .recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(raw.bytes.clone());
        let send: Vec<Vec<u8>> = {
            let mut t = state.tamper.lock().unwrap_or_else(|p| p.into_inner());
            match t.as_mut() {
                Some(f) => f(&raw),
                None => vec![raw.bytes.clone()],
            }
        };
        for out in outs.iter_mut() {
            for f in &send {
                let _ = out.write_all(f).await;
            }
        }
    }
    for mut out in outs {
        let _ = out.finish();
    }
}

/// A client with any identity, dialling a platform as a terminal would.
pub struct RogueClient {
    pub conn: quinn::Connection,
    pub control: quinn::SendStream,
    /// What the platform sends on the control stream.
    pub from_platform: FrameStream,
    _endpoint: quinn::Endpoint,
}

impl RogueClient {
    /// Connects and sends Hello (naming `claimed_serial`) and Subscribe.
    pub async fn connect(
        identity: &Identity,
        anchor: TrustAnchor,
        platform: SocketAddr,
        claimed_serial: u64,
    ) -> anyhow::Result<Self> {
        let endpoint = transport::client_endpoint(
            identity,
            &crypto(anchor),
            transport::bind_udp(([127, 0, 0, 1], 0).into())?,
        )?;
        let conn = transport::connect(&endpoint, platform).await?;
        let (mut control, recv) = conn.open_bi().await?;
        transport::send(
            &mut control,
            &Message::Hello(Hello {
                tier: certs::Tier::Terminal,
                serial: claimed_serial,
                software: "terminal-agent 0.1.0".into(),
            }),
        )
        .await?;
        transport::send(&mut control, &Message::Subscribe(Subscribe::default())).await?;
        Ok(RogueClient {
            conn,
            control,
            from_platform: FrameStream::new(recv),
            _endpoint: endpoint,
        })
    }

    pub async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.control.write_all(bytes).await?;
        Ok(())
    }

    /// The next control message from the platform, waiting up to `timeout`.
    pub async fn next_message(&mut self, timeout: std::time::Duration) -> Option<Message> {
        match tokio::time::timeout(timeout, self.from_platform.next()).await {
            Ok(Ok(Some(raw))) => raw.message().ok(),
            _ => None,
        }
    }
}

/// A QUIC server presenting `identity` (for instance from another root):
/// terminals that dial it must refuse the handshake.
pub fn rogue_server(identity: &Identity, anchor: TrustAnchor) -> anyhow::Result<quinn::Endpoint> {
    let endpoint = transport::platform_endpoint(
        identity,
        &crypto(anchor),
        transport::bind_udp(([127, 0, 0, 1], 0).into())?,
    )?;
    let server = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            tokio::spawn(async move {
                let _ = incoming.await;
            });
        }
    });
    Ok(endpoint)
}

/// Dials `platform` presenting no client certificate at all (as a stock
/// TLS client would), trusting any server. The handshake must fail.
pub async fn connect_without_certificate(platform: SocketAddr) -> anyhow::Result<()> {
    let mut endpoint = quinn::Endpoint::client(([127, 0, 0, 1], 0).into())?;
    endpoint.set_default_client_config(crate::flood::certless_client_config());
    let conn = endpoint.connect(platform, "ebs.invalid")?.await?;
    // TLS 1.3: the server refuses the missing certificate after the
    // client's handshake completes; the connection then closes.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), conn.closed()).await;
    anyhow::ensure!(
        closed.is_ok(),
        "the platform kept a client with no certificate"
    );
    Ok(())
}
