//! The broadcast model of a relay: each verified broadcast kept as the exact
//! frames received (shared `Bytes`: sending to many children is a
//! reference-count bump, never a copy), the registry of them, and a
//! [`Cursor`] per child that says what to send it next and when. Sans-IO:
//! time is a parameter.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use certs::AreaCode;
use protocol::{BroadcastId, SignedHeader};
use tokio::sync::{broadcast, watch};

/// One broadcast as this platform holds it. Written by the one task that
/// ingests it; read by every child's forwarder.
#[derive(Debug)]
pub struct Broadcast {
    pub header: SignedHeader,
    pub header_frame: Bytes,
    /// (sequence, presentation time µs, frame).
    segments: RwLock<Vec<(u32, i64, Bytes)>>,
    complete: AtomicBool,
    cancelled: AtomicBool,
    /// Areas where it is silenced here (R20): children wholly inside them
    /// are sent nothing more of it.
    silenced: RwLock<Vec<AreaCode>>,
    /// Number of segments held; forwarders wait on changes.
    count: watch::Sender<usize>,
    pub received_ms: i64,
}

impl Broadcast {
    pub fn new(header: SignedHeader, header_frame: Bytes, received_ms: i64) -> Arc<Self> {
        let header_only = header.header().audio.codec == protocol::Codec::None;
        Arc::new(Broadcast {
            header,
            header_frame,
            segments: RwLock::new(Vec::new()),
            complete: AtomicBool::new(header_only),
            cancelled: AtomicBool::new(false),
            silenced: RwLock::new(Vec::new()),
            count: watch::channel(0).0,
            received_ms,
        })
    }

    pub fn id(&self) -> BroadcastId {
        self.header.id()
    }

    /// QUIC stream priority, from the broadcast's precedence.
    pub fn priority(&self) -> i32 {
        protocol::Precedence::of(self.header.header(), self.header.signer().tier())
            .stream_priority()
    }

