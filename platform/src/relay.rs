//! The relay: broadcasts verified once, kept as the exact frames received,
//! and fanned out to every child whose area they target. Frames are shared
//! `Bytes`: sending to many children is a reference-count bump, never a copy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use certs::{AreaCode, Identity, Tier};
use protocol::frame::{FrameKind, RawFrame};
use protocol::{
    Audience, BroadcastClass, BroadcastId, HeaderVerdict, MemoryReplayStore, Message, MessageType,
    Policy, Refusal, Segment, SignedHeader, Verifier,
};
use tokio::sync::{broadcast, watch};

use crate::book::Book;
use crate::store::Store;

pub fn now_ms() -> i64 {
    certs::time::unix_now_ms()
}

/// One broadcast as this platform holds it.
#[derive(Debug)]
pub struct Broadcast {
    pub header: SignedHeader,
    pub header_frame: Bytes,
    /// (sequence, presentation time µs, frame).
    segments: RwLock<Vec<(u32, i64, Bytes)>>,
    complete: AtomicBool,
    cancelled: AtomicBool,
    /// Number of segments held; forwarders wait on changes.
    count: watch::Sender<usize>,
    pub received_ms: i64,
}

impl Broadcast {
    fn new(header: SignedHeader, header_frame: Bytes) -> Arc<Self> {
        let header_only = header.header().audio.codec == protocol::Codec::None;
        Arc::new(Broadcast {
            header,
            header_frame,
            segments: RwLock::new(Vec::new()),
            complete: AtomicBool::new(header_only),
            cancelled: AtomicBool::new(false),
            count: watch::channel(0).0,
            received_ms: now_ms(),
        })
    }

    pub fn id(&self) -> BroadcastId {
        self.header.id()
    }

    /// QUIC stream priority: emergencies before drills before daily
    /// programmes; within a class the more severe first; cancels first of all.
    pub fn priority(&self) -> i32 {
        let h = self.header.header();
        if h.msg_type == MessageType::Cancel {
            return 100;
        }
        let class = match h.class {
            BroadcastClass::Emergency => 30,
            BroadcastClass::Drill => 20,
            BroadcastClass::Daily => 10,
        };
        class + (5 - h.severity.code() as i32).clamp(0, 5)
    }

    /// True when this broadcast is for a child responsible for `scope`.
    pub fn targets_any(&self, scope: &[AreaCode]) -> bool {
        self.header
            .header()
            .targets
            .iter()
            .any(|t| scope.iter().any(|s| s.covers(*t) || t.covers(*s)))
    }

    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    pub fn is_live(&self) -> bool {
        self.header.header().audio.live
    }

    pub fn expired(&self, now_ms: i64) -> bool {
        self.header.header().end_ms < now_ms
    }

    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    /// Segments from position `index` on.
    pub fn segments_from(&self, index: usize) -> Vec<(u32, i64, Bytes)> {
        let s = self.segments.read().unwrap_or_else(|p| p.into_inner());
        s.get(index..).map(<[_]>::to_vec).unwrap_or_default()
    }

    pub fn segment_count(&self) -> usize {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    fn push(&self, seq: u32, pts_us: i64, frame: Bytes, last: bool) {
        let n = {
            let mut s = self.segments.write().unwrap_or_else(|p| p.into_inner());
            s.push((seq, pts_us, frame));
            s.len()
        };
        if last {
            self.complete.store(true, Ordering::Release);
        }
        self.count.send_replace(n);
    }

    fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.complete.store(true, Ordering::Release);
        self.count.send_modify(|_| {});
    }
}

/// Why an ingest did not go through.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    #[error("not a broadcast frame ({0:?})")]
    WrongKind(FrameKind),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The platform's relay state.
pub struct Relay {
    pub identity: Identity,
    pub tier: Tier,
    pub scope: Vec<AreaCode>,
    verifier: Mutex<Verifier<MemoryReplayStore>>,
    broadcasts: RwLock<HashMap<BroadcastId, Arc<Broadcast>>>,
    announce: broadcast::Sender<Arc<Broadcast>>,
    /// Verified remote commands (raw frames) for child sessions.
    commands: broadcast::Sender<(protocol::SignedCommand, Bytes)>,
    store: Store,
    pub book: Mutex<Book>,
}

