//! The terminal core in simulated time: no sockets, no clock, no threads.
//! A test builds a core, hands it frames at chosen moments, moves time to
//! each timeout the core asks for, and checks what came out: the audio
//! (with its play times), the receipts, the counts.

mod sim;

use sim::*;

#[test]
fn a_broadcast_plays_whole_on_its_timeline_and_is_reported() {
    let w = World::new();
    let (pcm, frames) = tone(440.0, 2.0);
    let c = cast(&w, 1, BroadcastClass::Emergency, Severity::Red, T0, frames);
    let mut sim = Sim::new(w.core(Journal::default()));
    sim.deliver_all(T0 + 10_000, &c);
    sim.run_until(T0 + 5_000_000);
    let played = sim.played(c.id);
    assert_eq!(played.len(), c.frames);
    assert_eq!(played[0].play_at_us, c.pts_us + DELAY);
    assert!(contiguous(&played));
    // Decoded ahead of time, never before the decode window.
    let (corr, _) = codec::measure::best_correlation(&pcm, &pcm_of(&played), 800);
    assert!(corr > 0.9, "correlation {corr}");
    assert_eq!(
        sim.receipts_of(c.id),
        // It presents 10 ms before it arrives: it starts with its header,
        // its audio is in hand with the first segment.
        [
            ReceiptKind::Started,
            ReceiptKind::Verified,
            ReceiptKind::Finished
        ]
    );
    let r = &sim.core.snapshot().records[&c.id];
    assert!(r.finished && r.frames_played == c.frames as u64, "{r:?}");
    assert_eq!((r.frames_concealed, r.frames_late), (0, 0));
    // Its first sight and its end were journalled for a restart, urgently.
    assert!(sim.persisted.first().is_some_and(|p| p.urgent));
    assert!(sim.persisted.last().is_some_and(|p| p.urgent));
}

#[test]
fn a_broadcast_is_acknowledged_once_its_first_audio_is_in_hand_not_at_its_header() {
    let w = World::new();
    let (_, frames) = tone(440.0, 1.5);
    let c = cast(&w, 1, BroadcastClass::Emergency, Severity::Red, T0, frames);
    assert!(c.segments.len() >= 2);
    let mut sim = Sim::new(w.core(Journal::default()));
    let hold = terminal_agent::core::RECEIPT_HOLD_US;
    // The header alone, then nothing for a while: no acknowledgement (the
    // issuer's next lead must not be measured from a header whose audio a
    // terminal does not yet hold).
    let header_at = T0 - 600_000;
    assert!(!sim.deliver(header_at, &c.header));
    sim.run_until(header_at + 2 * hold);
    assert!(
        !sim.receipts_of(c.id).contains(&ReceiptKind::Verified),
        "{:?}",
        sim.receipts
    );
    // The first segment: acknowledged, stamped when it came; later
    // segments add nothing.
    let first_at = header_at + 2 * hold + 5_000;
    assert!(!sim.deliver(first_at, &c.segments[0]));
    for s in &c.segments[1..] {
        assert!(!sim.deliver(first_at + 20_000, s));
    }
    sim.run_until(first_at + hold + 1_000);
    let verified: Vec<_> = sim
        .receipts
        .iter()
        .filter(|(r, _)| r.kind == ReceiptKind::Verified)
        .collect();
    assert_eq!(verified.len(), 1, "{:?}", sim.receipts);
    assert_eq!(verified[0].0.at_ms * 1000, first_at);
}

#[test]
fn receipts_wait_out_the_fan_out_but_carry_the_time_of_what_they_report() {
    let w = World::new();
    let (_, frames) = tone(440.0, 1.0);
    let c = cast(&w, 1, BroadcastClass::Emergency, Severity::Red, T0, frames);
    let mut sim = Sim::new(w.core(Journal::default()));
    let at = T0 + 10_000;
    sim.deliver_all(at, &c);
    assert!(sim.receipts.is_empty(), "held at first: {:?}", sim.receipts);
    let hold = terminal_agent::core::RECEIPT_HOLD_US;
    sim.run_until(at + hold);
    assert_eq!(
        sim.receipts_of(c.id),
        [ReceiptKind::Started, ReceiptKind::Verified]
    );
    assert!(
        sim.receipts
            .iter()
            .all(|(r, sent)| *sent == at + hold && r.at_ms * 1000 == at),
        "{:?}",
        sim.receipts
    );
}

