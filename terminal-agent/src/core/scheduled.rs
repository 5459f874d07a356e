//! The core's side of what is sent ahead (R9, R20): taking programmes,
//! their audio and quiet hours from the upstream (verified like
//! everything else), putting each play in the arbiter when it falls due,
//! and reporting every play in a signed programme receipt.

use protocol::{
    BroadcastId, Message, PlayOutcome, PlayReason, ProgrammeChunk, ProgrammeReceipt,
    ProgrammeVerdict, Quiet, QuietMode, ReceiptKind, Refusal, SignedProgramme, SignedQuietHours,
};
use tracing::{debug, info};

use super::programmes::{Due, Stored, FEED_AHEAD_US};
use super::TerminalCore;

/// Plays still being fed are looked at again this often.
const FEED_EVERY_US: i64 = 5_000_000;

impl TerminalCore {
    /// A programme from a broadcast stream. True when refused.
    pub(super) fn on_programme(&mut self, p: SignedProgramme, now_us: i64) -> bool {
        let id = p.id();
        if !self.programmes.has_room_for(id) {
            debug!(%id, "programme cache holds its most programmes: not taken");
            return false;
        }
        let held = self.programmes.held_revision(id);
        match self.verifier.accept_programme(&p, held, now_us / 1000) {
            Ok(ProgrammeVerdict::Same) => false,
            Ok(v) => {
                let revision = p.programme().revision;
                let withdrawn = p.programme().withdrawn;
                info!(%id, revision, withdrawn, verdict = ?v, "programme taken");
                let tier = p.signer().tier();
                let body = p.body().to_vec();
                let inserted = self.programmes.insert(p, tier);
                self.journal().persist_programme(id, body);
                if inserted.audio_replaced {
                    // Other audio than the revision before: what was cached goes.
                    self.journal().drop_programme_audio(id);
                }
                let reason = if withdrawn {
                    PlayReason::Withdrawn
                } else {
                    PlayReason::Superseded
                };
                for local in inserted.stop {
                    self.stop_play(local, reason, now_us);
                }
                false
            }
            Err(r) => {
                self.report(Some(id), &r, p.signer().serial(), false, now_us);
                true
            }
        }
    }

    /// A chunk of a programme's audio. True when refused.
    pub(super) fn on_chunk(&mut self, c: ProgrammeChunk, upstream: u64, now_us: i64) -> bool {
        let id = c.id;
        if let Err(r) = self
            .verifier
            .accept_chunk(&c, self.programmes.programme(id))
        {
            self.report(Some(id), &r, upstream, false, now_us);
            return true;
        }
        let (index, body) = (c.index, c.encode());
        match self.programmes.put_chunk(c, now_us / 1000) {
            Stored::Kept { complete, evicted } => {
                self.journal().persist_chunk(id, index, body);
                for other in evicted {
                    info!(%other, "programme audio evicted: the cache is full");
                    self.journal().drop_programme_audio(other);
                    self.cache_receipt(other, PlayOutcome::Evicted, PlayReason::CacheFull, now_us);
                }
                if complete {
                    self.cache_receipt(id, PlayOutcome::Cached, PlayReason::None, now_us);
                }
            }
            Stored::Duplicate => {}
            Stored::NoRoom => debug!(%id, index, "programme chunk not kept: the cache is full"),
        }
        false
    }

    /// Quiet hours from the control stream. Err when refused.
    pub(super) fn on_quiet(&mut self, q: SignedQuietHours, now_us: i64) -> Result<(), Refusal> {
        let held = self.programmes.quiet_held(&q);
        match self.verifier.accept_quiet_hours(&q, held, now_us / 1000) {
            Ok(false) => Ok(()),
            Ok(true) => {
                let signer = q.signer().body().resource_code.to_string();
                let body = q.body().to_vec();
                info!(signer, number = q.policy().number, "quiet hours in force");
                if self.programmes.set_quiet(q) {
                    self.journal().persist_quiet(signer, body);
                }
                Ok(())
            }
            Err(r) => {
                self.report(None, &r, q.signer().serial(), false, now_us);
                Err(r)
            }
        }
    }

    /// Programmes, chunks and quiet hours from the store at start: each
    /// checked again (what expired while the terminal was off is
    /// forgotten quietly; nothing unverified is ever played).
    pub fn restore_ahead(&mut self, ahead: crate::journal::Ahead, now_us: i64) {
        let now_ms = now_us / 1000;
        for body in ahead.programmes {
            let Ok(p) = SignedProgramme::decode(&body) else {
                continue;
            };
            let id = p.id();
            match self.verifier.check_programme(&p, None, now_ms) {
                Ok(_) => {
                    let tier = p.signer().tier();
                    self.programmes.insert(p, tier);
                }
                Err(r) => {
                    debug!(%id, "a stored programme no longer holds: {r}");
                    self.journal().forget_programme(id);
                }
            }
        }
        for body in ahead.chunks {
            let Ok(c) = ProgrammeChunk::decode(&body) else {
                continue;
            };
            let held = self.programmes.programme(c.id);
            if held.is_some_and(|p| !p.withdrawn && c.matches(p)) {
                let _ = self.programmes.put_chunk(c, now_ms);
            }
        }
        for body in ahead.quiet {
            let Ok(q) = SignedQuietHours::decode(&body) else {
                continue;
            };
            if self.verifier.check_quiet_hours(&q, None, now_ms).is_ok() {
                self.programmes.set_quiet(q);
            }
        }
        // Restored, not new: their Cached receipts went before the restart.
        self.programmes.mark_reported();
    }