impl Relay {
    pub fn new(identity: Identity, anchor: certs::TrustAnchor, store: Store) -> Arc<Self> {
        let cert = identity.cert().clone();
        let scope = cert.scope().to_vec();
        let verifier = Verifier::new(
            anchor,
            Audience::Relay {
                scope: scope.clone(),
            },
            Policy::default(),
            MemoryReplayStore::new(),
        );
        Arc::new(Relay {
            tier: cert.tier(),
            scope,
            identity,
            verifier: Mutex::new(verifier),
            broadcasts: RwLock::new(HashMap::new()),
            announce: broadcast::channel(1024).0,
            commands: broadcast::channel(256).0,
            store,
            book: Mutex::new(Book::default()),
        })
    }

    fn verifier(&self) -> std::sync::MutexGuard<'_, Verifier<MemoryReplayStore>> {
        self.verifier.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refusal counts of this platform's own verifier.
    pub fn refusals(&self) -> protocol::RefusalCounts {
        self.verifier().counts().clone()
    }

    /// New broadcasts, for child sessions.
    pub fn announcements(&self) -> broadcast::Receiver<Arc<Broadcast>> {
        self.announce.subscribe()
    }

    pub fn get(&self, id: BroadcastId) -> Option<Arc<Broadcast>> {
        self.broadcasts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Broadcasts still valid at `now`, newest first.
    pub fn current(&self, now_ms: i64) -> Vec<Arc<Broadcast>> {
        let mut v: Vec<_> = self
            .broadcasts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|b| !b.expired(now_ms))
            .cloned()
            .collect();
        v.sort_by_key(|b| std::cmp::Reverse(b.received_ms));
        v
    }