#[test]
fn recorded_audio_that_comes_late_is_concealed_on_its_timeline_never_waited_for() {
    // A terminal that adapts its delay for live voice: recorded audio is
    // sent far ahead, so a segment that comes late is lost, not a reason
    // to play the rest later than the other terminals.
    let w = World::new();
    let (_, frames) = tone(440.0, 1.0);
    let c = cast(&w, 1, BroadcastClass::Emergency, Severity::Red, T0, frames);
    let defaults = CoreConfig::default();
    let config = CoreConfig {
        playout: codec::PlayoutConfig {
            adapt_max_us: 100_000,
            ..defaults.playout
        },
        ..defaults
    };
    let mut sim = Sim::new(w.core_with(Journal::default(), config));
    assert!(!sim.deliver(T0, &c.header));
    assert!(!sim.deliver(T0, &c.segments[0]));
    // Every later segment comes 100 ms after it should have begun to play
    // (as live voice on a slow link would).
    for (k, s) in c.segments.iter().enumerate().skip(1) {
        let late = c.pts_us + DELAY + k as i64 * 10 * FRAME + 100_000;
        sim.run_until(late);
        assert!(!sim.deliver(late, s));
    }
    sim.run_until(c.pts_us + DELAY + 3_000_000);
    let played = sim.played(c.id);
    assert!(contiguous(&played));
    let last_decoded = played
        .iter()
        .rev()
        .find(|c| c.made == terminal_agent::core::Made::Decoded)
        .expect("audio played");
    // (Waiting would have played its frames up to 100 ms after their time,
    // the last one past the broadcast's end.)
    assert!(
        last_decoded.play_at_us <= c.pts_us + DELAY + (c.frames as i64 - 1) * FRAME,
        "a frame played {} ms past the broadcast's end",
        (last_decoded.play_at_us - c.pts_us - DELAY - (c.frames as i64 - 1) * FRAME) / 1000
    );
    let r = &sim.core.snapshot().records[&c.id];
    assert!(r.frames_concealed > 0, "{r:?}");
}

#[test]
fn an_emergency_preempts_a_programme_which_resumes_in_step() {
    let w = World::new();
    let (_, long) = tone(300.0, 6.0);
    let (alert_pcm, short) = tone(900.0, 1.0);
    let daily = cast(&w, 1, BroadcastClass::Daily, Severity::Unknown, T0, long);
    let mut sim = Sim::new(w.core(Journal::default()));
    sim.deliver_all(T0, &daily);
    sim.run_until(daily.pts_us + DELAY + 1_000_000);
    let alert_at = sim.now;
    let alert = cast(
        &w,
        2,
        BroadcastClass::Emergency,
        Severity::Orange,
        alert_at,
        short,
    );
    sim.deliver_all(alert_at, &alert);
    // Pre-empted at once: what was queued of the programme is flushed.
    assert_eq!(sim.core.snapshot().playing, Some(alert.id));
    assert_eq!(sim.flushes.len(), 1);
    assert!(sim
        .played(daily.id)
        .iter()
        .all(|c| c.play_at_us <= alert_at));
    sim.run_until(alert.pts_us + DELAY + 3_000_000);
    let a = sim.played(alert.id);
    assert_eq!(a.len(), alert.frames);
    assert!(contiguous(&a));
    let (corr, _) = codec::measure::best_correlation(&alert_pcm, &pcm_of(&a), 800);
    assert!(corr > 0.9, "alert correlation {corr}");
    // The programme resumes where its own timeline is, after the alert.
    let d = sim.played(daily.id);
    let resumed: Vec<&&Chunk> = d.iter().filter(|c| c.play_at_us > alert_at).collect();
    let first_back = resumed.first().expect("the programme resumed").play_at_us;
    assert!(
        first_back >= a.last().unwrap().play_at_us,
        "after the alert"
    );
    assert_eq!(
        (first_back - daily.pts_us - DELAY) % FRAME,
        0,
        "on the programme's own timeline"
    );
    assert_eq!(
        sim.receipts_of(daily.id),
        [
            ReceiptKind::Started,
            ReceiptKind::Verified,
            ReceiptKind::Preempted,
            ReceiptKind::Resumed
        ]
    );
    let r = &sim.core.snapshot().records[&daily.id];
    assert_eq!(r.preempted, 1);
}

