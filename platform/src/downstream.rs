//! Sessions with children (lower platforms and terminals): each gets every
//! broadcast that targets its area on its own QUIC stream, at the
//! broadcast's priority; their receipts and status come back up.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use certs::{AreaCode, PublicKey, Tier};
use protocol::{BroadcastId, Message, Refusal};
use quinn::Connection;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};
use transport::admission::{Admission, AdmissionConfig, Decision, Ending};
use transport::FrameStream;

use crate::broadcast::{Broadcast, Cursor, Step};
use crate::now_ms;
use crate::relay::Relay;

/// A child as its certificate says.
#[derive(Debug, Clone)]
pub struct Child {
    pub tier: Tier,
    pub serial: u64,
    pub name: String,
    pub scope: Vec<AreaCode>,
    pub key: PublicKey,
}

const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most frames one write to a child takes (a batch of recorded audio
/// is 4 s, 8 segments of 500 ms; a failover's catch-up may be more).
const MAX_WRITE_FRAMES: usize = 32;

/// The link of each terminal now linked, by serial. A terminal that links
/// again (restarted, or back after its carrier's outage) supersedes its
/// old link at once: the old one is dead or about to be, and holding it
/// until its idle timeout would hold the memory of two links per terminal
/// through a reconnect storm.
#[derive(Default)]
pub struct Children {
    linked: std::sync::Mutex<HashMap<u64, (u64, Connection)>>,
    next: std::sync::atomic::AtomicU64,
}

/// A child's entry; removed when dropped unless a newer link replaced it.
pub struct Linked<'a> {
    children: &'a Children,
    serial: u64,
    generation: u64,
}

impl Children {
    /// Records `conn` as `serial`'s link, closing the one it replaces.
    pub fn enter(&self, serial: u64, conn: &Connection) -> Linked<'_> {
        let generation = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let old = self
            .linked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(serial, (generation, conn.clone()));
        if let Some((_, old)) = old {
            info!(
                serial = format!("{serial:016x}"),
                old = %old.remote_address(),
                new = %conn.remote_address(),
                "child linked again: its old link is closed"
            );
            old.close(4u32.into(), b"superseded");
        }
        Linked {
            children: self,
            serial,
            generation,
        }
    }
}

impl Drop for Linked<'_> {
    fn drop(&mut self) {
        let mut linked = self
            .children
            .linked
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if linked
            .get(&self.serial)
            .is_some_and(|(g, _)| *g == self.generation)
        {
            linked.remove(&self.serial);
        }
    }
}

/// Accepts children until `shutdown` resolves, each attempt judged by
/// `admission` first (S1: a flood of strangers must not crowd out the
/// terminals); then waits for their sessions to end (the endpoint is
/// closed by whoever stops the platform).
pub async fn serve(
    endpoint: quinn::Endpoint,
    relay: Arc<Relay>,
    admission: AdmissionConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let deadline = admission.handshake_timeout();
    let mut admission = Admission::new(admission, relay.admission.clone());
    // Handshake tasks by id, with their source: a slot is given back
    // however the task ends.
    let mut handshakes = JoinSet::new();
    let mut sources: HashMap<tokio::task::Id, IpAddr> = HashMap::new();
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let source = incoming.remote_address().ip();
                match admission.decide(source, incoming.remote_address_validated(), Instant::now()) {
                    Decision::Accept => match incoming.accept() {
                        Ok(connecting) => {
                            let task = handshakes.spawn(handshake(connecting, deadline, relay.clone()));
                            sources.insert(task.id(), source);
                        }
                        Err(e) => {
                            debug!(%source, "handshake refused at once: {e}");
                            admission.ended(source, Ending::Failed, Instant::now());
                        }
                    },
                    Decision::Retry => {
                        if let Err(e) = incoming.retry() {
                            e.into_incoming().ignore();
                        }
                    }
                    Decision::Refuse => incoming.refuse(),
                    Decision::Drop => incoming.ignore(),
                }
            }
            _ = &mut shutdown => break,
            Some(done) = handshakes.join_next_with_id(), if !handshakes.is_empty() => {
                let (id, outcome) = match done {
                    Ok((id, outcome)) => (id, outcome),
                    Err(e) => (e.id(), Err(Ending::Failed)),
                };
                let Some(source) = sources.remove(&id) else { continue };
                match outcome {
                    Ok(conn) => {
                        admission.ended(source, Ending::Linked, Instant::now());
                        let relay = relay.clone();
                        sessions.spawn(async move {
                            let remote = conn.remote_address();
                            if let Err(e) = session(conn, relay).await {
                                debug!(%remote, "child session ended: {e}");
                            }
                        });
                    }
                    Err(ending) => admission.ended(source, ending, Instant::now()),
                }
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => admission.closed(),
        }
    }
    endpoint.close(0u32.into(), b"shutdown");
    handshakes.abort_all();
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while sessions.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        sessions.abort_all();
    }
}

