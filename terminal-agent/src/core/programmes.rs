//! What a terminal holds for peacetime programming (R9, R20): the
//! programmes sent ahead with their audio (a bounded cache, the least
//! useful evicted first), the quiet hours of its area, and the plays under
//! way. Sans-IO and time-free like the rest of the core: it says which
//! plays fall due and feeds their cached frames; the core puts them in the
//! arbiter and reports.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use certs::{AreaCode, Tier};
use protocol::quiet::{next_quiet_start, quiet_at};
use protocol::{
    AudioParams, BroadcastClass, BroadcastHeader, BroadcastId, Codec, Held, HeldRevision,
    Inventory, MessageType, Programme, ProgrammeChunk, Quiet, Severity, SignedProgramme,
    SignedQuietHours,
};

/// A play enters the arbiter this long before it starts, so its first
/// frames are decoded in time.
pub const PREROLL_MS: i64 = 2_000;
/// Cached frames are handed to the arbiter this far ahead of their time.
pub const FEED_AHEAD_US: i64 = 20_000_000;
/// Every terminal plays a scheduled frame this long after its time on
/// the schedule minus this: the first sample is heard at the start time
/// itself, in step everywhere (the arbiter's playout delay).
pub const PLAY_DELAY_MS: u16 = 100;
/// Frames per segment handed to the arbiter.
const FEED_FRAMES: usize = 50;
/// Occurrences handled are remembered this long (so a play is begun once).
const HANDLED_KEEP_MS: i64 = 2 * 86_400_000;
/// Programmes and quiet-hours policies a terminal holds at most.
pub const MAX_PROGRAMMES: usize = protocol::programme::MAX_INVENTORY;
pub const MAX_QUIET_POLICIES: usize = 32;

/// One programme as held here: its newest revision and its audio.
struct Cached {
    signed: SignedProgramme,
    signer_tier: Tier,
    chunks: Vec<Option<Arc<Vec<Vec<u8>>>>>,
    bytes: usize,
    /// Its Cached receipt went (once per revision whose audio completed).
    reported: bool,
}

impl Cached {
    fn complete(&self) -> bool {
        self.chunks.iter().all(Option::is_some)
    }

    fn programme(&self) -> &Programme {
        self.signed.programme()
    }
}

/// A play of a programme the core has put in the arbiter.
#[derive(Debug, Clone)]
pub struct Play {
    pub programme: BroadcastId,
    pub revision: u32,
    /// Its start on the schedule.
    pub occurrence_ms: i64,
    /// When it starts here (later when quiet hours held it).
    pub start_ms: i64,
    /// Frames handed to the arbiter so far.
    fed: usize,
    /// It began playing (the arbiter made it current once).
    pub started: bool,
    total: usize,
}

impl Play {
    /// Every frame was handed to the arbiter.
    pub fn fully_fed(&self) -> bool {
        self.fed >= self.total
    }
}

/// An occurrence that fell due, for the core to decide on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub programme: BroadcastId,
    pub revision: u32,
    pub occurrence_ms: i64,
    pub duration_ms: i64,
    /// Its audio is all here.
    pub complete: bool,
    /// Its validity's end.
    pub until_ms: i64,
}

/// What keeping a new revision did.
#[derive(Debug)]
pub struct Inserted {
    /// Plays of it that must stop: withdrawn, or other audio.
    pub stop: Vec<BroadcastId>,
    /// The audio of the revision before went (other chunks).
    pub audio_replaced: bool,
}

/// What taking a chunk did.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    /// Kept; the programme's audio is now complete (true) or not yet.
    Kept {
        complete: bool,
        evicted: Vec<BroadcastId>,
    },
    /// Already held.
    Duplicate,
    /// No room even after evicting everything less useful.
    NoRoom,
}

/// The cache's state, as the status reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheReport {
    pub programmes: u16,
    pub complete: u16,
    pub used_bytes: u64,
    pub limit_bytes: u64,
}

