//! Peacetime programming at the terminal core, in simulated time (R9,
//! R20): a cached schedule plays at its times with no link and across a
//! restart, an emergency pre-empts it and it resumes in step, a
//! withdrawal stops it, another village's key is refused, and quiet hours
//! hold or skip what is not an emergency.

mod sim;

use certs::pki::Layout;
use protocol::schedule::{instant, local_day, Schedule, EVERY_DAY, WEEKDAYS};
use protocol::{
    PlayOutcome, PlayReason, ProgrammeAudio, ProgrammeChunk, QuietHours, QuietMode,
    SignedProgramme, SignedQuietHours,
};
use sim::*;

/// The local day (China time) of `T0`: Friday 2027-01-15, 16:00 there.
fn today() -> i64 {
    local_day(T0 / 1000, 480)
}

/// µs of `minute` after local midnight, `day` days after today.
fn at(day: i64, minute: u16) -> i64 {
    instant(today() + day, minute, 480) * 1000
}

const S: i64 = 1_000_000;

/// A signed programme and its frames as an upstream sends them.
struct Prog {
    signed: SignedProgramme,
    frames: Vec<RawFrame>,
}

fn prog_from(
    by: &certs::Identity,
    seq: u16,
    targets: Vec<certs::AreaCode>,
    schedule: Schedule,
    audio: &[Vec<u8>],
) -> Prog {
    let p = protocol::testing::programme(by, seq, targets, T0 / 1000, schedule, audio);
    let signed = SignedProgramme::sign_unchecked(p.clone(), by).unwrap();
    let mut frames = vec![raw(&Message::Programme(signed.clone()))];
    for (i, c) in audio.chunks(50).enumerate() {
        frames.push(raw(&Message::ProgrammeChunk(ProgrammeChunk {
            id: p.id,
            index: i as u16,
            frames: c.to_vec(),
        })));
    }
    Prog { signed, frames }
}

/// A programme of village 0 for its own area.
fn prog(w: &World, seq: u16, schedule: Schedule, audio: &[Vec<u8>]) -> Prog {
    let v = &w.pki.towns[0].villages[0];
    prog_from(&v.identity, seq, vec![v.area], schedule, audio)
}

fn daily_at(minutes: Vec<u16>, days: i64, weekdays: u8) -> Schedule {
    Schedule {
        utc_offset_minutes: 480,
        first_day: today() as u32,
        last_day: (today() + days) as u32,
        weekdays,
        times: minutes.into_iter().map(|m| m as u32 * 60).collect(),
    }
}

fn fake(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(protocol::testing::fake_frame).collect()
}

impl Sim {
    fn deliver_prog(&mut self, t: i64, p: &Prog) {
        for f in &p.frames {
            assert!(!self.deliver(t, f), "refused");
        }
    }

    /// What went up about plays of `id`: (occurrence µs, outcome, reason).
    fn plays_of(&self, id: BroadcastId) -> Vec<(i64, PlayOutcome, PlayReason)> {
        self.play_receipts
            .iter()
            .filter(|(r, _)| r.programme == id && r.occurrence_ms != 0)
            .map(|(r, _)| (r.occurrence_ms * 1000, r.outcome, r.reason))
            .collect()
    }

    /// Play times of the audio the loudspeaker got between `from` and `to`.
    fn heard_between(&self, from: i64, to: i64) -> Vec<&Chunk> {
        self.chunks
            .iter()
            .filter(|c| c.play_at_us >= from && c.play_at_us < to)
            .collect()
    }
}