    /// True when this broadcast is for a child responsible for `scope`.
    pub fn targets_any(&self, scope: &[AreaCode]) -> bool {
        certs::area::any_overlap(&self.header.header().targets, scope)
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

    /// Changes whenever a segment arrives or the broadcast closes.
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    /// Segments from position `index` on.
    pub fn segments_from(&self, index: usize) -> Vec<(u32, i64, Bytes)> {
        let s = self.segments.read().unwrap_or_else(|p| p.into_inner());
        s.get(index..).map(<[_]>::to_vec).unwrap_or_default()
    }

    /// Segments received (also after `release_audio`).
    pub fn segment_count(&self) -> usize {
        *self.count.borrow()
    }

    /// Drops the audio held in memory (the store keeps it): an ended
    /// broadcast is listed, never sent again.
    pub fn release_audio(&self) {
        let mut s = self.segments.write().unwrap_or_else(|p| p.into_inner());
        s.clear();
        s.shrink_to_fit();
    }

    /// A verified segment (the producer side).
    pub fn push(&self, seq: u32, pts_us: i64, frame: Bytes, last: bool) {
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

    /// Silences it in `areas`: children inside them get no more of it.
    pub fn silence(&self, areas: &[AreaCode]) {
        self.silenced
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(areas);
        self.count.send_modify(|_| {});
    }

    /// True when a child responsible for `scope` lies wholly in silenced areas.
    pub fn silenced_for(&self, scope: &[AreaCode]) -> bool {
        let s = self.silenced.read().unwrap_or_else(|p| p.into_inner());
        !s.is_empty() && certs::area::first_outside(scope, &s).is_none()
    }

    /// Areas where it is silenced here.
    pub fn silenced_areas(&self) -> Vec<AreaCode> {
        self.silenced
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Cancelled or revoked: nothing more of it is sent.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.complete.store(true, Ordering::Release);
        self.count.send_modify(|_| {});
    }
}

/// The broadcasts a relay holds, and the feed that tells child sessions of
/// new ones.
pub struct Broadcasts {
    map: RwLock<HashMap<BroadcastId, Arc<Broadcast>>>,
    announce: broadcast::Sender<Arc<Broadcast>>,
}

impl Default for Broadcasts {
    fn default() -> Self {
        Broadcasts {
            map: RwLock::default(),
            announce: broadcast::channel(1024).0,
        }
    }
}

impl Broadcasts {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<BroadcastId, Arc<Broadcast>>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a new broadcast and announces it.
    pub fn insert(&self, b: Arc<Broadcast>) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(b.id(), b.clone());
        let _ = self.announce.send(b);
    }

    pub fn get(&self, id: BroadcastId) -> Option<Arc<Broadcast>> {
        self.read().get(&id).cloned()
    }

    /// New broadcasts, for child sessions.
    pub fn announcements(&self) -> broadcast::Receiver<Arc<Broadcast>> {
        self.announce.subscribe()
    }

    /// Broadcasts still valid at `now_ms`, newest first.
    pub fn current(&self, now_ms: i64) -> Vec<Arc<Broadcast>> {
        self.sorted(|b| !b.expired(now_ms))
    }

    /// Every broadcast held, newest first.
    pub fn all(&self) -> Vec<Arc<Broadcast>> {
        self.sorted(|_| true)
    }

    fn sorted(&self, keep: impl Fn(&Broadcast) -> bool) -> Vec<Arc<Broadcast>> {
        let mut v: Vec<_> = self.read().values().filter(|b| keep(b)).cloned().collect();
        v.sort_by_key(|b| std::cmp::Reverse(b.received_ms));
        v
    }

    /// Releases the audio of broadcasts that ended before `before_ms`.
    pub fn release_ended(&self, before_ms: i64) {
        for b in self.read().values().filter(|b| b.expired(before_ms)) {
            b.release_audio();
        }
    }

    /// Forgets broadcasts that ended before `before_ms`; their ids.
    pub fn remove_ended(&self, before_ms: i64) -> Vec<BroadcastId> {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let old: Vec<BroadcastId> = map
            .values()
            .filter(|b| b.header.header().end_ms < before_ms)
            .map(|b| b.id())
            .collect();
        for id in &old {
            map.remove(id);
        }
        old
    }
}

/// Recorded audio goes out at most this far ahead of its presentation
/// time: a terminal that holds the rest of an alert rides out an outage or
/// a failover of up to that length with no hole (a minute at 24 kbit/s is
/// ~180 kB). Below the terminal's playout bound
/// (`codec::PlayoutConfig::max_ahead_us`), so nothing sent is refused.
pub const SEND_AHEAD_US: i64 = 100_000_000;
/// A cursor starts with this much in hand and earns `AHEAD_GAIN` seconds
/// more each second up to `SEND_AHEAD_US`: when an alert starts, every
/// child gets its first segments before any child gets its later ones (the
/// first seconds of an alert are what the whole district must verify at
/// once), and a few seconds in, every child holds many seconds more.
/// Enough for the first segment of recorded audio (500 ms) presenting
/// after a short measured lead: the more each child is sent at once, the
/// longer the last child waits for its first segment.
pub const START_AHEAD_US: i64 = 600_000;
pub const AHEAD_GAIN: i64 = 3;
/// Recorded audio goes out in batches once a child holds a lead: when a
/// child's forwarder wakes for a segment, it also sends what would fall
/// due within the next `BATCH_US`, in one write, so it wakes for recorded
/// audio about once a second. Sent one by one, each 500 ms segment was a
/// full packet, a 200-byte tail and an acknowledgement, every 125 ms for
/// every terminal. Early, never late: a child never holds less than the
/// pacing gives it (what it holds is what rides out an outage). Only while
/// the segment presents `BATCH_MIN_LEAD_US` or more from now: the first
/// seconds of an alert go one by one, each as soon as it may, and between
/// batches a terminal holds more than its liveness horizon
/// (`transport::liveness::EXPECT_WITHIN_US`), so it does not probe a quiet
/// link.
pub const BATCH_US: i64 = 1_000_000;
pub const BATCH_MIN_LEAD_US: i64 = transport::liveness::EXPECT_WITHIN_US + BATCH_US + 500_000;
// A batch goes with BATCH_MIN_LEAD in hand, the next within BATCH: in
// between, a terminal holds more than its liveness horizon.
const _: () = assert!(BATCH_MIN_LEAD_US - BATCH_US > transport::liveness::EXPECT_WITHIN_US);
/// A live segment further behind than this is skipped: the child gets the
/// newest audio instead of a growing backlog.
pub const LIVE_LAG_SEGMENTS: usize = 10;

/// When a segment presenting at `pts_us` may go to a child whose cursor
/// began at `began_us`: once it lies within the cursor's send-ahead
/// (pts ≤ t + min(START + GAIN·(t − began), SEND_AHEAD)).
pub fn send_at(pts_us: i64, began_us: i64) -> i64 {
    ((pts_us - START_AHEAD_US + AHEAD_GAIN * began_us) / (1 + AHEAD_GAIN))
        .max(pts_us - SEND_AHEAD_US)
}

/// What a child's forwarder does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write this frame now.
    Send(Bytes),
    /// Nothing before this time (unix µs).
    Wait(i64),
    /// Nothing until the broadcast changes (a segment arrives).
    Idle,
    /// Everything is sent, or the broadcast was cancelled.
    Done,
}

/// A terminal is not sent a segment presenting this long before now: it
/// could not play it (playout delay and presentation window are under a
/// second), and a late joiner or a restarted terminal would only verify
/// and drop it. Platforms below get everything: they keep broadcasts whole.
pub const TERMINAL_PAST_US: i64 = 2_000_000;

