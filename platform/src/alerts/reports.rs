//! Proactive state reports (GY/T 384): for each message an upper platform
//! sent us, an EBMStateResponse posted to that platform unasked when its
//! state here changes (waiting, playing, done, failed, cancelled) and, while
//! it plays, when its coverage moves (at most every 30 s), so the city sees
//! what the district did without polling. Signed with the district's SM2
//! key like every answer; the upper platform's EBDResponse is verified
//! against its certificate before a report counts as delivered.
//!
//! What is owed is kept in the store (`gyt_reports`) from the moment the
//! alert is taken, so a restart or an unreachable upper platform loses no
//! report: it is sent again with a growing back-off, for up to a day.
//! The rule of when to send ([`Pending::due`]) is a pure function of the
//! entry, the observed state and `now`; the loop ([`run`]) does the I/O.

use std::sync::Arc;
use std::time::Duration;

use gateway::ebd::{self, EbdBody, Envelope, ResultCode, StateReport};
use protocol::control::PlayState as BrdState;
use serde::{Deserialize, Serialize};

use super::outbound;
use super::{Gateway, Source};
use crate::audit::{Outcome, Record};

/// While a message plays, its coverage is reported at most this often.
pub const COVERAGE_EVERY_MS: i64 = 30_000;
/// After its final state is delivered, a message's coverage is still
/// reported for this long (the last receipts come in after the end).
pub const SETTLE_MS: i64 = 60_000;
/// The first retry after a failed post; doubled up to [`MAX_BACKOFF_MS`].
pub const FIRST_BACKOFF_MS: i64 = 5_000;
pub const MAX_BACKOFF_MS: i64 = 300_000;
/// Reports for a message are given up after failing for this long.
pub const GIVE_UP_AFTER_MS: i64 = 24 * 3600 * 1000;
/// Most messages whose reports are owed at once (the oldest give way).
pub const MAX_PENDING: usize = 1024;
/// One post, connect to the answer's last byte.
pub const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the loop looks at what is owed.
pub const TICK: Duration = Duration::from_secs(2);
/// The most an upper platform's answer may hold.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// A report the upper platform accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    pub state: u8,
    /// Terminals that have it, playing, finished.
    pub coverage: [u32; 3],
    pub at_ms: i64,
}

/// The reports owed for one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The configured source it came from.
    pub source: String,
    pub ebm_id: String,
    /// The upper platform's resource code (our EBD's DEST).
    pub upper: String,
    pub since_ms: i64,
    pub delivered: Option<Delivered>,
    pub failures: u32,
    /// When the current run of failed posts began.
    pub failing_since_ms: Option<i64>,
    pub next_try_ms: i64,
}

/// What to do with an entry now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing yet.
    Wait,
    /// Post a report of the observed state.
    Send,
    /// Done with it: its final state and coverage were delivered.
    Retire,
    /// Undeliverable for a day; drop it, saying so.
    GiveUp,
}

fn terminal(state: u8) -> bool {
    [
        BrdState::Done.code(),
        BrdState::Failed.code(),
        BrdState::Cancelled.code(),
    ]
    .contains(&state)
}

impl Pending {
    pub fn new(source: &str, ebm_id: &str, upper: &str, now_ms: i64) -> Pending {
        Pending {
            source: source.into(),
            ebm_id: ebm_id.into(),
            upper: upper.into(),
            since_ms: now_ms,
            delivered: None,
            failures: 0,
            failing_since_ms: None,
            next_try_ms: now_ms,
        }
    }

    /// The store's key: one entry per source and message.
    pub fn key(&self) -> String {
        Self::key_of(&self.source, &self.ebm_id)
    }

    /// The key of the entry for `ebm_id` from the source named `source`.
    pub fn key_of(source: &str, ebm_id: &str) -> String {
        format!("{source}\u{0}{ebm_id}")
    }