pub struct Programmes {
    held: BTreeMap<BroadcastId, Cached>,
    /// Quiet hours by the signing platform's resource code.
    quiet: BTreeMap<String, SignedQuietHours>,
    plays: BTreeMap<BroadcastId, Play>,
    handled: BTreeSet<(BroadcastId, i64)>,
    limit_bytes: usize,
    used_bytes: usize,
    next_local: u64,
}

fn chunk_bytes(frames: &[Vec<u8>]) -> usize {
    frames.iter().map(|f| f.len() + 2).sum()
}

impl Programmes {
    pub fn new(limit_bytes: usize) -> Self {
        Programmes {
            held: BTreeMap::new(),
            quiet: BTreeMap::new(),
            plays: BTreeMap::new(),
            handled: BTreeSet::new(),
            limit_bytes,
            used_bytes: 0,
            next_local: 1,
        }
    }

    pub fn held_revision(&self, id: BroadcastId) -> Option<HeldRevision> {
        self.held
            .get(&id)
            .map(|c| (u64::from(c.programme().revision), *c.signed.digest()))
    }

    pub fn programme(&self, id: BroadcastId) -> Option<&Programme> {
        self.held.get(&id).map(Cached::programme)
    }

    pub fn signed(&self, id: BroadcastId) -> Option<&SignedProgramme> {
        self.held.get(&id).map(|c| &c.signed)
    }

    /// Room for one more programme (a withdrawn or expired one leaves at
    /// the next prune).
    pub fn has_room_for(&self, id: BroadcastId) -> bool {
        self.held.contains_key(&id) || self.held.len() < MAX_PROGRAMMES
    }

    /// Keeps a verified revision. Its audio stays when the chunk digests
    /// are the same as the revision it replaces.
    pub fn insert(&mut self, signed: SignedProgramme, signer_tier: Tier) -> Inserted {
        let id = signed.id();
        let new_chunks = &signed.programme().audio.chunks;
        let old = self.held.remove(&id);
        let same_audio = old
            .as_ref()
            .is_some_and(|o| o.programme().audio.chunks == *new_chunks);
        let audio_replaced = old.is_some() && !same_audio;
        let (chunks, bytes, reported) = match old {
            Some(o) if same_audio => (o.chunks, o.bytes, o.reported),
            Some(o) => {
                self.used_bytes -= o.bytes;
                (vec![None; new_chunks.len()], 0, false)
            }
            None => (vec![None; new_chunks.len()], 0, false),
        };
        let withdrawn = signed.programme().withdrawn;
        self.held.insert(
            id,
            Cached {
                signed,
                signer_tier,
                chunks,
                bytes,
                reported,
            },
        );
        let stop = self
            .plays
            .iter()
            .filter(|(_, p)| p.programme == id && (withdrawn || audio_replaced))
            .map(|(local, _)| *local)
            .collect();
        Inserted {
            stop,
            audio_replaced,
        }
    }

    /// Programmes restored from the store reported their audio before.
    pub fn mark_reported(&mut self) {
        for c in self.held.values_mut() {
            c.reported = c.complete();
        }
    }

    /// Keeps a verified chunk, evicting the audio of less useful
    /// programmes if the cache is full. `now_ms` ranks usefulness.
    pub fn put_chunk(&mut self, chunk: ProgrammeChunk, now_ms: i64) -> Stored {
        let id = chunk.id;
        let index = chunk.index as usize;
        let Some(c) = self.held.get(&id) else {
            return Stored::NoRoom;
        };
        if c.chunks.get(index).is_none_or(Option::is_some) {
            return Stored::Duplicate;
        }
        let size = chunk_bytes(&chunk.frames);
        let mut evicted = Vec::new();
        if self.used_bytes + size > self.limit_bytes {
            let mine = self.usefulness(id, now_ms);
            let mut victims: Vec<(Usefulness, BroadcastId)> = self
                .held
                .iter()
                .filter(|(other, c)| **other != id && c.bytes > 0)
                .map(|(other, _)| (self.usefulness(*other, now_ms), *other))
                .filter(|(u, _)| *u < mine)
                .collect();
            victims.sort();
            for (_, victim) in victims {
                if self.used_bytes + size <= self.limit_bytes {
                    break;
                }
                self.drop_audio(victim);
                evicted.push(victim);
            }
            if self.used_bytes + size > self.limit_bytes {
                return Stored::NoRoom;
            }
        }
        let Some(c) = self.held.get_mut(&id) else {
            return Stored::NoRoom;
        };
        c.chunks[index] = Some(Arc::new(chunk.frames));
        c.bytes += size;
        self.used_bytes += size;
        // Complete now, and not said before.
        let complete = c.complete() && !c.reported;
        c.reported |= complete;
        Stored::Kept { complete, evicted }
    }