/// Finishes one accepted handshake within `deadline` (dropping an
/// unfinished one closes it, so a half-open connection holds its slot no
/// longer).
async fn handshake(
    connecting: quinn::Connecting,
    deadline: Duration,
    relay: Arc<Relay>,
) -> Result<Connection, Ending> {
    let remote = connecting.remote_address();
    match tokio::time::timeout(deadline, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => {
            debug!(%remote, "handshake refused: {e}");
            // A peer whose chain fails is reported by the TLS verifier;
            // one with no certificate never reaches it.
            if no_certificate(&e) {
                relay.refuse(
                    &Refusal::PeerUntrusted(format!("{remote} presented no certificate")),
                    None,
                    0,
                    crate::now_ms(),
                );
            }
            // Only a handshake this end refused (a TLS alert: no
            // certificate, a bad chain) marks its source as failing; one
            // whose client went away (a stale attempt answered after an
            // outage, then reset) does not.
            let refused = matches!(&e, quinn::ConnectionError::TransportError(t)
                if (0x100..0x200).contains(&u64::from(t.code)));
            Err(if refused {
                Ending::Refused
            } else {
                Ending::Failed
            })
        }
        Err(_) => {
            debug!(%remote, "handshake abandoned after {deadline:?}");
            Err(Ending::TimedOut)
        }
    }
}

/// TLS alert 116 (certificate_required): the client sent no certificate.
fn no_certificate(e: &quinn::ConnectionError) -> bool {
    matches!(e, quinn::ConnectionError::TransportError(t)
        if t.code == quinn::TransportErrorCode::crypto(116))
}

