//! Sessions with children (lower platforms and terminals): each gets every
//! broadcast that targets its area on its own QUIC stream, at the
//! broadcast's priority; their receipts and status come back up.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use certs::{AreaCode, PublicKey, Tier};
use protocol::frame::FrameKind;
use protocol::{BroadcastId, Message};
use quinn::Connection;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};
use transport::FrameStream;

use crate::relay::{now_ms, Broadcast, Relay};

/// A child as its certificate says.
#[derive(Debug, Clone)]
pub struct Child {
    pub tier: Tier,
    pub serial: u64,
    pub scope: Vec<AreaCode>,
    pub key: PublicKey,
}

/// A live segment further behind than this is skipped: the child gets the
/// newest audio instead of a growing backlog.
const LIVE_LAG_SEGMENTS: usize = 10;
/// Recorded audio is sent at most this far ahead of its presentation time:
/// enough in hand to ride out a 4G outage, without every terminal having to
/// verify a whole long alert in the same instant.
const SEND_AHEAD_US: i64 = 5_000_000;
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(endpoint: quinn::Endpoint, relay: Arc<Relay>, up: mpsc::Sender<Bytes>) {
    while let Some(incoming) = endpoint.accept().await {
        let relay = relay.clone();
        let up = up.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => {
                    if let Err(e) = session(conn, relay, up).await {
                        debug!(%remote, "child session ended: {e}");
                    }
                }
                Err(e) => debug!(%remote, "handshake refused: {e}"),
            }
        });
    }
}

async fn session(
    conn: Connection,
    relay: Arc<Relay>,
    up: mpsc::Sender<Bytes>,
) -> anyhow::Result<()> {
    let chain = transport::peer_chain(&conn)?;
    let leaf = chain
        .last()
        .ok_or_else(|| anyhow::anyhow!("empty peer chain"))?;
    let child = Child {
        tier: leaf.tier(),
        serial: leaf.serial(),
        scope: leaf.scope().to_vec(),
        key: *leaf.public_key(),
    };
    let (mut send, recv) = conn.accept_bi().await?;
    let mut control = FrameStream::new(recv);
    // Hello, then Subscribe with what the child already has.
    let mut resume = std::collections::HashMap::new();
    for _ in 0..2 {
        match control.next().await?.map(|f| f.message()) {
            Some(Ok(Message::Hello(h))) if h.serial == child.serial => {}
            Some(Ok(Message::Hello(_))) => {
                anyhow::bail!("hello names another serial than the certificate")
            }
            Some(Ok(Message::Subscribe(s))) => resume.extend(s.resume),
            other => anyhow::bail!("expected hello and subscribe, got {other:?}"),
        }
    }
    info!(tier = %child.tier, serial = format!("{:016x}", child.serial), "child connected");

    let mut forwarders = JoinSet::new();
    let mut announcements = relay.announcements();
    let mut commands = relay.command_feed();
    for b in relay.current(now_ms()) {
        if b.targets_any(&child.scope) && !b.is_cancelled() {
            let from = resume.get(&b.id()).copied().unwrap_or(0);
            forwarders.spawn(forward(conn.clone(), b, from));
        }
    }
    loop {
        tokio::select! {
            a = announcements.recv() => match a {
                Ok(b) if b.targets_any(&child.scope) => { forwarders.spawn(forward(conn.clone(), b, 0)); }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => warn!("child session missed {n} announcements"),
                Err(_) => break,
            },
            c = commands.recv() => match c {
                Ok((cmd, frame)) => {
                    let c = &cmd.command;
                    let concerns = c.target_areas.iter().any(|t| child.scope.iter().any(|s| s.covers(*t) || t.covers(*s)))
                        || (child.tier == Tier::Terminal && c.target_terminals.contains(&child.serial))
                        || (child.tier != Tier::Terminal && !c.target_terminals.is_empty());
                    if concerns {
                        timed(send.write_all(&frame)).await?;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => warn!("child session missed {n} commands"),
                Err(_) => break,
            },
            frame = control.next() => match frame {
                Ok(Some(raw)) => handle_up(&relay, &child, raw, &up),
                Ok(None) => break,
                Err(e) => { debug!("control stream: {e}"); break; }
            },
            _ = conn.closed() => break,
            Some(_) = forwarders.join_next(), if !forwarders.is_empty() => {}
        }
    }
    forwarders.abort_all();
    Ok(())
}

/// A receipt or status from below: checked, recorded, passed up unchanged.
fn handle_up(relay: &Relay, child: &Child, raw: protocol::RawFrame, up: &mpsc::Sender<Bytes>) {
    let msg = match raw.message() {
        Ok(m) => m,
        Err(e) => {
            debug!("bad frame from child: {e}");
            return;
        }
    };
    let direct_terminal = child.tier == Tier::Terminal;
    match &msg {
        Message::Receipt(r) => {
            // A terminal signs for itself only; a child platform relays.
            if direct_terminal
                && (r.receipt.terminal_serial != child.serial || !r.signature_valid(&child.key))
            {
                warn!("receipt not signed by the connected terminal: dropped");
                return;
            }
            relay.record_receipt(r);
        }
        Message::Status(s) => {
            if direct_terminal
                && (s.status.terminal_serial != child.serial || !s.signature_valid(&child.key))
            {
                warn!("status not signed by the connected terminal: dropped");
                return;
            }
            relay.record_status(s);
        }
        _ => return,
    }
    if matches!(raw.kind, FrameKind::Receipt | FrameKind::Status) {
        let _ = up.try_send(Bytes::from(raw.bytes));
    }
}

/// Sends one broadcast to one child on its own stream.
async fn forward(
    conn: Connection,
    b: Arc<Broadcast>,
    from_seq: u32,
) -> Result<BroadcastId, anyhow::Error> {
    let id = b.id();
    let mut stream = conn.open_uni().await?;
    let _ = stream.set_priority(b.priority());
    let mut changes = b.subscribe();
    timed(stream.write_all(&b.header_frame)).await?;
    let mut index = 0;
    loop {
        let mut segments = b.segments_from(index);
        index += segments.len();
        if b.is_live() && segments.len() > LIVE_LAG_SEGMENTS {
            segments.drain(..segments.len() - 2);
        }
        for (seq, pts_us, frame) in segments {
            if seq < from_seq {
                continue;
            }
            let early_us = pts_us - SEND_AHEAD_US - crate::relay::now_ms() * 1000;
            if early_us > 0 {
                tokio::time::sleep(Duration::from_micros(early_us as u64)).await;
                if b.is_cancelled() {
                    break;
                }
            }
            timed(stream.write_all(&frame)).await?;
        }
        if b.is_cancelled() || (b.is_complete() && index >= b.segment_count()) {
            break;
        }
        if changes.changed().await.is_err() {
            break;
        }
    }
    let _ = stream.finish();
    Ok(id)
}

async fn timed<F: std::future::Future<Output = Result<(), quinn::WriteError>>>(
    f: F,
) -> anyhow::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, f).await {
        Ok(r) => Ok(r?),
        Err(_) => anyhow::bail!("child too slow: write timed out"),
    }
}