    /// The rule: a new state is reported at once, a coverage change at
    /// most every [`COVERAGE_EVERY_MS`]; a final state settles for
    /// [`SETTLE_MS`], then the entry retires. A failed post waits out its
    /// back-off.
    pub fn due(&self, state: u8, coverage: [u32; 3], now_ms: i64) -> Due {
        if self
            .failing_since_ms
            .is_some_and(|t| now_ms - t >= GIVE_UP_AFTER_MS)
        {
            return Due::GiveUp;
        }
        let Some(d) = self.delivered else {
            return if now_ms >= self.next_try_ms {
                Due::Send
            } else {
                Due::Wait
            };
        };
        let changed =
            d.state != state || (d.coverage != coverage && now_ms - d.at_ms >= COVERAGE_EVERY_MS);
        if changed {
            if now_ms >= self.next_try_ms {
                Due::Send
            } else {
                Due::Wait
            }
        } else if terminal(d.state) && d.state == state && now_ms - d.at_ms >= SETTLE_MS {
            Due::Retire
        } else {
            Due::Wait
        }
    }

    /// The upper platform accepted a report of `state` and `coverage`.
    pub fn delivered(&mut self, state: u8, coverage: [u32; 3], now_ms: i64) {
        self.delivered = Some(Delivered {
            state,
            coverage,
            at_ms: now_ms,
        });
        self.failures = 0;
        self.failing_since_ms = None;
        self.next_try_ms = now_ms;
    }

    /// A post failed: the next waits 5 s, 10 s, 20 s, … up to 5 minutes.
    pub fn failed(&mut self, now_ms: i64) {
        self.failures = self.failures.saturating_add(1);
        self.failing_since_ms.get_or_insert(now_ms);
        let backoff = FIRST_BACKOFF_MS
            .saturating_mul(1i64 << self.failures.saturating_sub(1).min(20))
            .min(MAX_BACKOFF_MS);
        self.next_try_ms = now_ms + backoff;
    }
}

/// The store of owed reports.
#[derive(Clone)]
pub struct Owed {
    tree: sled::Tree,
}

impl Owed {
    pub fn open(db: &sled::Db) -> sled::Result<Owed> {
        Ok(Owed {
            tree: db.open_tree("gyt_reports")?,
        })
    }

    /// Starts owing reports for a message (once: taking the same message
    /// again changes nothing), durably. The oldest give way past
    /// [`MAX_PENDING`].
    pub fn track(&self, p: &Pending) -> sled::Result<()> {
        let value = serde_json::to_vec(p).unwrap_or_default();
        let _ =
            self.tree
                .compare_and_swap(p.key().as_bytes(), None as Option<&[u8]>, Some(value))?;
        if self.tree.len() > MAX_PENDING {
            let all = self.all();
            let mut by_age: Vec<_> = all.iter().map(|p| (p.since_ms, p.key())).collect();
            by_age.sort();
            for (_, k) in by_age.iter().take(all.len().saturating_sub(MAX_PENDING)) {
                tracing::warn!("state report for {k:?} dropped: over {MAX_PENDING} owed");
                self.tree.remove(k.as_bytes())?;
            }
        }
        self.tree.flush()?;
        Ok(())
    }

    /// Every entry (an unreadable one is dropped, logged).
    pub fn all(&self) -> Vec<Pending> {
        let mut out = Vec::new();
        for (k, v) in self.tree.iter().flatten() {
            match serde_json::from_slice::<Pending>(&v) {
                Ok(p) => out.push(p),
                Err(e) => {
                    tracing::error!("an owed state report is unreadable ({e}); dropped");
                    let _ = self.tree.remove(k);
                }
            }
        }
        out
    }

    pub fn put(&self, p: &Pending) -> sled::Result<()> {
        self.tree.insert(
            p.key().as_bytes(),
            serde_json::to_vec(p).unwrap_or_default(),
        )?;
        Ok(())
    }