#[test]
fn a_weekly_schedule_plays_at_its_times_while_the_link_is_down() {
    let w = World::with(Layout::ONE_OF_EACH, 30 * 86_400);
    let (pcm, audio) = tone(523.0, 3.0);
    // Weekdays at 07:00 and 18:00, for nine days from Friday.
    let p = prog(&w, 1, daily_at(vec![7 * 60, 18 * 60], 9, WEEKDAYS), &audio);
    let mut sim = Sim::new(w.core(Journal::default()));
    sim.core.handle_link(true, T0);
    sim.deliver_prog(T0, &p);
    // Cached, and said so; then the link goes for good.
    let id = p.signed.id();
    assert!(sim
        .play_receipts
        .iter()
        .any(|(r, _)| r.programme == id && r.outcome == PlayOutcome::Cached));
    sim.core.handle_link(false, T0 + S);
    sim.run_until(at(8, 0));
    // Friday 18:00, then Monday to Friday twice a day; not the weekend.
    let mut expected = vec![at(0, 18 * 60)];
    for d in 3..8 {
        expected.extend([at(d, 7 * 60), at(d, 18 * 60)]);
    }
    let starts: Vec<i64> = sim
        .plays_of(id)
        .into_iter()
        .filter(|(_, o, _)| *o == PlayOutcome::Started)
        .map(|(t, _, _)| t)
        .collect();
    assert_eq!(starts, expected);
    for t in &expected {
        let heard = sim.heard_between(*t, t + 10 * S);
        assert_eq!(heard.len(), audio.len(), "every frame of the play at {t}");
        // The first sample is heard at the start time itself, frames on.
        assert_eq!(heard[0].play_at_us, *t);
        assert!(heard
            .windows(2)
            .all(|c| c[1].play_at_us - c[0].play_at_us == FRAME));
    }
    let monday = sim.heard_between(at(3, 7 * 60), at(3, 7 * 60) + 10 * S);
    let (corr, _) = codec::measure::best_correlation(&pcm, &pcm_of(&monday), 800);
    assert!(corr > 0.9, "the cached audio is what plays: {corr}");
    let finished = sim
        .plays_of(id)
        .iter()
        .filter(|(_, o, _)| *o == PlayOutcome::Finished)
        .count();
    assert_eq!(finished, expected.len());
    // Nothing played on Saturday or Sunday.
    assert!(sim.heard_between(at(1, 0), at(3, 0)).is_empty());
}

#[test]
fn an_emergency_preempts_a_scheduled_play_which_resumes_in_step() {
    let w = World::new();
    let p = prog(&w, 1, daily_at(vec![18 * 60], 1, EVERY_DAY), &fake(500));
    let mut sim = Sim::new(w.core(Journal::default()));
    sim.deliver_prog(T0, &p);
    let start = at(0, 18 * 60);
    let (_, alarm) = tone(880.0, 2.0);
    let e = cast(
        &w,
        7,
        BroadcastClass::Emergency,
        Severity::Red,
        start + 2 * S,
        alarm,
    );
    sim.deliver_all(start + 2 * S, &e);
    sim.run_until(start + 20 * S);
    let id = p.signed.id();
    let outcomes: Vec<PlayOutcome> = sim.plays_of(id).iter().map(|(_, o, _)| *o).collect();
    assert_eq!(
        outcomes,
        [
            PlayOutcome::Started,
            PlayOutcome::Preempted,
            PlayOutcome::Resumed,
            PlayOutcome::Finished
        ]
    );
    let alarm_heard = sim.played(e.id);
    assert_eq!(alarm_heard.len(), e.frames, "the emergency played whole");
    let alarm_from = alarm_heard[0].play_at_us;
    let alarm_to = alarm_heard[alarm_heard.len() - 1].play_at_us;
    let programme: Vec<&Chunk> = sim
        .chunks
        .iter()
        .filter(|c| c.broadcast.is_local())
        .collect();
    // Nothing of the programme while the emergency played; after it, the
    // programme goes on where its own timeline is (in step with the other
    // terminals), not where it stopped.
    let during: Vec<i64> = programme
        .iter()
        .filter(|c| c.play_at_us >= start + 2 * S + FRAME && c.play_at_us <= alarm_to)
        .map(|c| c.play_at_us - start)
        .collect();
    assert!(
        during.is_empty(),
        "programme audio while the alarm played: {during:?} (alarm {}..{})",
        alarm_from - start,
        alarm_to - start
    );
    let resumed: Vec<&&Chunk> = programme
        .iter()
        .filter(|c| c.play_at_us > alarm_from)
        .collect();
    assert!(!resumed.is_empty());
    assert!(resumed.iter().all(|c| (c.play_at_us - start) % FRAME == 0));
    assert_eq!(resumed.last().unwrap().play_at_us, start + 499 * FRAME);
}