#[test]
fn a_cancel_stops_playback_at_once() {
    let w = World::new();
    let (_, frames) = tone(500.0, 4.0);
    let c = cast(&w, 1, BroadcastClass::Emergency, Severity::Red, T0, frames);
    let mut sim = Sim::new(w.core(Journal::default()));
    sim.deliver_all(T0, &c);
    sim.run_until(c.pts_us + DELAY + 1_000_000);
    let cancel_at = sim.now;
    let original = SignedHeader::decode(c.header.body())
        .unwrap()
        .header()
        .clone();
    let cancel = BroadcastHeader {
        id: BroadcastId::new(
            &w.pki.district.cert().body().resource_code,
            (2026, 11, 28),
            2,
        )
        .unwrap(),
        msg_type: MessageType::Cancel,
        related: Some(c.id),
        issued_at_ms: cancel_at / 1000,
        start_ms: cancel_at / 1000,
        audio: AudioParams::NONE,
        title: "取消".into(),
        ..original
    };
    let cancel = raw(&Message::Header(
        SignedHeader::sign(cancel, &w.pki.district).unwrap(),
    ));
    assert!(!sim.deliver(cancel_at, &cancel));
    assert_eq!(sim.core.snapshot().playing, None);
    assert_eq!(sim.flushes.len(), 1, "queued audio dropped");
    sim.run_until(cancel_at + 5_000_000);
    assert!(sim.played(c.id).iter().all(|x| x.play_at_us <= cancel_at));
    assert!(sim.receipts_of(c.id).contains(&ReceiptKind::Cancelled));
    let r = &sim.core.snapshot().records[&c.id];
    assert!(r.cancelled && !r.finished);

    // After a power cut, a cancelled broadcast stays cancelled: sent again
    // whole, it is refused and nothing of it plays.
    let dir = tempfile::tempdir().unwrap();
    let store = TerminalStore::open(&dir.path().join("store")).unwrap();
    for p in sim.persisted.drain(..) {
        store.apply(&p.op).unwrap();
    }
    drop(sim);
    let mut sim = Sim::new(w.core(store.load().unwrap().journal));
    let reboot = cancel_at + 500_000;
    sim.run_until(reboot);
    let resume = sim.core.subscribe(reboot).resume;
    assert!(resume.contains(&(c.id, u32::MAX)), "{resume:?} {:?}", c.id);
    assert!(
        sim.deliver(reboot, &c.header),
        "a replay of a cancelled one"
    );
    for s in &c.segments {
        sim.deliver(reboot, s);
    }
    sim.run_until(reboot + 5_000_000);
    assert!(sim.played(c.id).is_empty());
}

#[test]
fn a_late_joiner_plays_from_where_the_others_are() {
    let w = World::new();
    let (_, frames) = tone(600.0, 5.0);
    let c = cast(&w, 1, BroadcastClass::Emergency, Severity::Red, T0, frames);
    let mut sim = Sim::new(w.core(Journal::default()));
    // Everything arrives 2 s after the first frame should have played.
    let join = c.pts_us + DELAY + 2_000_000;
    sim.deliver_all(join, &c);
    sim.run_until(join + 5_000_000);
    let played = sim.played(c.id);
    let window = codec::PlayoutConfig::default().max_lag_us;
    assert!(played[0].play_at_us >= join - window - FRAME, "in step");
    assert!(contiguous(&played));
    let r = &sim.core.snapshot().records[&c.id];
    assert!(r.finished);
    assert_eq!(r.frames_played + r.frames_late, c.frames as u64, "{r:?}");
    assert_eq!(
        r.frames_concealed, 0,
        "nothing on its way is concealed: {r:?}"
    );
    assert!(
        r.frames_late >= 70,
        "the part already past is skipped: {r:?}"
    );
}