    pub fn remove(&self, p: &Pending) -> sled::Result<()> {
        self.tree.remove(p.key().as_bytes())?;
        Ok(())
    }
}

impl Gateway {
    /// After an EBM from `source` was taken: its state will be reported to
    /// the source's `report_url`, if it has one.
    pub fn owe_reports(&self, source: &Source, ebm_id: &str, upper: &str) {
        if source.report_to.is_none() {
            return;
        }
        let p = Pending::new(&source.name, ebm_id, upper, (self.workflow.now)());
        if let Err(e) = self.owed.track(&p) {
            tracing::error!("state reports for EBM {ebm_id} not kept: {e}");
        }
    }

    /// Our EBMStateResponse for `p`, unasked (no related EBD), packed.
    fn report_package(&self, p: &Pending, state: BrdState, desc: &str, c: [u32; 3]) -> Vec<u8> {
        let id = self.next_ebd_id();
        let now = (self.workflow.now)();
        let xml = ebd::state_response(
            &Envelope {
                id: &id,
                src: &self.resource_code,
                dest: &p.upper,
                time_ms: now,
                related: None,
            },
            &StateReport {
                ebm_id: &p.ebm_id,
                state,
                desc,
                terminals: c[0],
                playing: c[1],
                finished: c[2],
            },
        );
        self.pack(&id, &xml)
    }

    fn audit_report(&self, source: &Source, p: &Pending, outcome: Outcome, detail: String) {
        let r = Record::new(&source.actor(), "alert.report", format!("EBM {}", p.ebm_id))
            .outcome(outcome)
            .detail(detail);
        if let Err(e) = self.workflow.record(r) {
            tracing::error!("recording a state report: {e}");
        }
    }
}

/// Whether an upper platform's answer accepts our report: an EBD package
/// signed by `source`'s certificate, an EBDResponse with code 0 or 1.
fn accepted(g: &Gateway, source: &Source, answer: &[u8]) -> Result<(), String> {
    let v = gateway::gyt::receive(answer, &g.trust).map_err(|r| {
        format!(
            "its answer is not a verified package (code {}): {}",
            r.code.code(),
            r.reason
        )
    })?;
    if v.cert_sn != source.cert_sn {
        return Err(format!(
            "its answer is signed with certificate {}, not {}'s",
            v.cert_sn, source.name
        ));
    }
    match v.ebd.body {
        EbdBody::Response { code, .. }
            if code == ResultCode::Received.code() || code == ResultCode::Verified.code() =>
        {
            Ok(())
        }
        EbdBody::Response { code, desc } => Err(format!("refused with result code {code}: {desc}")),
        other => Err(format!("answered with {other:?}, not an EBDResponse")),
    }
}

/// Posts what is owed, every [`TICK`], until `shutdown`.
pub async fn run(g: Arc<Gateway>, shutdown: impl std::future::Future<Output = ()>) {
    if !g.sources.iter().any(|s| s.report_to.is_some()) {
        return;
    }
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        // A round may wait on a slow upper platform: the shutdown does not
        // (what was delivered is kept entry by entry; a post cut short is
        // sent again after the restart).
        tokio::select! {
            _ = &mut shutdown => return,
            _ = round(&g) => {}
        }
    }
}