async fn session(conn: Connection, relay: Arc<Relay>) -> anyhow::Result<()> {
    let chain = transport::peer_chain(&conn)?;
    // The child measures the tree's time against this platform's.
    let _clock = transport::AbortOnDrop::new(tokio::spawn(transport::clock::serve(
        conn.clone(),
        relay.clock.clone(),
    )));
    let leaf = chain
        .last()
        .ok_or_else(|| anyhow::anyhow!("empty peer chain"))?;
    let child = Child {
        tier: leaf.tier(),
        serial: leaf.serial(),
        name: leaf.body().name.clone(),
        scope: leaf.scope().to_vec(),
        key: *leaf.public_key(),
    };
    let (mut send, recv) = conn.accept_bi().await?;
    let mut control = FrameStream::new(recv);
    // Hello, then Subscribe with what the child already has.
    let mut resume = std::collections::HashMap::new();
    for _ in 0..2 {
        let frame = match control.next().await {
            Ok(f) => f,
            Err(e) => {
                if let Some(d) = e.framing() {
                    relay.refuse(
                        &Refusal::Malformed(d.clone()),
                        None,
                        child.serial,
                        crate::now_ms(),
                    );
                }
                anyhow::bail!("control stream: {e}");
            }
        };
        match frame.map(|f| f.message()) {
            Some(Ok(Message::Hello(h))) if h.serial == child.serial => {}
            Some(Ok(Message::Hello(_))) => {
                relay.refuse(&Refusal::ForgedReport, None, child.serial, crate::now_ms());
                anyhow::bail!("hello names another serial than the certificate")
            }
            Some(Ok(Message::Subscribe(s))) => resume.extend(s.resume),
            Some(Err(e)) => {
                relay.refuse(&Refusal::from(e), None, child.serial, crate::now_ms());
                anyhow::bail!("bad frame before subscribe");
            }
            other => anyhow::bail!("expected hello and subscribe, got {other:?}"),
        }
    }
    info!(tier = %child.tier, serial = format!("{:016x}", child.serial), "child connected");
    // Only a terminal's older link is closed: a platform's costs little for
    // its 6 s, and two platforms with one identity (a stolen key) would
    // otherwise keep closing each other's links to the tier above.
    let _linked = (child.tier == Tier::Terminal).then(|| relay.children.enter(child.serial, &conn));
    // Tiers above learn the child's key, so they can check its reports.
    if let Err(r) = relay.add_member(&chain, None, crate::now_ms()) {
        debug!("child's chain no longer verifies: {r}");
    }
    // The lists in force go first: a child must know what is revoked before
    // it hears anything else from us.
    let mut revocations = relay.revocations.subscribe();
    for list in relay.revocations.lists() {
        timed(send.write_all(&Message::Revocation(list).encode())).await?;
    }
    // What the child holds of the programmes sent ahead: its inventory
    // comes after subscribe; until then it holds nothing we know of. The
    // inventory also says the child knows what is sent ahead (kinds 28 to
    // 32): a child of an older build, which sends none, is sent none of it.
    let mut news = relay.ahead.news();
    let mut holds: HashMap<BroadcastId, protocol::Held> = HashMap::new();
    let mut knows_ahead = false;

    let mut forwarders = JoinSet::new();
    let mut announcements = relay.broadcasts.announcements();
    let mut commands = relay.command_feed();
    let mut outcomes = relay.requests.outcomes();
    for b in relay.broadcasts.current(now_ms()) {
        let from = resume.get(&b.id()).copied().unwrap_or(0);
        // The child has all of a complete broadcast (or says so): resending
        // even its header would only be refused as a replay.
        let has_all = from == u32::MAX || (b.is_complete() && from as usize >= b.segment_count());
        if b.targets_any(&child.scope)
            && !b.is_cancelled()
            && !has_all
            && !b.silenced_for(&child.scope)
        {
            forwarders.spawn(forward(conn.clone(), b, from, child.clone()));
        }
    }
    loop {
        tokio::select! {
            a = announcements.recv() => match a {
                Ok(b) if b.targets_any(&child.scope) => { forwarders.spawn(forward(conn.clone(), b, 0, child.clone())); }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => warn!("child session missed {n} announcements"),
                Err(_) => break,
            },
            c = commands.recv() => match c {
                Ok((cmd, frame)) => {
                    let c = &cmd.command;
                    let concerns = certs::area::any_overlap(&c.target_areas, &child.scope)
                        || (child.tier == Tier::Terminal && c.target_terminals.contains(&child.serial))
                        || (child.tier != Tier::Terminal && !c.target_terminals.is_empty());
                    if concerns {
                        timed(send.write_all(&frame)).await?;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => warn!("child session missed {n} commands"),
                Err(_) => break,
            },
            o = outcomes.recv() => match o {
                Ok((serial, frame)) if serial == child.serial => timed(send.write_all(&frame)).await?,
                Ok(_) => {}
                // A lost outcome is sent again when the child sends its request again.
                Err(RecvError::Lagged(n)) => warn!("child session missed {n} request outcomes"),
                Err(RecvError::Closed) => break,
            },
            n = news.recv() => match n {
                Ok(crate::ahead::News::Quiet(q)) => {
                    if knows_ahead && certs::area::any_overlap(&q.signed.policy().targets, &child.scope) {
                        timed(send.write_chunk(q.frame.clone())).await?;
                    }
                }
                Ok(crate::ahead::News::Programme(p)) => {
                    if knows_ahead && p.targets_any(&child.scope) {
                        // Its audio goes along unless the child holds this
                        // programme's audio already (a change of times only).
                        let had = holds.get(&p.id()).is_some_and(|h| h.complete);
                        let with_audio = !(had && p.audio_as_before);
                        holds.insert(p.id(), protocol::Held {
                            id: p.id(),
                            revision: p.signed.programme().revision,
                            complete: true,
                        });
                        forwarders.spawn(send_programmes(conn.clone(), relay.clone(), vec![(p, with_audio)]));
                    }
                }
                Err(RecvError::Lagged(n)) => warn!("child session missed {n} programme notices: it gets them at its next connection"),
                Err(RecvError::Closed) => break,
            },
            list = revocations.recv() => match list {
                Ok(list) => {
                    timed(send.write_all(&Message::Revocation(list).encode())).await?;
                    if relay.chain_fails(&chain, crate::now_ms()) {
                        warn!(serial = format!("{:016x}", child.serial), "child revoked: link closed");
                        conn.close(2u32.into(), b"revoked");
                        break;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    for list in relay.revocations.lists() {
                        timed(send.write_all(&Message::Revocation(list).encode())).await?;
                    }
                }
                Err(RecvError::Closed) => break,
            },
            frame = control.next() => match frame {
                Ok(Some(raw)) if raw.kind == protocol::FrameKind::Inventory => {
                    match raw.message() {
                        Ok(Message::Inventory(inv)) => {
                            if !std::mem::replace(&mut knows_ahead, true) {
                                // The quiet hours over its area (R20) first: a
                                // terminal keeps them even when an upper tier
                                // misbehaves later.
                                for q in relay.ahead.quiet() {
                                    if certs::area::any_overlap(&q.signed.policy().targets, &child.scope) {
                                        timed(send.write_chunk(q.frame.clone())).await?;
                                    }
                                }
                            }
                            let wanted = wanted_programmes(&relay, &child, &inv);
                            holds = inv.held.iter().map(|h| (h.id, *h)).collect();
                            for (p, _) in &wanted {
                                holds.insert(p.id(), protocol::Held {
                                    id: p.id(),
                                    revision: p.signed.programme().revision,
                                    complete: true,
                                });
                            }
                            if !wanted.is_empty() {
                                forwarders.spawn(send_programmes(conn.clone(), relay.clone(), wanted));
                            }
                        }
                        Ok(_) => {}
                        Err(e) => relay.refuse(&Refusal::from(e), None, child.serial, crate::now_ms()),
                    }
                }
                Ok(Some(raw)) => {
                    if handle_up(&relay, &child, raw) {
                        // Behind on revocations: send what is in force again.
                        for list in relay.revocations.lists() {
                            timed(send.write_all(&Message::Revocation(list).encode())).await?;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if let Some(d) = e.framing() {
                    relay.refuse(&Refusal::Malformed(d.clone()), None, child.serial, crate::now_ms());
                }
                    debug!("control stream: {e}");
                    break;
                }
            },
            _ = conn.closed() => break,
            Some(_) = forwarders.join_next(), if !forwarders.is_empty() => {}
        }
    }
    forwarders.abort_all();
    Ok(())
}

/// A receipt, status or security event from below: checked, recorded,
/// passed up unchanged. Returns true when a terminal's status shows it is
/// missing a revocation list in force here.
fn handle_up(relay: &Relay, child: &Child, raw: protocol::RawFrame) -> bool {
    let msg = match raw.message() {
        Ok(m) => m,
        Err(e) => {
            debug!(kind = ?raw.kind, serial = format!("{:016x}", child.serial), "undecodable frame from below: {e}");
            relay.refuse(&Refusal::from(e), None, child.serial, crate::now_ms());
            return false;
        }
    };
    // Every report must be signed by the node it names: a direct child's
    // key comes from its TLS identity, a node further below must have been
    // announced (Member) by the child platform it sits under.
    let direct_terminal = child.tier == Tier::Terminal;
    let signed_by = |named: u64, valid: &dyn Fn(&PublicKey) -> bool| {
        let key = if named == child.serial {
            Some(child.key)
        } else if direct_terminal {
            None
        } else {
            relay.members.key(named)
        };
        key.is_some_and(|k| valid(&k))
    };
    let mut behind = false;
    match &msg {
        Message::Receipt(r) => {
            if !signed_by(r.receipt.terminal_serial, &|k| r.signature_valid(k)) {
                relay.refuse(
                    &Refusal::ForgedReport,
                    r.receipt.broadcast,
                    child.serial,
                    crate::now_ms(),
                );
                return false;
            }
            relay.record_receipt(r);
        }
        Message::Status(s) => {
            if !signed_by(s.status.terminal_serial, &|k| s.signature_valid(k)) {
                relay.refuse(&Refusal::ForgedReport, None, child.serial, crate::now_ms());
                return false;
            }
            relay.record_status(s, crate::now_ms());
            behind = direct_terminal && lists_behind(relay, &s.status.revocation_numbers);
        }
        Message::Member(m) => {
            if direct_terminal {
                relay.refuse(&Refusal::ForgedReport, None, child.serial, crate::now_ms());
                return false;
            }
            if let Err(r) = relay.add_member(&m.chain, Some(&child.scope), crate::now_ms()) {
                relay.refuse(&r, None, child.serial, crate::now_ms());
            }
            // add_member passes a new member up itself.
            return false;
        }
        Message::SecurityEvent(e) => {
            if !signed_by(e.event.reporter_serial, &|k| e.signature_valid(k)) {
                relay.refuse(&Refusal::ForgedReport, None, child.serial, crate::now_ms());
                return false;
            }
            relay.record_event(e, crate::now_ms());
        }
        Message::ProgrammeReceipt(r) => {
            if !signed_by(r.receipt.terminal_serial, &|k| r.signature_valid(k)) {
                relay.refuse(
                    &Refusal::ForgedReport,
                    Some(r.receipt.programme),
                    child.serial,
                    crate::now_ms(),
                );
                return false;
            }
            relay.record_play(r);
        }
        Message::PublishRequest(r) => {
            take_request(relay, child, r.clone());
            // A request is for this platform's desk, not for the tier above.
            return false;
        }
        _ => return false,
    }
    relay.send_up(Bytes::from(raw.bytes));
    behind
}

/// A publish request (PROTOCOL.md 6.9): only from a direct child platform,
/// signed by that child's own key, for areas in the child's scope.
fn take_request(relay: &Relay, child: &Child, r: protocol::SignedRequest) {
    let now = crate::now_ms();
    let own_key = r
        .chain()
        .last()
        .is_some_and(|c| *c.public_key() == child.key);
    if child.tier == Tier::Terminal
        || r.signer_serial() != child.serial
        || !own_key
        || !r.signature_valid()
    {
        relay.refuse(&Refusal::ForgedReport, None, child.serial, now);
        return;
    }
    if let Some(out) = certs::area::first_outside(&r.request.targets, &child.scope) {
        relay.refuse(&Refusal::TargetOutsideScope(out), None, child.serial, now);
        return;
    }
    if crate::requests::approving_tier(child.tier) != Some(relay.tier) {
        // A failover child of a tier further down: its own tier above decides.
        debug!(
            serial = format!("{:016x}", child.serial),
            "publish request not for this tier: ignored"
        );
        return;
    }
    let taken = relay.requests.submit(crate::requests::Incoming {
        child_serial: child.serial,
        child_name: child.name.clone(),
        request: r,
    });
    if !taken {
        warn!(
            serial = format!("{:016x}", child.serial),
            "request desk full: the child sends it again at its next connection"
        );
    }
}

/// True when `held` lacks a list in force here, or holds an older one.
fn lists_behind(relay: &Relay, held: &[(u64, u64)]) -> bool {
    relay
        .revocations
        .numbers()
        .iter()
        .any(|(signer, number)| !held.iter().any(|(s, n)| s == signer && n >= number))
}

/// The programmes a child lacks (none held, an older revision, or its
/// audio incomplete there), each complete here and for its area, with
/// whether its audio must go too.
fn wanted_programmes(
    relay: &Relay,
    child: &Child,
    inv: &protocol::Inventory,
) -> Vec<(Arc<crate::ahead::HeldProgramme>, bool)> {
    relay
        .ahead
        .programmes()
        .into_iter()
        .filter(|p| p.targets_any(&child.scope) && p.complete() && p.valid_at(now_ms()))
        .filter_map(|p| {
            let revision = p.signed.programme().revision;
            match inv.get(p.id()) {
                Some(h) if h.revision == revision && h.complete => None,
                Some(h) if h.revision == revision => Some((p, true)),
                Some(h) if h.revision > revision => None,
                Some(h) => {
                    let audio = !(h.complete && p.audio_as_before);
                    Some((p, audio))
                }
                None => Some((p, true)),
            }
        })
        .collect()
}

/// Programme streams sit below every broadcast's (the lowest, daily, is
/// 100 and up): sending ahead never delays what plays now.
const PROGRAMME_PRIORITY: i32 = 0;
/// Chunks read from the store and written at a time.
const CHUNKS_PER_WRITE: u16 = 8;

/// Sends programmes to one child, each on its own stream: the programme
/// frame, then (if `with_audio`) every chunk of its audio from the store.
async fn send_programmes(
    conn: Connection,
    relay: Arc<Relay>,
    programmes: Vec<(Arc<crate::ahead::HeldProgramme>, bool)>,
) -> Result<BroadcastId, anyhow::Error> {
    let mut last = None;
    for (p, with_audio) in programmes {
        let id = p.id();
        let mut stream = conn.open_uni().await?;
        let _ = stream.set_priority(PROGRAMME_PRIORITY);
        timed(stream.write_chunk(p.frame.clone())).await?;
        let chunks = p.signed.programme().audio.chunks.len() as u16;
        let mut next = 0;
        while with_audio && next < chunks {
            let to = (next + CHUNKS_PER_WRITE).min(chunks);
            let relay = relay.clone();
            let mut frames =
                tokio::task::spawn_blocking(move || relay.ahead.chunk_frames(id, next, to))
                    .await??;
            if frames.is_empty() {
                anyhow::bail!("programme {id}: chunk {next} is missing from the store");
            }
            next += frames.len() as u16;
            timed(stream.write_all_chunks(&mut frames)).await?;
        }
        let _ = stream.finish();
        last = Some(id);
    }
    last.ok_or_else(|| anyhow::anyhow!("no programme to send"))
}

/// Sends one broadcast to one child on its own stream, as its cursor says.
async fn forward(
    conn: Connection,
    b: Arc<Broadcast>,
    from_seq: u32,
    child: Child,
) -> Result<BroadcastId, anyhow::Error> {
    let tier = child.tier;
    let id = b.id();
    let mut stream = conn.open_uni().await?;
    let _ = stream.set_priority(b.priority());
    let mut changes = b.subscribe();
    let mut cursor = Cursor::new(from_seq, now_ms() * 1000);
    if tier == Tier::Terminal {
        cursor = cursor.for_terminal();
    }
    // Shared bytes, never copied per child.
    timed(stream.write_chunk(b.header_frame.clone())).await?;
    // What is due at once goes in one write: one lock of the connection and
    // full packets, rather than a wake of its driver per segment.
    let mut due: Vec<Bytes> = Vec::new();
    loop {
        if b.silenced_for(&child.scope) {
            // Silenced here: the child gets no more of it (the command
            // itself stops what the child already has).
            break;
        }
        let step = match cursor.next(&b, now_ms() * 1000) {
            Step::Send(frame) => {
                due.push(frame);
                if due.len() < MAX_WRITE_FRAMES {
                    continue;
                }
                None
            }
            other => Some(other),
        };
        if !due.is_empty() {
            timed(stream.write_all_chunks(&mut due)).await?;
            due.clear();
        }
        match step {
            // A full batch went (a frame to send is always in `due`).
            None | Some(Step::Send(_)) => {}
            Some(Step::Wait(at_us)) => {
                let wait = (at_us - now_ms() * 1000).max(0) as u64;
                // A cancel must not wait for the next segment's time.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_micros(wait)) => {}
                    c = changes.changed() => if c.is_err() { break },
                }
            }
            Some(Step::Idle) => {
                if changes.changed().await.is_err() {
                    break;
                }
            }
            Some(Step::Done) => break,
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