#[test]
fn a_lost_segment_is_concealed_only_when_due_and_a_late_one_still_plays() {
    let w = World::new();
    let (_, frames) = tone(700.0, 2.0);
    let c = cast(&w, 1, BroadcastClass::Emergency, Severity::Red, T0, frames);
    let mut sim = Sim::new(w.core(Journal::default()));
    assert!(!sim.deliver(T0, &c.header));
    // Segments 0–3 in time; 4 arrives 30 ms before it plays; 5 is lost on
    // the way; 6–9 follow.
    for s in &c.segments[..4] {
        assert!(!sim.deliver(T0, s));
    }
    let seg4_plays = c.pts_us + DELAY + 40 * FRAME;
    sim.run_until(seg4_plays - 30_000);
    assert_eq!(
        sim.core.snapshot().records[&c.id].frames_concealed,
        0,
        "nothing concealed ahead of time"
    );
    assert!(!sim.deliver(seg4_plays - 30_000, &c.segments[4]));
    for s in &c.segments[6..] {
        assert!(!sim.deliver(seg4_plays - 20_000, s));
    }
    sim.run_until(seg4_plays + 3_000_000);
    let r = &sim.core.snapshot().records[&c.id];
    assert_eq!(r.frames_played, c.frames as u64 - 10, "{r:?}");
    // Five concealed, then silence, the last one recovered from the next
    // packet's forward error correction.
    assert_eq!((r.frames_concealed, r.frames_recovered), (5, 1), "{r:?}");
    let played = sim.played(c.id);
    assert_eq!(played.len(), c.frames, "the gap is filled, in step");
    assert!(contiguous(&played));
}

#[test]
fn a_late_driver_catches_up_inside_the_window_and_counts_what_it_must_drop() {
    let w = World::new();
    let (_, frames) = tone(800.0, 4.0);
    let c = cast(&w, 1, BroadcastClass::Emergency, Severity::Red, T0, frames);
    let mut sim = Sim::new(w.core(Journal::default()));
    sim.deliver_all(T0, &c);
    let start = c.pts_us + DELAY;
    sim.run_until(start + 500_000);
    // Held up 450 ms (past the 300 ms look-ahead, inside the window).
    sim.now = start + 500_000 + 450_000;
    sim.core.handle_timeout(sim.now);
    sim.drain();
    sim.run_until(start + 2_000_000);
    let r = sim.core.snapshot().records[&c.id].clone();
    assert_eq!(
        r.frames_late, 0,
        "nothing inside the window is dropped: {r:?}"
    );
    // Held up 1.5 s: what fell out of the window is dropped and counted.
    sim.now = start + 3_500_000;
    sim.core.handle_timeout(sim.now);
    sim.drain();
    sim.run_until(start + 6_000_000);
    let r = sim.core.snapshot().records[&c.id].clone();
    assert!(r.frames_late > 0, "{r:?}");
    assert_eq!(r.frames_played + r.frames_late, c.frames as u64, "{r:?}");
    assert!(contiguous(&sim.played(c.id)[..50]));
}