/// One child's position in one broadcast.
#[derive(Debug)]
pub struct Cursor {
    index: usize,
    from_seq: u32,
    began_us: i64,
    /// Segments presenting more than this before now are skipped.
    skip_past_us: Option<i64>,
    pending: VecDeque<(u32, i64, Bytes)>,
    /// A segment went out: the first one goes at once, whatever the lead,
    /// so how soon terminals hold their first audio (which sets the next
    /// lead, `platform::lead`) measures the tree, not this pacing.
    sent_any: bool,
}

impl Cursor {
    /// A child that has the segments below `from_seq` already, starting at
    /// `now_us`. The header goes first, outside the cursor.
    pub fn new(from_seq: u32, now_us: i64) -> Self {
        Cursor {
            index: 0,
            from_seq,
            began_us: now_us,
            skip_past_us: None,
            pending: VecDeque::new(),
            sent_any: false,
        }
    }

    /// The cursor of a terminal: what it can no longer play is not sent.
    pub fn for_terminal(mut self) -> Self {
        self.skip_past_us = Some(TERMINAL_PAST_US);
        self
    }

    pub fn next(&mut self, b: &Broadcast, now_us: i64) -> Step {
        if b.is_cancelled() {
            return Step::Done;
        }
        if self.pending.is_empty() {
            let mut fresh = b.segments_from(self.index);
            self.index += fresh.len();
            if b.is_live() && fresh.len() > LIVE_LAG_SEGMENTS {
                fresh.drain(..fresh.len() - 2);
            }
            let from = self.from_seq;
            self.pending
                .extend(fresh.into_iter().filter(|(seq, _, _)| *seq >= from));
        }
        if let Some(past) = self.skip_past_us {
            while self
                .pending
                .front()
                .is_some_and(|(_, pts, _)| *pts < now_us - past)
            {
                self.pending.pop_front();
            }
        }
        match self.pending.front() {
            Some((_, pts, _)) => {
                let at = if self.sent_any {
                    send_at(*pts, self.began_us)
                } else {
                    *pts - SEND_AHEAD_US
                };
                let early = self.sent_any
                    && !b.is_live()
                    && at <= now_us + BATCH_US
                    && *pts - now_us >= BATCH_MIN_LEAD_US;
                if at > now_us && !early {
                    return Step::Wait(at);
                }
                self.sent_any = true;
                let (_, _, frame) = self.pending.pop_front().expect("front exists");
                Step::Send(frame)
            }
            None if b.is_complete() && self.index >= b.segment_count() => Step::Done,
            None => Step::Idle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarder_sends_the_start_first_then_earns_its_way_ahead() {
        let began = 0;
        // The alert's first frame presents 300 ms from now: what presents
        // in the next 0.6 s goes at once, not the next 5 s.
        assert!(send_at(300_000, began) <= 0);
        assert!(send_at(600_000, began) <= 0);
        assert!(send_at(620_000, began) > 0);
        // Two seconds in, it is 6.6 s ahead; eventually 100 s, no more.
        assert_eq!(send_at(8_600_000, began), 2_000_000);
        assert_eq!(send_at(200_000_000, began), 100_000_000);
        // What is already due (a late joiner, a failover) goes at once.
        assert!(send_at(-10_000_000, began) < 0);
    }

    fn broadcast(segments: u32, live: bool) -> Arc<Broadcast> {
        let now_ms = 1_800_000_000_000;
        let pki = certs::pki::DistrictPki::generate(
            certs::pki::Layout::ONE_OF_EACH,
            (now_ms / 1000 - 60, now_ms / 1000 + 3600),
            now_ms / 1000,
        )
        .unwrap();
        let mut h = protocol::testing::alert_header(
            &pki.district,
            1,
            vec![pki.district.cert().scope()[0]],
            now_ms,
            segments,
        );
        h.audio.live = live;
        let signed = SignedHeader::sign(h, &pki.district).unwrap();
        Broadcast::new(signed, Bytes::new(), now_ms)
    }

    fn frame(seq: u32) -> Bytes {
        Bytes::from(vec![seq as u8])
    }

    #[test]
    fn a_cursor_paces_resumes_and_ends() {
        let b = broadcast(40, false);
        // 40 segments of 200 ms, the first presenting at t = 1 s.
        for seq in 0..40u32 {
            b.push(seq, 1_000_000 + seq as i64 * 200_000, frame(seq), seq == 39);
        }
        let mut c = Cursor::new(0, 0);
        let mut sent = Vec::new();
        // The first segment goes at once, though it presents only at 1 s
        // (how soon terminals hold it sets the next lead); then only what
        // presents within 0.6 s: segment 1 presents at 1.2 s, allowed at
        // (1.2 − 0.6) / 4 = 150 ms.
        while let Step::Send(f) = c.next(&b, 0) {
            sent.push(f[0]);
        }
        assert_eq!(sent, vec![0]);
        assert_eq!(c.next(&b, 100_000), Step::Wait(150_000));
        // The rest follows as time allows, in batches once it may; then the end.
        let mut t = 0;
        loop {
            match c.next(&b, t) {
                Step::Send(f) => sent.push(f[0]),
                Step::Wait(at) => {
                    assert!(at > t);
                    assert!(at >= 1_000_000 + sent.len() as i64 * 200_000 - SEND_AHEAD_US);
                    t = at;
                }
                Step::Idle => panic!("a complete broadcast is never idle"),
                Step::Done => break,
            }
        }
        assert_eq!(sent, (0..40).collect::<Vec<u8>>());
        let last_pts = 1_000_000 + 39 * 200_000;
        assert!(
            t <= send_at(last_pts, 0),
            "the last one no later than it may"
        );
        // A child that already has 30 segments gets the other 10 only.
        let mut c = Cursor::new(30, 10_000_000);
        let mut n = 0;
        while let Step::Send(_) = c.next(&b, 10_000_000) {
            n += 1;
        }
        assert_eq!(n, 10);
        // A terminal joining at 5 s is not sent what presented before 3 s.
        let mut c = Cursor::new(0, 5_000_000).for_terminal();
        let mut first = None;
        while let Step::Send(f) = c.next(&b, 5_000_000) {
            first = first.or(Some(f[0]));
        }
        assert_eq!(first, Some(10), "segment 10 presents at 3 s");
        // A cancelled broadcast ends every cursor at once.
        let mut c = Cursor::new(0, 0);
        b.cancel();
        assert_eq!(c.next(&b, 0), Step::Done);
        // Once ended, its audio leaves memory; its count stays.
        b.release_audio();
        assert_eq!(b.segment_count(), 40);
        assert!(b.segments_from(0).is_empty());
    }

    #[test]
    fn recorded_audio_goes_early_in_batches_once_a_child_holds_a_lead() {
        // Two minutes of 500 ms segments, the first presenting at 1 s.
        let b = broadcast(240, false);
        for seq in 0..240u32 {
            b.push(
                seq,
                1_000_000 + seq as i64 * 500_000,
                frame(seq),
                seq == 239,
            );
        }
        let mut c = Cursor::new(0, 0);
        let (mut t, mut wakes) = (0, Vec::new());
        let mut sent: Vec<(i64, i64)> = Vec::new();
        loop {
            match c.next(&b, t) {
                Step::Send(f) => sent.push((t, 1_000_000 + f[0] as i64 * 500_000)),
                Step::Wait(at) => {
                    assert!(at > t);
                    wakes.push(at);
                    t = at;
                }
                Step::Idle => panic!("a complete broadcast is never idle"),
                Step::Done => break,
            }
        }
        assert_eq!(sent.len(), 240, "every segment went");
        for (i, (at, pts)) in sent.iter().enumerate() {
            let allowed = if i == 0 { *at } else { send_at(*pts, 0) };
            assert!(
                *at <= allowed,
                "segment {i} went later than the pacing allows"
            );
            assert!(
                *at == allowed || (allowed - at <= BATCH_US && pts - at >= BATCH_MIN_LEAD_US),
                "segment {i} went early without its lead: sent {at}, presents {pts}"
            );
        }
        // The start goes as it may (segment by segment), then one wake a
        // second: before batching, one every 125 ms.
        let wakes_after_start = wakes.iter().filter(|w| **w >= 2_000_000).count() as i64;
        let span = wakes.last().copied().unwrap_or(0) - 2_000_000;
        assert!(
            wakes_after_start <= span / BATCH_US + 1,
            "{wakes_after_start} wakes in {span} µs"
        );
        let per_wake =
            sent.iter().filter(|(at, _)| *at >= 2_000_000).count() as i64 / wakes_after_start;
        assert!(per_wake >= 7, "{per_wake} segments a wake");
        assert!(
            wakes.iter().filter(|w| **w < 1_000_000).count() >= 3,
            "the first second is not batched"
        );
    }

    #[test]
    fn a_cursor_waits_for_more_and_a_live_laggard_skips_to_the_newest() {
        let b = broadcast(0, true);
        let mut c = Cursor::new(0, 0);
        assert_eq!(c.next(&b, 0), Step::Idle, "nothing yet");
        for seq in 0..20u32 {
            b.push(seq, seq as i64 * 40_000, frame(seq), false);
        }
        let mut sent = Vec::new();
        while let Step::Send(f) = c.next(&b, 1_000_000) {
            sent.push(f[0]);
        }
        assert_eq!(sent, vec![18, 19], "a backlog of live audio is skipped");
        assert_eq!(c.next(&b, 1_000_000), Step::Idle);
    }
}
