//! The link to the parent platform: dial in failover order with backoff,
//! receive broadcasts on their streams, send receipts and status up. A
//! parent that keeps sending what fails verification (a compromised relay)
//! is dropped and avoided for a while.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use protocol::{Hello, Message, Refusal, Subscribe};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use transport::guard::{self, Strikes};
use transport::uplink::{self, Handler, SessionEnd, UplinkState};
use transport::FrameStream;

use crate::now_ms;
use crate::relay::Relay;

pub async fn run(
    endpoint: quinn::Endpoint,
    parents: Vec<SocketAddr>,
    relay: Arc<Relay>,
    up: mpsc::Receiver<Bytes>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    if parents.is_empty() {
        // The top of the tree: nothing goes further up (its relay keeps no
        // queue up).
        return;
    }
    let (state, _) = tokio::sync::watch::channel(UplinkState::default());
    let clock = relay.clock.clone();
    let link = ParentLink { relay, up };
    uplink::run(
        endpoint,
        parents,
        link,
        clock,
        state,
        Duration::from_millis(200),
        shutdown,
    )
    .await;
}

/// The platform's side of a session with its parent.
struct ParentLink {
    relay: Arc<Relay>,
    /// Frames for the parent; they wait here while no parent is connected.
    up: mpsc::Receiver<Bytes>,
}

impl Handler for ParentLink {
    async fn session(&mut self, conn: &quinn::Connection, strikes: &Arc<Strikes>) -> SessionEnd {
        match session(conn, &self.relay, &mut self.up, strikes).await {
            Ok(end) => end,
            Err(e) => SessionEnd::Lost(e.to_string()),
        }
    }
}

async fn session(
    conn: &quinn::Connection,
    relay: &Arc<Relay>,
    up: &mut mpsc::Receiver<Bytes>,
    strikes: &Arc<Strikes>,
) -> anyhow::Result<SessionEnd> {
    let parent_chain = transport::peer_chain(conn)?;
    let parent = parent_chain.last().map_or(0, certs::Certificate::serial);
    let (mut send, recv) = conn.open_bi().await?;
    let mut control = FrameStream::new(recv);
    let hello = Hello {
        tier: relay.tier,
        serial: relay.identity.cert().serial(),
        software: concat!("platform ", env!("CARGO_PKG_VERSION")).into(),
    };
    transport::send(&mut send, &Message::Hello(hello)).await?;
    let resume = relay
        .broadcasts
        .current(now_ms())
        .iter()
        .map(|b| (b.id(), b.segment_count() as u32))
        .take(protocol::control::MAX_RESUME)
        .collect();
    transport::send(&mut send, &Message::Subscribe(Subscribe { resume })).await?;
    // What it holds of the programmes sent ahead: the parent sends what is
    // missing or newer.
    transport::send(&mut send, &Message::Inventory(relay.ahead.inventory())).await?;
    // Everything known below, before any report that names it.
    for frame in relay.members.frames() {
        send.write_all(&frame).await?;
    }
    // Publish requests still undecided go to the tier directly above only:
    // it files each once and answers with where it stands.
    let approves = parent_chain.last().map(certs::Certificate::tier)
        == crate::requests::approving_tier(relay.tier);
    if approves {
        for frame in relay.store().outbox()? {
            send.write_all(&frame).await?;
        }
    }
    loop {
        tokio::select! {
            stream = conn.accept_uni() => {
                let stream = stream?;
                let relay = relay.clone();
                let strikes = strikes.clone();
                tokio::spawn(async move {
                    let mut frames = FrameStream::new(stream);
                    let mut refusals = guard::StreamRefusals::default();
                    loop {
                        match frames.next().await {
                            Ok(Some(raw)) => {
                                let mut refused = false;
                                if let Err(e) = relay.ingest_raw(raw, false, crate::now_ms()) {
                                    debug!("from parent: {e}");
                                    refused = matches!(e, crate::relay::IngestError::Refused(_));
                                }
                                if refused {
                                    strikes.strike();
                                }
                                if refusals.note(refused) {
                                    frames.stop();
                                    break;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                if let Some(d) = e.framing() {
                                    relay.refuse(&Refusal::Malformed(d.clone()), None, parent, crate::now_ms());
                                    strikes.strike();
                                }
                                frames.stop();
                                break;
                            }
                        }
                    }
                });
            }
            _ = relay.requests.outbox_waiting(), if approves => {
                for frame in relay.store().outbox()? {
                    send.write_all(&frame).await?;
                }
            }
            frame = up.recv() => match frame {
                Some(f) => send.write_all(&f).await?,
                None => return Ok(SessionEnd::Lost("the platform is stopping".into())),
            },
            frame = control.next() => match frame {
                Ok(Some(raw)) if raw.kind == protocol::FrameKind::Command => {
                    if let Err(e) = relay.ingest_command(Bytes::from(raw.bytes), crate::now_ms()) {
                        debug!("command from parent: {e}");
                        strikes.strike();
                    }
                }
                Ok(Some(raw)) if raw.kind == protocol::FrameKind::Revocation => {
                    match raw.message() {
                        Ok(Message::Revocation(list)) => match relay.apply_revocation(list, crate::now_ms()) {
                            // The parent itself revoked: leave it at once.
                            Ok(true) if relay.chain_fails(&parent_chain, crate::now_ms()) => {
                                return Ok(SessionEnd::Hostile("parent's certificate revoked"))
                            }
                            Ok(_) => {}
                            Err(e) => {
                                warn!("revocation list from parent refused: {e}");
                                strikes.strike();
                            }
                        },
                        Ok(_) => {}
                        Err(e) => {
                            relay.refuse(&Refusal::from(e), None, parent, crate::now_ms());
                            strikes.strike();
                        }
                    }
                }
                Ok(Some(raw)) if raw.kind == protocol::FrameKind::QuietHours => {
                    if let Err(e) = relay.ingest_quiet(Bytes::from(raw.bytes), crate::now_ms()) {
                        debug!("quiet hours from parent: {e}");
                        strikes.strike();
                    }
                }
                Ok(Some(raw)) if raw.kind == protocol::FrameKind::RequestOutcome => {
                    match raw.message() {
                        Ok(Message::RequestOutcome(o)) if o.signer_serial() == parent && o.signature_valid() => {
                            if !relay.requests.answered(crate::requests::FromParent { parent_serial: parent, outcome: o }) {
                                warn!("request desk full: an outcome waits for the next connection");
                            }
                        }
                        Ok(_) => {
                            relay.refuse(&Refusal::ForgedReport, None, parent, crate::now_ms());
                            strikes.strike();
                        }
                        Err(e) => {
                            relay.refuse(&Refusal::from(e), None, parent, crate::now_ms());
                            strikes.strike();
                        }
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => return Ok(SessionEnd::Lost("parent closed the control stream".into())),
                Err(e) => {
                    if let Some(d) = e.framing() {
                        relay.refuse(&Refusal::Malformed(d.clone()), None, parent, crate::now_ms());
                        return Ok(SessionEnd::Hostile("garbled control stream"));
                    }
                    return Err(e.into());
                }
            },
            e = conn.closed() => return Err(e.into()),
        }
    }
}