#[test]
fn a_stalled_sink_never_stops_verification_and_costs_only_late_audio() {
    let w = World::new();
    let (_, frames) = tone(350.0, 6.0);
    let c = cast(&w, 1, BroadcastClass::Emergency, Severity::Red, T0, frames);
    let mut sim = Sim::new(w.core(Journal::default()));
    assert!(!sim.deliver(T0, &c.header));
    for s in &c.segments[..10] {
        assert!(!sim.deliver(T0, s));
    }
    let start = c.pts_us + DELAY;
    sim.run_until(start + 500_000);
    // The sink stalls for 2 s. Frames keep arriving and are verified; a
    // forged one is refused and counted; receipts keep flowing.
    sim.sink_takes = false;
    let mut bytes = c.segments[10].bytes.clone();
    let inside_the_audio = bytes.len() - 80;
    bytes[inside_the_audio] ^= 0xff;
    let forged = protocol::FrameReader::new().push(&bytes).unwrap().remove(0);
    assert!(
        sim.deliver(start + 600_000, &forged),
        "refused while stalled"
    );
    for (i, s) in c.segments[10..20].iter().enumerate() {
        assert!(!sim.deliver(start + 700_000 + i as i64 * 100_000, s));
    }
    sim.run_until(start + 2_500_000);
    for s in &c.segments[20..] {
        assert!(!sim.deliver(start + 2_500_000, s));
    }
    let snap = sim.core.snapshot();
    let refused: u64 = snap
        .refusals
        .iter()
        .filter(|(r, _)| *r == RefusalReason::SegmentSignature)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(refused, 1);
    // The sink is back: audio still inside the window plays, the rest was
    // counted late; memory stayed bounded (nothing older than the window).
    sim.sink_takes = true;
    sim.drain();
    let window = codec::PlayoutConfig::default().max_lag_us;
    let after: Vec<&Chunk> = sim
        .chunks
        .iter()
        .filter(|x| x.play_at_us > start + 500_000 + 300_000)
        .collect();
    assert!(after
        .first()
        .is_some_and(|x| x.play_at_us >= sim.now - window - FRAME));
    sim.run_until(start + 8_000_000);
    let r = &sim.core.snapshot().records[&c.id];
    assert!(r.frames_late > 50, "{r:?}");
    assert_eq!(r.frames_played + r.frames_late, c.frames as u64, "{r:?}");
    assert!(r.finished);
}

#[test]
fn a_terminal_rebooted_mid_broadcast_resumes_it_without_a_refusal() {
    let w = World::new();
    let (_, frames) = tone(450.0, 6.0);
    let c = cast(&w, 1, BroadcastClass::Emergency, Severity::Red, T0, frames);
    let dir = tempfile::tempdir().unwrap();
    let store = TerminalStore::open(&dir.path().join("store")).unwrap();
    let mut sim = Sim::new(w.core(Journal::default()));
    assert!(!sim.deliver(T0, &c.header));
    for s in &c.segments[..12] {
        assert!(!sim.deliver(T0, s));
    }
    sim.run_until(c.pts_us + DELAY + 1_000_000);
    for p in sim.persisted.drain(..) {
        store.apply(&p.op).unwrap();
    }
    store.flush().unwrap();
    drop(sim); // power cut

    let loaded = store.load().unwrap();
    let mut sim = Sim::new(w.core(loaded.journal));
    let reboot = c.pts_us + DELAY + 3_000_000;
    sim.run_until(reboot);
    // Its audio went with its memory: it asks for the broadcast again from
    // the start (an upstream sends a terminal only what it can still play)...
    let sub = sim.core.subscribe(reboot);
    assert_eq!(sub.resume, vec![(c.id, 0)]);
    // ...takes the header and every segment again without a refusal...
    assert!(!sim.deliver(reboot, &c.header));
    for s in &c.segments {
        assert!(!sim.deliver(reboot, s), "no stale_sequence after a reboot");
    }
    sim.run_until(reboot + 5_000_000);
    // ...and plays on from the moment it came back, in step: nothing from
    // before (which it may have played already), nothing missing after.
    let played = sim.played(c.id);
    assert!(!played.is_empty(), "it plays on");
    assert!(played[0].play_at_us >= reboot, "nothing played twice");
    assert!(played[0].play_at_us <= reboot + 2 * FRAME);
    assert!(played
        .windows(2)
        .all(|w| w[1].play_at_us - w[0].play_at_us == FRAME));
    assert_eq!(
        played.last().unwrap().play_at_us,
        c.pts_us + DELAY + (c.frames as i64 - 1) * FRAME,
        "to the end"
    );
    assert!(sim.core.snapshot().refusals.is_empty());
    // A replay of what it took since is refused.
    assert!(sim.deliver(reboot + 5_000_000, &c.segments[3]));
}

/// A remote command from the district, as a control frame.
fn command(w: &World, id: u64, action: protocol::Action) -> RawFrame {
    let now_ms = T0 / 1000;
    raw(&Message::Command(
        protocol::Command {
            command_id: id,
            issued_at_ms: now_ms,
            expires_at_ms: now_ms + 3_600_000,
            target_areas: vec![w.county()],
            target_terminals: vec![],
            action,
        }
        .sign(&w.pki.district),
    ))
}