    fn drop_audio(&mut self, id: BroadcastId) {
        if let Some(c) = self.held.get_mut(&id) {
            self.used_bytes -= c.bytes;
            c.bytes = 0;
            c.reported = false;
            c.chunks.iter_mut().for_each(|s| *s = None);
        }
    }

    /// How useful a programme's audio is now: least useful first when
    /// sorted. Withdrawn or over, then none to play, then the one whose
    /// next play is furthest away.
    fn usefulness(&self, id: BroadcastId, now_ms: i64) -> Usefulness {
        let Some(c) = self.held.get(&id) else {
            return Usefulness::Useless;
        };
        let p = c.programme();
        if p.withdrawn || p.until_ms() < now_ms {
            return Usefulness::Useless;
        }
        let dur = p.audio.duration_ms();
        match p
            .schedule
            .current_start(now_ms, dur)
            .or_else(|| p.schedule.next_start(now_ms))
        {
            // A nearer play is more useful: rank by how soon, negated.
            Some(t) => Usefulness::Next(std::cmp::Reverse(t.max(now_ms))),
            None => Usefulness::NoneAhead,
        }
    }

    /// What the upstream should know it holds.
    pub fn inventory(&self) -> Inventory {
        Inventory {
            held: self
                .held
                .iter()
                .map(|(id, c)| Held {
                    id: *id,
                    revision: c.programme().revision,
                    complete: c.complete(),
                })
                .collect(),
        }
    }

    pub fn report(&self) -> CacheReport {
        CacheReport {
            programmes: self.held.len().min(u16::MAX as usize) as u16,
            complete: self
                .held
                .values()
                .filter(|c| !c.programme().withdrawn && c.complete())
                .count()
                .min(u16::MAX as usize) as u16,
            used_bytes: self.used_bytes as u64,
            limit_bytes: self.limit_bytes as u64,
        }
    }

    // --- quiet hours ---

    pub fn quiet_held(&self, signed: &SignedQuietHours) -> Option<HeldRevision> {
        self.quiet
            .get(&signed.signer().body().resource_code.to_string())
            .map(|q| (q.policy().number, *q.digest()))
    }

    /// Keeps a verified policy (the signer's newest). False when there is
    /// no room for another platform's.
    pub fn set_quiet(&mut self, signed: SignedQuietHours) -> bool {
        let key = signed.signer().body().resource_code.to_string();
        if !self.quiet.contains_key(&key) && self.quiet.len() >= MAX_QUIET_POLICIES {
            return false;
        }
        self.quiet.insert(key, signed);
        true
    }

    /// Quiet hours in force for `area` at `now_ms`, from the policies whose
    /// signer still verifies (`trusted`).
    pub fn quiet_at(
        &self,
        area: AreaCode,
        now_ms: i64,
        trusted: impl Fn(&SignedQuietHours) -> bool,
    ) -> Option<Quiet> {
        let policies: Vec<&SignedQuietHours> = self.quiet.values().filter(|q| trusted(q)).collect();
        quiet_at(policies.iter().map(|q| q.policy()), area, now_ms)
    }