#[test]
fn a_withdrawn_schedule_stops_at_once_and_plays_no_more() {
    let w = World::new();
    let p = prog(&w, 1, daily_at(vec![18 * 60], 3, EVERY_DAY), &fake(500));
    let mut sim = Sim::new(w.core(Journal::default()));
    sim.deliver_prog(T0, &p);
    let start = at(0, 18 * 60);
    let mut withdrawn = p.signed.programme().clone();
    withdrawn.revision = 2;
    withdrawn.withdrawn = true;
    withdrawn.audio = ProgrammeAudio::NONE;
    let v = &w.pki.towns[0].villages[0].identity;
    let update = SignedProgramme::sign(withdrawn, v).unwrap();
    assert!(!sim.deliver(start + 3 * S, &raw(&Message::Programme(update))));
    sim.run_until(at(3, 0));
    let id = p.signed.id();
    assert_eq!(
        sim.plays_of(id),
        [
            (start, PlayOutcome::Started, PlayReason::None),
            (start, PlayOutcome::Cut, PlayReason::Withdrawn),
        ]
    );
    let programme: Vec<&Chunk> = sim
        .chunks
        .iter()
        .filter(|c| c.broadcast.is_local())
        .collect();
    assert!(!programme.is_empty());
    // What was already decoded ahead is flushed: nothing plays after the
    // withdrawal (plus the player's decode-ahead of 300 ms at most).
    assert!(programme.iter().all(|c| c.play_at_us <= start + 3 * S));
    // The old revision sent again (a replay) is refused and changes nothing.
    assert!(sim.deliver(at(1, 0), &p.frames[0]));
    sim.run_until(at(3, 0));
    assert_eq!(sim.plays_of(id).len(), 2);
}