    /// Quiet hours in force here now, from platforms that still verify.
    pub(super) fn quiet_now(&self, now_us: i64) -> Option<Quiet> {
        let now_ms = now_us / 1000;
        self.programmes.quiet_at(self.area, now_ms, |q| {
            !self.verifier.chain_fails(q.chain(), now_ms)
        })
    }

    /// Plays that fall due go into the arbiter (or are skipped, said so);
    /// plays under way get their next frames; plays the arbiter dropped
    /// without ever starting were held out by something higher all along.
    pub(super) fn schedule(&mut self, now_us: i64) {
        let now_ms = now_us / 1000;
        for due in self.programmes.due(now_ms) {
            self.begin_play(due, now_us);
        }
        let locals: Vec<BroadcastId> = self.programmes.plays().map(|(l, _)| *l).collect();
        let mut feeding = false;
        for local in locals {
            if !self.arbiter.has(local) {
                if let Some(p) = self.programmes.end_play(local) {
                    if !p.started {
                        self.play_receipt_of(
                            &p,
                            PlayOutcome::Skipped,
                            PlayReason::Preempted,
                            0,
                            now_us,
                        );
                    }
                }
                continue;
            }
            for (pts, frames, last) in self.programmes.feed(local, now_us + FEED_AHEAD_US) {
                self.arbiter.push(local, pts, frames, last, now_us);
                self.decode_pending = true;
            }
            feeding |= self.programmes.play(local).is_some_and(|p| !p.fully_fed());
        }
        self.next_feed_us = feeding.then_some(now_us + FEED_EVERY_US);
    }

    fn begin_play(&mut self, due: Due, now_us: i64) {
        let reason = match self.programmes.signed(due.programme) {
            Some(p) if self.verifier.chain_fails(p.chain(), now_us / 1000) => {
                Some(PlayReason::Untrusted)
            }
            _ if !due.complete => Some(PlayReason::NotCached),
            _ => None,
        };
        if let Some(reason) = reason {
            self.due_receipt(&due, PlayOutcome::Skipped, reason, 0, now_us);
            return;
        }
        let mut start = due.occurrence_ms;
        let quiet = self.programmes.quiet_at(self.area, start, |q| {
            !self.verifier.chain_fails(q.chain(), now_us / 1000)
        });
        if let Some(q) = quiet {
            let fits = q.until_ms + due.duration_ms <= due.until_ms;
            if q.mode == QuietMode::Skip || !fits {
                self.due_receipt(
                    &due,
                    PlayOutcome::Skipped,
                    PlayReason::QuietHours,
                    0,
                    now_us,
                );
                return;
            }
            start = q.until_ms;
            let later_s = ((start - due.occurrence_ms) / 1000).clamp(0, u32::MAX as i64) as u32;
            self.due_receipt(
                &due,
                PlayOutcome::Postponed,
                PlayReason::QuietHours,
                later_s,
                now_us,
            );
        }
        if let Some((local, header, tier)) = self.programmes.begin(&due, start) {
            debug!(programme = %due.programme, occurrence = due.occurrence_ms, start, "scheduled play");
            self.arbiter.add(header, tier, None, now_us);
            for (pts, frames, last) in self.programmes.feed(local, now_us + FEED_AHEAD_US) {
                self.arbiter.push(local, pts, frames, last, now_us);
            }
            self.decode_pending = true;
        }
    }

    /// A play stops before its end (withdrawn, superseded, untrusted).
    pub(super) fn stop_play(&mut self, local: BroadcastId, reason: PlayReason, now_us: i64) {
        let was_current = self.arbiter.current() == Some(local);
        let heard = self.heard_ms(local);
        self.arbiter.cancel(local);
        if was_current {
            self.cut();
        }
        if let Some(p) = self.programmes.end_play(local) {
            let outcome = if p.started {
                PlayOutcome::Cut
            } else {
                PlayOutcome::Skipped
            };
            self.play_receipt_of(&p, outcome, reason, heard, now_us);
        }
    }