    /// The next moment quiet hours begin or end for `area` after `now_ms`.
    pub fn next_quiet_change(&self, area: AreaCode, now_ms: i64) -> Option<i64> {
        let policies = || self.quiet.values().map(|q| q.policy());
        let end = quiet_at(policies(), area, now_ms).map(|q| q.until_ms);
        let start = next_quiet_start(policies(), area, now_ms);
        [end, start].into_iter().flatten().min()
    }

    pub fn quiet_policies(&self) -> impl Iterator<Item = &SignedQuietHours> {
        self.quiet.values()
    }

    // --- plays ---

    /// Occurrences that fall due by `now_ms` (start within the preroll,
    /// not yet over) and were not handled yet; each is handled once.
    pub fn due(&mut self, now_ms: i64) -> Vec<Due> {
        let mut out = Vec::new();
        for (id, c) in &self.held {
            let p = c.programme();
            if p.withdrawn {
                continue;
            }
            let dur = p.audio.duration_ms();
            for at in p
                .schedule
                .starts_between(now_ms - dur + 1, now_ms + PREROLL_MS + 1, 4)
            {
                if self.handled.insert((*id, at)) {
                    out.push(Due {
                        programme: *id,
                        revision: p.revision,
                        occurrence_ms: at,
                        duration_ms: dur,
                        complete: c.complete(),
                        until_ms: p.until_ms(),
                    });
                }
            }
        }
        out
    }

    /// When the next occurrence falls due (its preroll), for the core's
    /// timer.
    pub fn next_due_ms(&self, now_ms: i64) -> Option<i64> {
        self.held
            .values()
            .filter(|c| !c.programme().withdrawn)
            .filter_map(|c| c.programme().schedule.next_start(now_ms))
            .map(|t| t - PREROLL_MS)
            .min()
    }

    /// A play of `due`, starting at `start_ms`: its local id and the header
    /// the arbiter plays it by.
    pub fn begin(
        &mut self,
        due: &Due,
        start_ms: i64,
    ) -> Option<(BroadcastId, BroadcastHeader, Tier)> {
        let c = self.held.get(&due.programme)?;
        let p = c.programme();
        let local = BroadcastId::local(self.next_local);
        self.next_local += 1;
        let frames_per_segment = FEED_FRAMES as u8;
        let segments = (p.audio.total_frames as usize).div_ceil(FEED_FRAMES) as u32;
        let header = BroadcastHeader {
            id: local,
            msg_type: MessageType::Broadcast,
            related: None,
            class: BroadcastClass::Daily,
            event_type: p.event_type,
            severity: Severity::Unknown,
            issued_at_ms: p.issued_at_ms,
            start_ms,
            // A moment past the last frame's time, for the playout delay.
            end_ms: start_ms + due.duration_ms + 1_000,
            targets: p.targets.clone(),
            language: p.language.clone(),
            title: p.title.clone(),
            text: String::new(),
            audio: AudioParams {
                codec: Codec::Opus,
                sample_rate: p.audio.sample_rate,
                frame_ms: p.audio.frame_ms,
                channels: 1,
                frames_per_segment,
                live: false,
                total_segments: segments.max(1),
                playout_delay_ms: PLAY_DELAY_MS,
            },
            volume_hint: p.volume_hint,
        };
        self.plays.insert(
            local,
            Play {
                programme: due.programme,
                revision: due.revision,
                occurrence_ms: due.occurrence_ms,
                start_ms,
                fed: 0,
                started: false,
                total: p.audio.total_frames as usize,
            },
        );
        Some((local, header, c.signer_tier))
    }

    pub fn play(&self, local: BroadcastId) -> Option<&Play> {
        self.plays.get(&local)
    }

    pub fn play_mut(&mut self, local: BroadcastId) -> Option<&mut Play> {
        self.plays.get_mut(&local)
    }

    pub fn end_play(&mut self, local: BroadcastId) -> Option<Play> {
        self.plays.remove(&local)
    }

    pub fn plays(&self) -> impl Iterator<Item = (&BroadcastId, &Play)> {
        self.plays.iter()
    }

