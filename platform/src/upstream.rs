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
use tracing::{debug, info, warn};
use transport::guard::{self, Quarantine, Strikes};
use transport::FrameStream;

use crate::relay::{now_ms, Relay};

pub async fn run(
    endpoint: quinn::Endpoint,
    parents: Vec<SocketAddr>,
    relay: Arc<Relay>,
    mut up: mpsc::Receiver<Bytes>,
) {
    if parents.is_empty() {
        // The top of the tree: nothing goes further up.
        while up.recv().await.is_some() {}
        return;
    }
    let mut backoff = Duration::from_millis(200);
    let mut quarantine = Quarantine::default();
    // The parent whose link was just lost is tried last; a probe brings the
    // platform back to a preferred parent once it answers again.
    let mut lost: Option<SocketAddr> = None;
    loop {
        let usable = quarantine.usable(&parents, std::time::Instant::now());
        for addr in guard::failover_order(&usable, lost) {
            let conn = match transport::connect(&endpoint, addr).await {
                Ok(c) => c,
                Err(e) => {
                    debug!(%addr, "cannot reach parent: {e}");
                    continue;
                }
            };
            info!(%addr, "connected to parent");
            lost = None;
            let rank = usable.iter().position(|a| *a == addr).unwrap_or(0);
            let strikes = Arc::new(Strikes::default());
            let back = Arc::new(tokio::sync::Notify::new());
            let _probe = transport::probe_preferred(&endpoint, &usable[..rank], &back);
            match session(&conn, &relay, &mut up, &strikes, &back).await {
                Ok(ParentEnd::Hostile) => {
                    warn!(%addr, "parent sends what fails verification: avoided for {:?}", guard::QUARANTINE);
                    quarantine.add(addr, std::time::Instant::now());
                    conn.close(3u32.into(), b"hostile");
                }
                Ok(ParentEnd::Preferred) => {
                    info!(%addr, "a preferred parent is back");
                    conn.close(0u32.into(), b"preferred");
                }
                Ok(ParentEnd::Lost) => lost = Some(addr),
                Err(e) => {
                    debug!(%addr, "parent session ended: {e}");
                    lost = Some(addr);
                }
            }
            warn!(%addr, "left parent");
            backoff = Duration::ZERO;
            break; // start again from the preferred parent
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).clamp(Duration::from_millis(200), Duration::from_secs(5));
    }
}

/// Why a session with the parent ended (other than an error).
enum ParentEnd {
    Lost,
    /// It kept sending what fails verification, or was revoked.
    Hostile,
    /// A parent ranked higher answers again.
    Preferred,
}

async fn session(
    conn: &quinn::Connection,
    relay: &Arc<Relay>,
    up: &mut mpsc::Receiver<Bytes>,
    strikes: &Arc<Strikes>,
    preferred_back: &tokio::sync::Notify,
) -> anyhow::Result<ParentEnd> {
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
        .current(now_ms())
        .iter()
        .map(|b| (b.id(), b.segment_count() as u32))
        .take(protocol::control::MAX_RESUME)
        .collect();
    transport::send(&mut send, &Message::Subscribe(Subscribe { resume })).await?;
    // Everything known below, before any report that names it.
    for frame in relay.member_frames() {
        send.write_all(&frame).await?;
    }
    loop {
        tokio::select! {
            stream = conn.accept_uni() => {
                let stream = stream?;
                let relay = relay.clone();
                let strikes = strikes.clone();
                tokio::spawn(async move {
                    let mut frames = FrameStream::new(stream);
                    let mut refused = 0;
                    loop {
                        if refused >= guard::STREAM_REFUSALS {
                            frames.stop();
                            break;
                        }
                        match frames.next().await {
                            Ok(Some(raw)) => {
                                if let Err(e) = relay.ingest_raw(raw, false) {
                                    debug!("from parent: {e}");
                                    if matches!(e, crate::relay::IngestError::Refused(_)) {
                                        strikes.strike();
                                        refused += 1;
                                    }
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                if let Some(d) = e.framing() {
                                    relay.refuse(&Refusal::Malformed(d.clone()), None, parent);
                                    strikes.strike();
                                }
                                frames.stop();
                                break;
                            }
                        }
                    }
                });
            }
            frame = up.recv() => match frame {
                Some(f) => send.write_all(&f).await?,
                None => return Ok(ParentEnd::Lost),
            },
            _ = strikes.hostile() => return Ok(ParentEnd::Hostile),
            _ = preferred_back.notified() => return Ok(ParentEnd::Preferred),
            frame = control.next() => match frame {
                Ok(Some(raw)) if raw.kind == protocol::FrameKind::Command => {
                    if let Err(e) = relay.ingest_command(Bytes::from(raw.bytes)) {
                        debug!("command from parent: {e}");
                        strikes.strike();
                    }
                }
                Ok(Some(raw)) if raw.kind == protocol::FrameKind::Revocation => {
                    match raw.message() {
                        Ok(Message::Revocation(list)) => match relay.apply_revocation(list) {
                            // The parent itself revoked: leave it at once.
                            Ok(true) if relay.chain_fails(&parent_chain) => return Ok(ParentEnd::Hostile),
                            Ok(_) => {}
                            Err(e) => {
                                warn!("revocation list from parent refused: {e}");
                                strikes.strike();
                            }
                        },
                        Ok(_) => {}
                        Err(e) => {
                            relay.refuse(&Refusal::from(e), None, parent);
                            strikes.strike();
                        }
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => return Ok(ParentEnd::Lost),
                Err(e) => {
                    if let Some(d) = e.framing() {
                        relay.refuse(&Refusal::Malformed(d.clone()), None, parent);
                        return Ok(ParentEnd::Hostile);
                    }
                    return Err(e.into());
                }
            },
            e = conn.closed() => return Err(e.into()),
        }
    }
}