/// One look at every owed report; a source whose post failed is not
/// tried again in the same round.
pub async fn round(g: &Arc<Gateway>) {
    let g2 = g.clone();
    let Ok(work) = tokio::task::spawn_blocking(move || plan(&g2)).await else {
        return;
    };
    let mut unreachable: Vec<usize> = Vec::new();
    for Work {
        mut p,
        source: at,
        due,
        state,
    } in work
    {
        let source = &g.sources[at];
        let Some(target) = source.report_to.clone() else {
            continue;
        };
        let now = (g.workflow.now)();
        match due {
            Due::Wait => continue,
            Due::Retire => {
                let _ = g.owed.remove(&p);
                continue;
            }
            Due::GiveUp => {
                g.audit_report(
                    source,
                    &p,
                    Outcome::Failed,
                    format!(
                        "state reports given up: not delivered for {} h",
                        GIVE_UP_AFTER_MS / 3_600_000
                    ),
                );
                let _ = g.owed.remove(&p);
                continue;
            }
            Due::Send if unreachable.contains(&at) => {
                p.failed(now);
                let _ = g.owed.put(&p);
                continue;
            }
            Due::Send => {}
        }
        let (brd, desc, coverage) = state;
        let g2 = g.clone();
        let p2 = p.clone();
        let package =
            match tokio::task::spawn_blocking(move || g2.report_package(&p2, brd, &desc, coverage))
                .await
            {
                Ok(b) => b,
                Err(_) => continue,
            };
        let post = outbound::Request {
            body: Some(("application/x-tar", package)),
            max_bytes: MAX_ANSWER_BYTES,
        };
        let result = match tokio::time::timeout(POST_TIMEOUT, outbound::send(&target, post)).await {
            Err(_) => Err(format!("no answer within {POST_TIMEOUT:?}")),
            Ok(Err(outbound::Failure::TooLarge)) => {
                Err(format!("its answer is over {MAX_ANSWER_BYTES} bytes"))
            }
            Ok(Err(outbound::Failure::Failed(why))) => Err(why),
            Ok(Ok(answer)) => accepted(g, source, &answer),
        };
        g.counters.count_report(result.is_ok());
        let now = (g.workflow.now)();
        match result {
            Ok(()) => {
                let changed = p.delivered.is_none_or(|d| d.state != brd.code());
                if changed {
                    g.audit_report(
                        source,
                        &p,
                        Outcome::Ok,
                        format!(
                            "EBMStateResponse delivered to {}: BrdState {} ({}), coverage {}/{}/{}",
                            source.name,
                            brd.code(),
                            crate::console::from_above::brd_state(
                                crate::console::i18n::catalog(crate::console::i18n::Lang::Zh),
                                brd
                            ),
                            coverage[1],
                            coverage[2],
                            coverage[0]
                        ),
                    );
                }
                p.delivered(brd.code(), coverage, now);
            }
            Err(why) => {
                if p.failures == 0 {
                    g.audit_report(
                        source,
                        &p,
                        Outcome::Failed,
                        format!(
                            "EBMStateResponse not delivered to {}: {why}; sent again with back-off",
                            source.name
                        ),
                    );
                }
                tracing::warn!(source = %source.name, ebm = %p.ebm_id, "state report not delivered: {why}");
                unreachable.push(at);
                p.failed(now);
            }
        }
        if let Err(e) = g.owed.put(&p) {
            tracing::error!("keeping a state report's progress: {e}");
        }
    }
}

/// An owed entry, the index of its source (one that reports), its state
/// here and what is due.
struct Work {
    p: Pending,
    source: usize,
    due: Due,
    state: (BrdState, String, [u32; 3]),
}