    /// The next frames of play `local` presenting by `horizon_us`: (pts,
    /// frames, last), in order.
    pub fn feed(&mut self, local: BroadcastId, horizon_us: i64) -> Vec<(i64, Vec<Vec<u8>>, bool)> {
        let mut out = Vec::new();
        let Some(play) = self.plays.get_mut(&local) else {
            return out;
        };
        let Some(c) = self.held.get(&play.programme) else {
            return out;
        };
        let a = &c.programme().audio;
        let frame_us = a.frame_ms as i64 * 1000;
        let origin_us = play.start_ms * 1000 - PLAY_DELAY_MS as i64 * 1000;
        let total = a.total_frames as usize;
        let per_chunk = a.frames_per_chunk.max(1) as usize;
        while play.fed < total {
            let pts = origin_us + play.fed as i64 * frame_us;
            if pts > horizon_us {
                break;
            }
            let n = FEED_FRAMES.min(total - play.fed);
            // Frames whose chunk was evicted under the play are missing:
            // each run of those present goes with its own time, and the
            // gap is concealed.
            let mut run: Vec<Vec<u8>> = Vec::with_capacity(n);
            let mut run_start = play.fed;
            for k in play.fed..play.fed + n {
                let frame = c
                    .chunks
                    .get(k / per_chunk)
                    .and_then(Option::as_ref)
                    .and_then(|chunk| chunk.get(k % per_chunk));
                match frame {
                    Some(f) => run.push(f.clone()),
                    None => {
                        if !run.is_empty() {
                            let at = origin_us + run_start as i64 * frame_us;
                            out.push((at, std::mem::take(&mut run), false));
                        }
                        run_start = k + 1;
                    }
                }
            }
            play.fed += n;
            let last = play.fed >= total;
            if !run.is_empty() {
                out.push((origin_us + run_start as i64 * frame_us, run, last));
            }
        }
        out
    }

    /// Forgets what is over at `now_ms`: programmes past their validity
    /// (returned, for the store), occurrences handled long ago.
    pub fn prune(&mut self, now_ms: i64) -> Vec<BroadcastId> {
        let over: Vec<BroadcastId> = self
            .held
            .iter()
            .filter(|(_, c)| c.programme().until_ms() < now_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in &over {
            if let Some(c) = self.held.remove(id) {
                self.used_bytes -= c.bytes;
            }
        }
        self.handled
            .retain(|(_, at)| *at >= now_ms - HANDLED_KEEP_MS);
        over
    }
}

/// Orders programmes by how useful their audio is (least first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Usefulness {
    Useless,
    NoneAhead,
    /// Its next (or current) play starts then: sooner is more useful.
    Next(std::cmp::Reverse<i64>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::schedule::{local_day, Schedule, EVERY_DAY};
    use protocol::testing::{fake_frame, programme};

    fn pki() -> &'static certs::pki::DistrictPki {
        static PKI: std::sync::OnceLock<certs::pki::DistrictPki> = std::sync::OnceLock::new();
        PKI.get_or_init(|| {
            certs::pki::DistrictPki::generate(
                certs::pki::Layout {
                    towns: 1,
                    villages: 1,
                    terminals: 1,
                },
                (NOW / 1000 - 86_400, NOW / 1000 + 86_400 * 30),
                NOW / 1000,
            )
            .unwrap()
        })
    }

    const NOW: i64 = 1_800_000_000_000;

    fn signed(seq: u16, minute: u32, frames: usize) -> SignedProgramme {
        let v = &pki().towns[0].villages[0];
        let day = local_day(NOW, 480) as u32;
        let s = Schedule {
            utc_offset_minutes: 480,
            first_day: day,
            last_day: day + 6,
            weekdays: EVERY_DAY,
            times: vec![minute * 60],
        };
        let f: Vec<Vec<u8>> = (0..frames).map(fake_frame).collect();
        SignedProgramme::sign(
            programme(&v.identity, seq, vec![v.area], NOW, s, &f),
            &v.identity,
        )
        .unwrap()
    }