    /// What the arbiter said of a scheduled play, as a programme receipt.
    pub(super) fn play_outcome(
        &mut self,
        local: BroadcastId,
        kind: ReceiptKind,
        detail: u32,
        now_us: i64,
    ) {
        let (outcome, reason, ends) = match kind {
            ReceiptKind::Started => (PlayOutcome::Started, PlayReason::None, false),
            ReceiptKind::Resumed => (PlayOutcome::Resumed, PlayReason::None, false),
            ReceiptKind::Finished => (PlayOutcome::Finished, PlayReason::None, true),
            ReceiptKind::Muted => (PlayOutcome::Muted, PlayReason::None, true),
            ReceiptKind::CutAtEnd => (PlayOutcome::Cut, PlayReason::SlotEnded, true),
            ReceiptKind::Preempted => (PlayOutcome::Preempted, PlayReason::None, false),
            ReceiptKind::Held => (PlayOutcome::Preempted, PlayReason::QuietHours, false),
            ReceiptKind::Skipped => (PlayOutcome::Cut, PlayReason::QuietHours, true),
            // A local play is stopped by `stop_play`, which says why.
            _ => return,
        };
        if matches!(kind, ReceiptKind::Started | ReceiptKind::Resumed) {
            if let Some(p) = self.programmes.play_mut(local) {
                p.started = true;
            }
        }
        let play = if ends {
            self.programmes.end_play(local)
        } else {
            self.programmes.play(local).cloned()
        };
        if let Some(p) = play {
            self.play_receipt_of(&p, outcome, reason, detail, now_us);
        }
    }

    fn heard_ms(&self, local: BroadcastId) -> u32 {
        let frame_ms = (self.config.playout.frame_us / 1000) as u64;
        self.arbiter.records().get(&local).map_or(0, |r| {
            (r.frames_heard * frame_ms).min(u32::MAX as u64) as u32
        })
    }

    fn due_receipt(
        &mut self,
        d: &Due,
        outcome: PlayOutcome,
        reason: PlayReason,
        detail: u32,
        now_us: i64,
    ) {
        self.send_play_receipt(ProgrammeReceipt {
            programme: d.programme,
            revision: d.revision,
            occurrence_ms: d.occurrence_ms,
            terminal_serial: self.serial,
            outcome,
            reason,
            at_ms: now_us / 1000,
            detail,
        });
    }

    fn play_receipt_of(
        &mut self,
        p: &super::programmes::Play,
        outcome: PlayOutcome,
        reason: PlayReason,
        detail: u32,
        now_us: i64,
    ) {
        self.send_play_receipt(ProgrammeReceipt {
            programme: p.programme,
            revision: p.revision,
            occurrence_ms: p.occurrence_ms,
            terminal_serial: self.serial,
            outcome,
            reason,
            at_ms: now_us / 1000,
            detail,
        });
    }

    fn cache_receipt(
        &mut self,
        id: BroadcastId,
        outcome: PlayOutcome,
        reason: PlayReason,
        now_us: i64,
    ) {
        let revision = self.programmes.programme(id).map_or(0, |p| p.revision);
        self.send_play_receipt(ProgrammeReceipt {
            programme: id,
            revision,
            occurrence_ms: 0,
            terminal_serial: self.serial,
            outcome,
            reason,
            at_ms: now_us / 1000,
            detail: 0,
        });
    }

    fn send_play_receipt(&mut self, r: ProgrammeReceipt) {
        debug!(programme = %r.programme, outcome = ?r.outcome, reason = ?r.reason, "programme receipt");
        self.outputs
            .push_back(super::Output::Up(Box::new(Message::ProgrammeReceipt(
                r.sign(&self.key),
            ))));
    }

    /// The id `id` goes by off the terminal: a scheduled play's is its
    /// programme's.
    pub(super) fn wire_id(&self, id: BroadcastId) -> BroadcastId {
        match self.programmes.play(id) {
            Some(p) if id.is_local() => p.programme,
            _ => id,
        }
    }

    /// The next moment the schedule needs the core: a play's preroll, a
    /// play to feed, quiet hours beginning or ending.
    pub(super) fn scheduled_timeout(&self) -> Option<i64> {
        let now_ms = self.now_us / 1000;
        let due = self
            .programmes
            .next_due_ms(now_ms)
            .map(|t| t.max(now_ms + 1) * 1000);
        let quiet = self
            .programmes
            .next_quiet_change(self.area, now_ms)
            .map(|t| t * 1000);
        [due, quiet, self.next_feed_us].into_iter().flatten().min()
    }

    /// Stops plays whose programme's signer no longer verifies (a
    /// revocation applied).
    pub(super) fn stop_untrusted_plays(&mut self, now_us: i64) {
        let locals: Vec<BroadcastId> = self
            .programmes
            .plays()
            .filter(|(_, p)| {
                self.programmes
                    .signed(p.programme)
                    .is_some_and(|s| self.verifier.chain_fails(s.chain(), now_us / 1000))
            })
            .map(|(l, _)| *l)
            .collect();
        for local in locals {
            self.stop_play(local, PlayReason::Untrusted, now_us);
        }
    }

    /// Forgets programmes that are over.
    pub(super) fn prune_programmes(&mut self, now_us: i64) {
        for id in self.programmes.prune(now_us / 1000) {
            self.journal().forget_programme(id);
        }
    }

    fn journal(&mut self) -> &mut crate::journal::Journal {
        self.verifier.store_mut()
    }
}