/// Every owed entry with its state here and what is due; entries of a
/// source no longer configured to be reported to are dropped (blocking:
/// reads the store).
fn plan(g: &Gateway) -> Vec<Work> {
    let now = (g.workflow.now)();
    let mut out = Vec::new();
    for p in g.owed.all() {
        let Some(at) = g
            .sources
            .iter()
            .position(|s| s.name == p.source && s.report_to.is_some())
        else {
            let _ = g.owed.remove(&p);
            continue;
        };
        let state = match g.state_of(&g.sources[at], &p.ebm_id) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(ebm = %p.ebm_id, "state of an alert from above: {e}");
                continue;
            }
        };
        out.push(Work {
            due: p.due(state.0.code(), state.2, now),
            p,
            source: at,
            state,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;
    const WAITING: u8 = 1;
    const PLAYING: u8 = 2;
    const DONE: u8 = 3;

    #[test]
    fn a_new_state_is_sent_at_once_coverage_at_most_every_30_s() {
        let mut p = Pending::new("市平台", "1", "U", T0);
        assert_eq!(p.due(WAITING, [0; 3], T0), Due::Send);
        p.delivered(WAITING, [0; 3], T0);
        assert_eq!(p.due(WAITING, [0; 3], T0 + 1_000), Due::Wait);
        // Playing: at once.
        assert_eq!(p.due(PLAYING, [10, 3, 0], T0 + 2_000), Due::Send);
        p.delivered(PLAYING, [10, 3, 0], T0 + 2_000);
        // Coverage moves: not before 30 s have passed.
        assert_eq!(p.due(PLAYING, [10, 8, 0], T0 + 20_000), Due::Wait);
        assert_eq!(p.due(PLAYING, [10, 8, 0], T0 + 32_000), Due::Send);
        p.delivered(PLAYING, [10, 8, 0], T0 + 32_000);
        // Done: at once, then it settles for a minute and retires.
        assert_eq!(p.due(DONE, [10, 0, 9], T0 + 33_000), Due::Send);
        p.delivered(DONE, [10, 0, 9], T0 + 33_000);
        assert_eq!(p.due(DONE, [10, 0, 9], T0 + 60_000), Due::Wait);
        // A late receipt within the minute is reported (after 30 s).
        assert_eq!(p.due(DONE, [10, 0, 10], T0 + 63_000), Due::Send);
        p.delivered(DONE, [10, 0, 10], T0 + 63_000);
        assert_eq!(p.due(DONE, [10, 0, 10], T0 + 100_000), Due::Wait);
        assert_eq!(p.due(DONE, [10, 0, 10], T0 + 123_000), Due::Retire);
    }

    #[test]
    fn a_failed_post_backs_off_and_a_day_later_gives_up() {
        let mut p = Pending::new("市平台", "1", "U", T0);
        let mut now = T0;
        let mut waits = Vec::new();
        for _ in 0..9 {
            assert_eq!(p.due(WAITING, [0; 3], now), Due::Send);
            p.failed(now);
            assert_eq!(p.due(WAITING, [0; 3], now + 1), Due::Wait);
            waits.push(p.next_try_ms - now);
            now = p.next_try_ms;
        }
        assert_eq!(
            waits,
            [5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000, 300_000]
        );
        // A delivery resets the back-off.
        p.delivered(WAITING, [0; 3], now);
        assert_eq!((p.failures, p.due(PLAYING, [0; 3], now)), (0, Due::Send));
        // Days of waiting for a scheduled start are not a failure ...
        assert_eq!(
            p.due(WAITING, [0; 3], now + 3 * GIVE_UP_AFTER_MS),
            Due::Wait
        );
        // ... a day of failed posts is.
        p.failed(now + 1_000);
        assert_eq!(
            p.due(PLAYING, [0; 3], now + 1_000 + GIVE_UP_AFTER_MS - 1),
            Due::Send
        );
        assert_eq!(
            p.due(PLAYING, [0; 3], now + 1_000 + GIVE_UP_AFTER_MS),
            Due::GiveUp
        );
    }

    #[test]
    fn owed_reports_survive_reopening_and_are_kept_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = Pending::new("市平台", "1", "U", T0);
        {
            let db = sled::open(dir.path()).unwrap();
            let owed = Owed::open(&db).unwrap();
            owed.track(&p).unwrap();
            let mut later = p.clone();
            later.delivered(WAITING, [0; 3], T0 + 5);
            owed.put(&later).unwrap();
            // Taking the same message again does not reset what was sent.
            owed.track(&Pending::new("市平台", "1", "U", T0 + 9))
                .unwrap();
            db.flush().unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        let all = Owed::open(&db).unwrap().all();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].delivered.map(|d| d.at_ms), Some(T0 + 5));
    }
}