    /// Every broadcast held, newest first.
    pub fn all(&self) -> Vec<Arc<Broadcast>> {
        let mut v: Vec<_> = self
            .broadcasts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|b| std::cmp::Reverse(b.received_ms));
        v
    }

    /// Verifies and keeps a header frame, received from above or made here.
    pub fn ingest_header(&self, frame: Bytes, durable: bool) -> Result<HeaderVerdict, IngestError> {
        let header = match Message::decode_body(
            FrameKind::Header,
            &frame[protocol::frame::FRAME_PREFIX_LEN..],
        ) {
            Ok(Message::Header(h)) => h,
            Ok(other) => return Err(IngestError::WrongKind(other.kind())),
            Err(e) => {
                let r = Refusal::from(e);
                self.verifier().count(&r);
                return Err(r.into());
            }
        };
        let verdict = self.verifier().accept_header(&header, now_ms())?;
        match &verdict {
            HeaderVerdict::New => self.keep(header, frame, durable)?,
            HeaderVerdict::Cancel { target, .. } => {
                if let Some(b) = self.get(*target) {
                    b.cancel();
                }
                self.keep(header, frame, durable)?;
            }
            HeaderVerdict::Resumed { .. } | HeaderVerdict::Closed => {}
        }
        Ok(verdict)
    }

    fn keep(&self, header: SignedHeader, frame: Bytes, durable: bool) -> Result<(), IngestError> {
        let id = header.id();
        self.store.put_header(id, &frame)?;
        if durable {
            self.store.flush()?;
        }
        let b = Broadcast::new(header, frame);
        self.broadcasts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, b.clone());
        let _ = self.announce.send(b);
        Ok(())
    }

    /// Verifies and keeps a segment frame.
    pub fn ingest_segment(&self, frame: Bytes, durable: bool) -> Result<(), IngestError> {
        let segment = match Segment::decode(&frame[protocol::frame::FRAME_PREFIX_LEN..]) {
            Ok(s) => s,
            Err(e) => {
                let r = Refusal::from(e);
                self.verifier().count(&r);
                return Err(r.into());
            }
        };
        let verdict = self.verifier().accept_segment(&segment, now_ms())?;
        self.store.put_segment(segment.id, segment.seq, &frame)?;
        if durable {
            self.store.flush()?;
        }
        if let Some(b) = self.get(segment.id) {
            b.push(segment.seq, segment.pts_us, frame, verdict.last);
        }
        Ok(())
    }

    /// Reloads still-valid broadcasts, receipts and terminal status from the
    /// store after a restart.
    pub fn restore(&self) -> Result<usize, IngestError> {
        {
            let mut book = self.book();
            for body in self.store.receipts()? {
                if let Ok(r) = protocol::SignedReceipt::decode(&body) {
                    book.record_receipt(&r.receipt);
                }
            }
            for body in self.store.statuses()? {
                if let Ok(s) = protocol::SignedStatus::decode(&body) {
                    book.record_status(&s.status, s.status.sent_at_ms);
                }
            }
        }
        let mut n = 0;
        for (header, segments) in self.store.broadcasts()? {
            let header = Bytes::from(header);
            match self.ingest_header(header.clone(), false) {
                Ok(HeaderVerdict::New) => n += 1,
                _ => continue,
            }
            for (_, seg) in segments {
                let _ = self.ingest_segment(Bytes::from(seg), false);
            }
        }
        Ok(n)
    }

    /// Frames this relay holds for a raw frame received (helper for tests).
    pub fn ingest_raw(&self, raw: RawFrame, durable: bool) -> Result<(), IngestError> {
        match raw.kind {
            FrameKind::Header => self
                .ingest_header(Bytes::from(raw.bytes), durable)
                .map(|_| ()),
            FrameKind::Segment => self.ingest_segment(Bytes::from(raw.bytes), durable),
            k => Err(IngestError::WrongKind(k)),
        }
    }

    /// Verified commands, for child sessions.
    pub fn command_feed(&self) -> broadcast::Receiver<(protocol::SignedCommand, Bytes)> {
        self.commands.subscribe()
    }

    /// Verifies a remote command (from the parent or made here) and passes
    /// it to the children it concerns.
    pub fn ingest_command(&self, frame: Bytes) -> Result<(), IngestError> {
        let cmd = match Message::decode_body(
            FrameKind::Command,
            &frame[protocol::frame::FRAME_PREFIX_LEN..],
        ) {
            Ok(Message::Command(c)) => c,
            Ok(other) => return Err(IngestError::WrongKind(other.kind())),
            Err(e) => {
                let r = Refusal::from(e);
                self.verifier().count(&r);
                return Err(r.into());
            }
        };
        self.verifier().accept_command_for_relay(&cmd, now_ms())?;
        let _ = self.commands.send((cmd, frame));
        Ok(())
    }

    /// Forgets broadcasts that ended more than `keep_ms` ago (memory, store
    /// and replay records); returns how many. Their end time has passed, so
    /// the verifier refuses them as expired anyway.
    pub fn prune(&self, now_ms: i64, keep_ms: i64) -> usize {
        let old: Vec<BroadcastId> = self
            .broadcasts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|b| b.header.header().end_ms + keep_ms < now_ms)
            .map(|b| b.id())
            .collect();
        for id in &old {
            self.broadcasts
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
            if let Err(e) = self.store.remove(*id) {
                tracing::warn!("pruning {id}: {e}");
            }
        }
        let _ = protocol::ReplayStore::prune(self.verifier().store_mut(), now_ms - keep_ms);
        old.len()
    }

    /// Makes everything stored so far durable.
    pub fn flush(&self) -> Result<(), crate::store::StoreError> {
        self.store.flush()
    }

    /// Remembers a receipt (from this platform's own children or relayed
    /// from below), durably: coverage and security events survive a crash.
    pub fn record_receipt(&self, r: &protocol::SignedReceipt) {
        let rc = &r.receipt;
        if let Err(e) = self.store.put_receipt(
            rc.broadcast,
            rc.terminal_serial,
            rc.kind.code(),
            rc.at_ms,
            r.body(),
        ) {
            tracing::warn!("storing a receipt: {e}");
        }
        self.book().record_receipt(rc);
    }

    /// Remembers a terminal's latest status, durably.
    pub fn record_status(&self, s: &protocol::SignedStatus) {
        if let Err(e) = self.store.put_status(s.status.terminal_serial, s.body()) {
            tracing::warn!("storing a status: {e}");
        }
        self.book().record_status(&s.status, now_ms());
    }
}