#[test]
fn a_mute_cannot_swallow_a_severe_emergency_and_receipts_say_what_was_heard() {
    let w = World::new();
    let mut sim = Sim::new(w.core(Journal::default()));
    let verdict =
        sim.core
            .handle_control_frame(&command(&w, 1, protocol::Action::Mute(true)), &[], T0);
    assert_eq!(verdict, terminal_agent::core::ControlVerdict::Done);
    let verdict =
        sim.core
            .handle_control_frame(&command(&w, 2, protocol::Action::Volume(20)), &[], T0);
    assert_eq!(verdict, terminal_agent::core::ControlVerdict::Done);
    sim.drain();
    assert_eq!(sim.gain, 0.0, "muted");

    // A daily notice obeys the mute: it plays silent, and says so.
    let (_, frames) = tone(400.0, 2.0);
    let daily = cast(&w, 1, BroadcastClass::Daily, Severity::Unknown, T0, frames);
    sim.deliver_all(T0, &daily);
    sim.run_until(daily.pts_us + DELAY + 3_000_000);
    let near = |ms: Option<u32>, want: u32| ms.is_some_and(|ms| ms.abs_diff(want) <= 40);
    assert!(
        near(sim.detail(daily.id, ReceiptKind::Muted), 2000),
        "{:?}",
        sim.receipts
    );

    // A severity I emergency plays at the minimum volume though muted, and
    // its receipt says it was heard in full.
    let t1 = sim.now;
    let (_, frames) = tone(500.0, 3.0);
    let red = cast(&w, 2, BroadcastClass::Emergency, Severity::Red, t1, frames);
    sim.deliver_all(t1, &red);
    sim.run_until(red.pts_us + DELAY + 1_000_000);
    assert_eq!(
        sim.gain, 0.7,
        "the configured minimum, above the volume of 20"
    );
    sim.run_until(red.pts_us + DELAY + 4_000_000);
    assert!(
        near(sim.detail(red.id, ReceiptKind::Finished), 3000),
        "{:?}",
        sim.receipts
    );
    assert_eq!(sim.gain, 0.0, "the mute holds again once it is over");
    let r = &sim.core.snapshot().records[&red.id];
    assert_eq!(
        r.frames_heard,
        r.frames_played + r.frames_recovered + r.frames_concealed
    );

    // A severity III emergency obeys the mute.
    let t2 = sim.now;
    let (_, frames) = tone(600.0, 1.0);
    let yellow = cast(
        &w,
        3,
        BroadcastClass::Emergency,
        Severity::Yellow,
        t2,
        frames,
    );
    sim.deliver_all(t2, &yellow);
    sim.run_until(yellow.pts_us + DELAY + 2_000_000);
    assert!(near(sim.detail(yellow.id, ReceiptKind::Muted), 1000));
}

#[test]
fn audio_longer_than_its_validity_is_cut_and_the_receipt_says_how_much_was_heard() {
    let w = World::new();
    let mut sim = Sim::new(w.core(Journal::default()));
    let (_, frames) = tone(450.0, 5.0);
    // Valid until 2 s after its first frame presents (+1 s after issue).
    let c = cast_with(
        &w,
        1,
        BroadcastClass::Emergency,
        Severity::Red,
        T0,
        frames,
        |h| {
            h.end_ms = T0 / 1000 + 3_000;
        },
    );
    sim.deliver_all(T0, &c);
    sim.run_until(T0 + 8_000_000);
    let ends: Vec<_> = sim
        .receipts
        .iter()
        .filter(|(r, _)| r.broadcast == Some(c.id) && r.kind == ReceiptKind::CutAtEnd)
        .collect();
    assert_eq!(ends.len(), 1, "{:?}", sim.receipts);
    // Plays from 1.4 s (delay) to 3 s: about 1.6 s heard (decoded ahead).
    let heard = ends[0].0.detail;
    assert!((1500..=2000).contains(&heard), "{heard} ms");
    assert!(sim
        .played(c.id)
        .iter()
        .all(|x| x.play_at_us <= T0 + 3_000_000));
    let r = &sim.core.snapshot().records[&c.id];
    assert!(r.cut_at_end && !r.finished);
}