#[test]
fn a_schedule_signed_by_a_village_key_for_another_village_is_refused() {
    let layout = Layout {
        towns: 1,
        villages: 2,
        terminals: 1,
    };
    let w = World::with(layout, 86_400);
    // The thief holds village 1's key and addresses village 0.
    let thief = &w.pki.towns[0].villages[1].identity;
    let victim = w.pki.towns[0].villages[0].area;
    let p = prog_from(
        thief,
        1,
        vec![victim],
        daily_at(vec![18 * 60], 1, EVERY_DAY),
        &fake(100),
    );
    let mut sim = Sim::new(w.core(Journal::default()));
    assert!(sim.deliver(T0, &p.frames[0]), "the programme is refused");
    for chunk in &p.frames[1..] {
        assert!(sim.deliver(T0, chunk), "its audio too");
    }
    sim.run_until(at(1, 0));
    assert!(sim.chunks.is_empty(), "nothing played");
    assert!(sim.play_receipts.is_empty());
    let refusals = sim.core.snapshot().refusals;
    let count = |r: RefusalReason| {
        refusals
            .iter()
            .find(|(x, _)| *x == r)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(count(RefusalReason::TargetOutsideScope), 1);
    assert_eq!(count(RefusalReason::UnknownProgramme), 2);
}

fn quiet(w: &World, number: u64, mode: QuietMode, windows: Vec<(u16, u16)>) -> RawFrame {
    let v = &w.pki.towns[0].villages[0];
    let q = SignedQuietHours::sign(
        QuietHours {
            number,
            issued_at_ms: T0 / 1000,
            targets: vec![v.area],
            utc_offset_minutes: 480,
            mode,
            windows,
        },
        &v.identity,
    )
    .unwrap();
    raw(&Message::QuietHours(q))
}

/// The chain of the village platform the terminal is linked to.
fn upstream(w: &World) -> Vec<certs::Certificate> {
    w.pki.towns[0].villages[0].identity.chain_below_root()
}

#[test]
fn quiet_hours_hold_a_notice_and_let_an_emergency_through() {
    let w = World::new();
    let mut sim = Sim::new(w.core(Journal::default()));
    let noon = at(1, 12 * 60);
    // Quiet from 12:00 to 12:01 tomorrow, holding what is not an emergency.
    let q = quiet(&w, 1, QuietMode::Hold, vec![(12 * 60, 12 * 60 + 1)]);
    assert_eq!(sim.control(T0, &q, &upstream(&w)), ControlVerdict::Done);
    // A daily notice of 2 minutes from 11:59:30, an emergency at 12:00:20.
    let notice = cast(
        &w,
        1,
        BroadcastClass::Daily,
        Severity::Unknown,
        noon - 31 * S,
        fake(6000),
    );
    sim.deliver_all(noon - 31 * S, &notice);
    let (_, alarm) = tone(880.0, 2.0);
    let e = cast(
        &w,
        2,
        BroadcastClass::Emergency,
        Severity::Red,
        noon + 20 * S,
        alarm,
    );
    sim.deliver_all(noon + 20 * S, &e);
    sim.run_until(noon + 3 * 60 * S);
    let heard = sim.played(notice.id);
    assert!(
        heard.iter().any(|c| c.play_at_us < noon),
        "it played before"
    );
    assert!(
        heard
            .iter()
            .all(|c| c.play_at_us < noon + FRAME || c.play_at_us >= noon + 60 * S),
        "nothing of it in the quiet hours"
    );
    let after: Vec<&&Chunk> = heard
        .iter()
        .filter(|c| c.play_at_us >= noon + 60 * S)
        .collect();
    assert!(!after.is_empty(), "it plays on when they end");
    assert_eq!(
        (after[0].play_at_us - notice.pts_us - DELAY) % FRAME,
        0,
        "in step with its own timeline"
    );
    assert_eq!(
        sim.played(e.id).len(),
        e.frames,
        "the emergency played whole"
    );
    assert_eq!(
        sim.receipts_of(notice.id),
        [
            ReceiptKind::Started,
            ReceiptKind::Verified,
            ReceiptKind::Held,
            ReceiptKind::Resumed,
            ReceiptKind::Finished
        ]
    );
}

#[test]
fn quiet_hours_that_skip_drop_a_notice_for_good_even_across_a_restart() {
    let w = World::new();
    let dir = tempfile::tempdir().unwrap();
    let mut sim = Sim::new(w.core(Journal::default()));
    let night = at(0, 22 * 60);
    let q = quiet(&w, 1, QuietMode::Skip, vec![(22 * 60, 6 * 60)]);
    assert_eq!(sim.control(T0, &q, &upstream(&w)), ControlVerdict::Done);
    let notice = cast(
        &w,
        1,
        BroadcastClass::Daily,
        Severity::Unknown,
        night + 60 * S,
        fake(500),
    );
    sim.deliver_all(night + 60 * S, &notice);
    sim.run_until(night + 2 * 60 * S);
    assert!(sim.played(notice.id).is_empty());
    // Dropped at its header: its audio is never taken, so never
    // acknowledged as in hand either.
    assert_eq!(sim.receipts_of(notice.id), [ReceiptKind::Skipped]);
    // The terminal restarts; the upstream sends the notice again.
    let store = TerminalStore::open(&dir.path().join("store")).unwrap();
    for p in &sim.persisted {
        store.apply(&p.op).unwrap();
    }
    let loaded = store.load().unwrap();
    let mut core = w.core(loaded.journal);
    core.restore_ahead(loaded.ahead, night + 3 * 60 * S);
    let mut again = Sim::new(core);
    again.now = night + 3 * 60 * S;
    for f in std::iter::once(&notice.header).chain(&notice.segments) {
        again.deliver(night + 3 * 60 * S, f);
    }
    // Quiet hours were kept through the restart, and an emergency at
    // 23:00 still plays in them.
    let (_, alarm) = tone(880.0, 1.0);
    let e = cast(
        &w,
        2,
        BroadcastClass::Emergency,
        Severity::Red,
        at(0, 23 * 60),
        alarm,
    );
    again.deliver_all(at(0, 23 * 60), &e);
    again.run_until(at(1, 7 * 60));
    assert!(
        again.played(notice.id).is_empty(),
        "not after the restart either"
    );
    assert_eq!(again.played(e.id).len(), e.frames);
}

#[test]
fn a_play_in_quiet_hours_moves_to_their_end_or_is_skipped_by_policy() {
    let w = World::with(Layout::ONE_OF_EACH, 30 * 86_400);
    // 22:30 every day; quiet hours 22:00–06:00.
    let p = prog(
        &w,
        1,
        daily_at(vec![22 * 60 + 30], 3, EVERY_DAY),
        &fake(250),
    );
    let id = p.signed.id();
    let mut sim = Sim::new(w.core(Journal::default()));
    sim.deliver_prog(T0, &p);
    let hold = quiet(&w, 1, QuietMode::Hold, vec![(22 * 60, 6 * 60)]);
    sim.control(T0, &hold, &upstream(&w));
    sim.run_until(at(1, 7 * 60));
    let first = at(0, 22 * 60 + 30);
    let morning = at(1, 6 * 60);
    assert_eq!(
        sim.plays_of(id)[..2],
        [
            (first, PlayOutcome::Postponed, PlayReason::QuietHours),
            (first, PlayOutcome::Started, PlayReason::None),
        ]
    );
    let heard = sim.heard_between(first, at(1, 7 * 60));
    assert_eq!(heard.len(), 250);
    assert_eq!(
        heard[0].play_at_us, morning,
        "at the end of the quiet hours"
    );
    // The village changes its policy to skip: the next night's play goes.
    let skip = quiet(&w, 2, QuietMode::Skip, vec![(22 * 60, 6 * 60)]);
    sim.control(at(1, 12 * 60), &skip, &upstream(&w));
    sim.run_until(at(2, 7 * 60));
    let second = at(1, 22 * 60 + 30);
    assert_eq!(
        sim.plays_of(id).last(),
        Some(&(second, PlayOutcome::Skipped, PlayReason::QuietHours))
    );
    assert!(sim.heard_between(second, at(2, 7 * 60)).is_empty());
    // An older policy (a replay of number 1) is refused.
    assert_eq!(
        sim.control(at(2, 8 * 60), &hold, &upstream(&w)),
        ControlVerdict::Strike
    );
}

#[test]
fn a_terminal_restarted_with_no_link_plays_its_cached_schedule() {
    let w = World::new();
    let dir = tempfile::tempdir().unwrap();
    let (pcm, audio) = tone(660.0, 2.0);
    let p = prog(&w, 1, daily_at(vec![18 * 60], 1, EVERY_DAY), &audio);
    let mut sim = Sim::new(w.core(Journal::default()));
    sim.deliver_prog(T0, &p);
    {
        let store = TerminalStore::open(&dir.path().join("store")).unwrap();
        for op in &sim.persisted {
            store.apply(&op.op).unwrap();
        }
        store.flush().unwrap();
    }
    drop(sim);
    // Power comes back at 17:00, with no link at all.
    let store = TerminalStore::open(&dir.path().join("store")).unwrap();
    let loaded = store.load().unwrap();
    let back = at(0, 17 * 60);
    let mut core = w.core(loaded.journal);
    core.restore_ahead(loaded.ahead, back);
    assert_eq!(core.inventory().held.len(), 1);
    assert!(core.inventory().held[0].complete, "its audio came back too");
    let mut sim = Sim::new(core);
    sim.now = back;
    sim.run_until(at(0, 18 * 60) + 5 * S);
    let heard = sim.heard_between(at(0, 18 * 60), at(0, 18 * 60) + 5 * S);
    assert_eq!(heard.len(), audio.len());
    let (corr, _) = codec::measure::best_correlation(&pcm, &pcm_of(&heard), 800);
    assert!(corr > 0.9, "{corr}");
}

#[test]
fn a_play_whose_audio_never_arrived_is_skipped_and_said_so() {
    let w = World::new();
    let p = prog(&w, 1, daily_at(vec![18 * 60], 1, EVERY_DAY), &fake(200));
    let mut sim = Sim::new(w.core(Journal::default()));
    // The programme and its first chunk only.
    sim.deliver_prog(
        T0,
        &Prog {
            signed: p.signed.clone(),
            frames: p.frames[..2].to_vec(),
        },
    );
    assert!(!sim.core.inventory().held[0].complete);
    sim.run_until(at(0, 18 * 60) + 10 * S);
    assert_eq!(
        sim.plays_of(p.signed.id()),
        [(at(0, 18 * 60), PlayOutcome::Skipped, PlayReason::NotCached)]
    );
    assert!(sim.chunks.is_empty());
}

#[test]
fn while_a_programme_plays_the_status_names_the_programme() {
    let w = World::new();
    let p = prog(&w, 1, daily_at(vec![18 * 60], 1, EVERY_DAY), &fake(500));
    let mut sim = Sim::new(w.core(Journal::default()));
    sim.deliver_prog(T0, &p);
    sim.run_until(at(0, 18 * 60) + 3 * S);
    // A link comes up mid-play: its first status says what plays.
    sim.core.handle_link(true, sim.now);
    sim.run_until(at(0, 18 * 60) + 4 * S);
    let status = sim.statuses.last().expect("a status went up");
    let status = status.as_ref().expect("the upstream decodes it");
    assert_eq!(status.status.playing, Some(p.signed.id()));
}
