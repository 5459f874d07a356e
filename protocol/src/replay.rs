//! What a node remembers to refuse replays: every broadcast id it accepted
//! (with its header digest and how far it got) and every command it executed.
//! A trait, so the terminal keeps it in sled and survives restarts.

use std::collections::HashMap;
use std::convert::Infallible;

use crate::ids::BroadcastId;

/// What is remembered of an accepted broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayRecord {
    /// SHA-256 of the accepted header body.
    pub digest: [u8; 32],
    /// Unix ms after which the record may be forgotten (the header is then
    /// refused as expired anyway).
    pub end_ms: i64,
    /// The lowest segment sequence still acceptable.
    pub next_seq: u32,
    /// Cancelled or complete: nothing more of it is accepted.
    pub closed: bool,
    /// Cancelled: it never plays again, not even after a restart (a
    /// terminal that restarts has lost the audio of what was complete and
    /// takes it again; see `ReplayRecord::rejoin`).
    pub cancelled: bool,
    /// Played to its end (or to the end of its validity) by a terminal:
    /// not taken again after a restart either.
    pub played: bool,
}

impl ReplayRecord {
    /// The record as a terminal that lost its audio with its memory keeps
    /// it: what was neither cancelled nor played out is open again from the
    /// first segment, so
    /// an upstream may send it again. Its timeline, not the record, keeps
    /// what already played from playing twice (the terminal rejoins at the
    /// present).
    pub fn rejoin(self) -> ReplayRecord {
        if self.cancelled || self.played {
            self
        } else {
            ReplayRecord {
                next_seq: 0,
                closed: false,
                ..self
            }
        }
    }
}

pub trait ReplayStore {
    type Error: std::fmt::Display;

    fn get(&self, id: BroadcastId) -> Result<Option<ReplayRecord>, Self::Error>;

    /// Stores the record. Implementations make it durable before returning
    /// when the node relies on it across restarts.
    fn put(&mut self, id: BroadcastId, record: &ReplayRecord) -> Result<(), Self::Error>;

    /// Records a command; false when it was already recorded.
    fn insert_command(
        &mut self,
        signer_serial: u64,
        command_id: u64,
        expires_ms: i64,
    ) -> Result<bool, Self::Error>;

    /// Forgets records that ended before `now_ms`; returns how many.
    fn prune(&mut self, now_ms: i64) -> Result<usize, Self::Error>;

    /// Up to `limit` closed broadcasts that have not ended by `now_ms`: a
    /// subscriber names them so its upstream does not send them again.
    fn closed(&self, now_ms: i64, limit: usize) -> Result<Vec<BroadcastId>, Self::Error>;
}

/// An in-memory store, for relays' hot path and for tests.
#[derive(Debug, Default, Clone)]
pub struct MemoryReplayStore {
    broadcasts: HashMap<BroadcastId, ReplayRecord>,
    commands: HashMap<(u64, u64), i64>,
}

impl MemoryReplayStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.broadcasts.len() + self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Broadcasts accepted but neither complete nor cancelled that have not
    /// ended by `now_ms`, with the next sequence wanted.
    pub fn open(&self, now_ms: i64, limit: usize) -> Vec<(BroadcastId, u32)> {
        self.broadcasts
            .iter()
            .filter(|(_, r)| !r.closed && r.end_ms >= now_ms)
            .map(|(id, r)| (*id, r.next_seq))
            .take(limit)
            .collect()
    }

    /// Forgets what ended before `now_ms`, saying what: the broadcast ids
    /// and the (signer, command id) pairs.
    pub fn remove_ended(&mut self, now_ms: i64) -> (Vec<BroadcastId>, Vec<(u64, u64)>) {
        let broadcasts: Vec<BroadcastId> = self
            .broadcasts
            .iter()
            .filter(|(_, r)| r.end_ms < now_ms)
            .map(|(id, _)| *id)
            .collect();
        let commands: Vec<(u64, u64)> = self
            .commands
            .iter()
            .filter(|(_, e)| **e < now_ms)
            .map(|(k, _)| *k)
            .collect();
        for id in &broadcasts {
            self.broadcasts.remove(id);
        }
        for k in &commands {
            self.commands.remove(k);
        }
        (broadcasts, commands)
    }
}

impl ReplayStore for MemoryReplayStore {
    type Error = Infallible;

    fn get(&self, id: BroadcastId) -> Result<Option<ReplayRecord>, Infallible> {
        Ok(self.broadcasts.get(&id).copied())
    }

    fn put(&mut self, id: BroadcastId, record: &ReplayRecord) -> Result<(), Infallible> {
        self.broadcasts.insert(id, *record);
        Ok(())
    }

    fn insert_command(
        &mut self,
        signer_serial: u64,
        command_id: u64,
        expires_ms: i64,
    ) -> Result<bool, Infallible> {
        Ok(self
            .commands
            .insert((signer_serial, command_id), expires_ms)
            .is_none())
    }

    fn closed(&self, now_ms: i64, limit: usize) -> Result<Vec<BroadcastId>, Infallible> {
        Ok(self
            .broadcasts
            .iter()
            .filter(|(_, r)| r.closed && r.end_ms >= now_ms)
            .map(|(id, _)| *id)
            .take(limit)
            .collect())
    }

    fn prune(&mut self, now_ms: i64) -> Result<usize, Infallible> {
        let (b, c) = self.remove_ended(now_ms);
        Ok(b.len() + c.len())
    }
}