    fn fill(p: &mut Programmes, s: &SignedProgramme, now: i64) -> Vec<Stored> {
        let f: Vec<Vec<u8>> = (0..s.programme().audio.total_frames as usize)
            .map(fake_frame)
            .collect();
        f.chunks(50)
            .enumerate()
            .map(|(i, c)| {
                p.put_chunk(
                    ProgrammeChunk {
                        id: s.id(),
                        index: i as u16,
                        frames: c.to_vec(),
                    },
                    now,
                )
            })
            .collect()
    }

    #[test]
    fn a_full_cache_evicts_the_programme_played_furthest_ahead() {
        // 100 frames of 62 bytes each: 6,200 bytes a programme; room for two.
        let mut p = Programmes::new(13_000);
        let soon = signed(1, 8 * 60, 100);
        let later = signed(2, 20 * 60, 100);
        let middle = signed(3, 12 * 60, 100);
        let morning = protocol::schedule::instant(local_day(NOW, 480), 7 * 60, 480);
        for s in [&soon, &later, &middle] {
            p.insert(s.clone(), Tier::Village);
        }
        assert!(matches!(
            fill(&mut p, &soon, morning).last(),
            Some(Stored::Kept { complete: true, .. })
        ));
        assert!(matches!(
            fill(&mut p, &later, morning).last(),
            Some(Stored::Kept { complete: true, .. })
        ));
        // The 12:00 programme pushes out the 20:00 one, not the 08:00 one.
        let results = fill(&mut p, &middle, morning);
        assert!(results
            .iter()
            .any(|r| matches!(r, Stored::Kept { evicted, .. } if evicted == &vec![later.id()])));
        let inv = p.inventory();
        assert!(inv.get(soon.id()).unwrap().complete);
        assert!(inv.get(middle.id()).unwrap().complete);
        assert!(!inv.get(later.id()).unwrap().complete);
        // The 20:00 one cannot push out either nearer one.
        let back = fill(&mut p, &later, morning);
        assert_eq!(back[0], Stored::NoRoom);
        let r = p.report();
        assert_eq!((r.programmes, r.complete), (3, 2));
        assert!(r.used_bytes <= r.limit_bytes);
    }

    #[test]
    fn a_new_revision_keeps_identical_audio_and_a_withdrawal_stops_plays() {
        let mut p = Programmes::new(1 << 20);
        let s1 = signed(1, 8 * 60, 120);
        p.insert(s1.clone(), Tier::Village);
        fill(&mut p, &s1, NOW);
        let mut prog = s1.programme().clone();
        prog.revision = 2;
        prog.schedule.times = vec![9 * 3600];
        let v = &pki().towns[0].villages[0].identity;
        let s2 = SignedProgramme::sign(prog.clone(), v).unwrap();
        let kept = p.insert(s2, Tier::Village);
        assert!(kept.stop.is_empty() && !kept.audio_replaced);
        assert!(p.inventory().get(s1.id()).unwrap().complete, "audio kept");
        let day = local_day(NOW, 480);
        let at = protocol::schedule::instant(day + 1, 9 * 60, 480);
        let due = p.due(at);
        assert_eq!(due.len(), 1);
        assert_eq!(p.due(at), vec![], "handled once");
        let (local, header, _) = p.begin(&due[0], due[0].occurrence_ms).unwrap();
        assert!(local.is_local());
        assert_eq!(header.start_ms, at);
        // The first frames present so that the first is heard at 09:00.
        let fed = p.feed(local, at * 1000);
        assert_eq!(fed[0].0, at * 1000 - PLAY_DELAY_MS as i64 * 1000);
        assert_eq!(fed[0].1.len(), 50);
        prog.revision = 3;
        prog.withdrawn = true;
        prog.audio = protocol::ProgrammeAudio::NONE;
        let s3 = SignedProgramme::sign(prog, v).unwrap();
        assert_eq!(p.insert(s3, Tier::Village).stop, vec![local]);
        assert_eq!(p.report().used_bytes, 0);
    }
}
