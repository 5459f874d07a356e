//! The aligner against a modelled card in simulated time. Every sample
//! carries its own index, so the test knows when each one was due and when
//! it left the card.

use super::*;
use crate::card::CardModel;

const RATE: u32 = 16_000;
const TICK_US: i64 = 5_000;
const LEAD_US: i64 = 40_000;

struct Run {
    /// (true leave time, value) of every sample the card played.
    heard: Vec<(i64, f32)>,
    stats: AlignStats,
}

/// `tree_error(t)`: how wrong the terminal's tree clock is at true time t
/// (µs). `stall`: (from, to) true times in which the player does not run.
fn run(
    card_ppb: i64,
    pieces: &[(i64, Vec<f32>)],
    until_us: i64,
    tree_error: impl Fn(i64) -> i64,
    stall: Option<(i64, i64)>,
) -> Run {
    let mut card = CardModel::new(RATE, card_ppb, 0);
    let mut a = Aligner::new(RATE, AlignConfig::default());
    for (at, pcm) in pieces {
        a.push(0, *at, pcm.clone());
    }
    let mut heard = Vec::new();
    let mut out = Vec::new();
    let mut t = 0;
    while t < until_us {
        if stall.is_some_and(|(from, to)| (from..to).contains(&t)) {
            t += TICK_US;
            continue;
        }
        let tree_now = t + tree_error(t);
        let heard_at = tree_now + card.delay_us(t);
        out.clear();
        a.fill(heard_at, tree_now + LEAD_US, &mut out);
        if !out.is_empty() {
            let slot = card.write(t, out.len());
            for (i, v) in out.iter().enumerate() {
                heard.push((card.leaves_at(slot + i as i64), *v));
            }
        }
        t += TICK_US;
    }
    Run {
        heard,
        stats: a.stats(),
    }
}

/// A piece whose samples are their own index + 1 (0 is silence).
fn indexed(first: usize, n: usize) -> Vec<f32> {
    (first..first + n).map(|i| (i + 1) as f32).collect()
}

fn due(start_us: i64, value: f32) -> i64 {
    start_us + (value as i64 - 1) * 1_000_000 / RATE as i64
}

/// Worst |leave − due| over the samples heard after `after_us`.
fn worst_error(r: &Run, start_us: i64, after_us: i64) -> i64 {
    r.heard
        .iter()
        .filter(|(t, v)| *v > 0.0 && *t >= after_us)
        .map(|(t, v)| (t - due(start_us, *v)).abs())
        .max()
        .unwrap_or(i64::MAX)
}

fn frames(start_us: i64, secs: i64) -> Vec<(i64, Vec<f32>)> {
    let n = 320; // 20 ms
    (0..(secs * 50) as usize)
        .map(|k| (start_us + k as i64 * 20_000, indexed(k * n, n)))
        .collect()
}

#[test]
fn a_card_fifty_ppm_fast_stays_within_a_sample_of_the_clock() {
    for ppb in [50_000, -50_000, 0] {
        let start = 200_000;
        let r = run(ppb, &frames(start, 60), 61_000_000, |_| 0, None);
        // The first sample lands exactly; drift is slewed away.
        let first = r.heard.iter().find(|(_, v)| *v > 0.0).unwrap();
        assert!(
            (first.0 - start).abs() <= 63,
            "{ppb}: first heard at {}",
            first.0
        );
        let worst = worst_error(&r, start, 0);
        assert!(worst <= 200, "{ppb}: worst {worst} µs, {:?}", r.stats);
        // 50 ppm of 960,000 samples is 48 corrections, give or take.
        let corrections = r.stats.dropped + r.stats.repeated;
        if ppb == 0 {
            assert_eq!(corrections, 0, "{:?}", r.stats);
        } else {
            assert!((30..100).contains(&corrections), "{ppb}: {:?}", r.stats);
            assert_eq!(ppb > 0, r.stats.repeated > 0, "{ppb}: {:?}", r.stats);
        }
        assert_eq!(r.stats.resyncs, 0);
    }
}

#[test]
fn a_drifting_terminal_clock_is_followed_and_a_small_step_is_slewed() {
    let start = 100_000;
    // The estimate of the tree's clock steps by 2 ms at 10 s (a new fit):
    // slewed at ≤ 0.05 %, it is closed within about 4 s, never by a jump.
    let r = run(
        -30_000,
        &frames(start, 30),
        31_000_000,
        |t| if t >= 10_000_000 { 2_000 } else { 0 },
        None,
    );
    assert_eq!(r.stats.resyncs, 0, "{:?}", r.stats);
    // While the slew runs, the error moves by a sample at a time.
    let mut last: Option<i64> = None;
    for (t, v) in r.heard.iter().filter(|(_, v)| *v > 0.0) {
        let e = t - due(start, *v);
        if let Some(l) = last {
            assert!((e - l).abs() <= 130, "jump from {l} to {e} µs at {t}");
        }
        last = Some(e);
    }
    // Heard 2 ms earlier (the tree clock said it was later), in the end.
    let late: Vec<i64> = r
        .heard
        .iter()
        .filter(|(t, v)| *v > 0.0 && *t > 20_000_000)
        .map(|(t, v)| t - due(start, *v))
        .collect();
    assert!(
        late.iter().all(|e| (e + 2_000).abs() <= 200),
        "{:?}",
        &late[..5]
    );
}

#[test]
fn after_a_stall_it_resyncs_and_skips_what_is_past() {
    let start = 100_000;
    let r = run(
        0,
        &frames(start, 10),
        11_000_000,
        |_| 0,
        Some((3_000_000, 3_200_000)),
    );
    assert!(r.stats.resyncs >= 1, "{:?}", r.stats);
    // In step again right after the stall, not 200 ms behind.
    let worst = worst_error(&r, start, 3_300_000);
    assert!(worst <= 200, "worst after the stall {worst} µs");
}

#[test]
fn a_late_join_starts_in_step_and_a_gap_is_exact_silence() {
    // Due 1 s before the player ran: the first second is skipped.
    let r = run(0, &frames(-1_000_000, 3), 3_000_000, |_| 0, None);
    let first = r.heard.iter().find(|(_, v)| *v > 0.0).unwrap();
    assert!(first.1 as i64 >= 16_000, "started with sample {}", first.1);
    assert!(worst_error(&r, -1_000_000, 0) <= 200);

    // Two pieces with 300 ms between them: the second starts on its time.
    let pieces = vec![
        (100_000, indexed(0, 1_600)),
        (500_000, indexed(1_600 + 4_800, 1_600)),
    ];
    let r = run(20_000, &pieces, 1_000_000, |_| 0, None);
    assert!(worst_error(&r, 100_000, 0) <= 100, "{:?}", r.stats);
    assert_eq!(r.heard.iter().filter(|(_, v)| *v > 0.0).count(), 3_200);
}

#[test]
fn clear_drops_what_waits() {
    let mut a = Aligner::new(RATE, AlignConfig::default());
    a.push(1, 1_000_000, indexed(0, 320));
    a.push(2, 1_020_000, indexed(320, 320));
    a.retain_from(2);
    assert_eq!(a.next_due(), Some(1_020_000));
    a.clear();
    let mut out = Vec::new();
    a.fill(1_000_000, 2_000_000, &mut out);
    assert!(out.is_empty() && a.is_empty());
}
