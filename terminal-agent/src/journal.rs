//! What a terminal remembers across restarts: its replay record (every
//! broadcast it accepted, with its header digest and how far it got; every
//! command it executed) and the revocation lists in force.
//!
//! The verifier reads and writes the record in memory ([`Journal`]), so no
//! frame ever waits for a disk. Each change is also queued as a
//! [`Persist`]; the host's store thread writes it to sled ([`TerminalStore`])
//! behind the terminal's back, flushing at once what must survive a crash
//! (a broadcast seen for the first time, a closed one, a command, a
//! revocation list), the rest (forgetting what ended) within 200 ms.
//! Segment progress is not written: after a restart an open broadcast is
//! taken again from its first segment ([`ReplayRecord::rejoin`]).
//!
//! It also keeps what was sent ahead (R9, R20): each programme's newest
//! signed revision and the chunks of its audio, and the quiet hours of
//! each platform over the terminal's area, so the terminal plays its
//! schedule and keeps its quiet hours through a restart with no link.

use std::convert::Infallible;
use std::path::Path;

use protocol::{BroadcastId, MemoryReplayStore, ReplayRecord, ReplayStore};

/// One change to the stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalOp {
    Broadcast {
        id: BroadcastId,
        record: ReplayRecord,
    },
    Command {
        signer: u64,
        id: u64,
        expires_ms: i64,
    },
    Revocation {
        signer: u64,
        list: Vec<u8>,
    },
    Forget {
        broadcasts: Vec<BroadcastId>,
        commands: Vec<(u64, u64)>,
    },
    /// A programme's newest revision (its signed body).
    Programme {
        id: BroadcastId,
        body: Vec<u8>,
    },
    /// A chunk of a programme's audio (its encoded body).
    Chunk {
        id: BroadcastId,
        index: u16,
        body: Vec<u8>,
    },
    /// A programme's audio left the cache (evicted, or replaced by other
    /// audio in a newer revision).
    DropAudio {
        id: BroadcastId,
    },
    /// A programme is over: it and its audio go.
    ForgetProgramme {
        id: BroadcastId,
    },
    /// A platform's quiet hours (signed body), by its resource code.
    Quiet {
        signer: String,
        body: Vec<u8>,
    },
}

/// A change and whether it must be on disk at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persist {
    pub op: JournalOp,
    pub urgent: bool,
}

/// The replay record in memory, with the changes not yet handed to the
/// store thread.
#[derive(Debug, Default)]
pub struct Journal {
    records: MemoryReplayStore,
    pending: std::collections::VecDeque<Persist>,
}

impl Journal {
    /// The oldest change not yet written.
    pub fn next_change(&mut self) -> Option<Persist> {
        self.pending.pop_front()
    }

    /// Every change not yet written, oldest first.
    pub fn drain(&mut self) -> std::collections::vec_deque::Drain<'_, Persist> {
        self.pending.drain(..)
    }

    /// Keeps a revocation list (applied by the verifier) for the store.
    pub fn persist_revocation(&mut self, signer: u64, list: Vec<u8>) {
        self.pending.push_back(Persist {
            op: JournalOp::Revocation { signer, list },
            urgent: true,
        });
    }

    /// Keeps a programme's newest revision.
    pub fn persist_programme(&mut self, id: BroadcastId, body: Vec<u8>) {
        self.pending.push_back(Persist {
            op: JournalOp::Programme { id, body },
            urgent: true,
        });
    }

    /// Keeps a chunk of audio. Not flushed at once: one lost in a crash is
    /// missing from the inventory after the restart, and sent again.
    pub fn persist_chunk(&mut self, id: BroadcastId, index: u16, body: Vec<u8>) {
        self.pending.push_back(Persist {
            op: JournalOp::Chunk { id, index, body },
            urgent: false,
        });
    }

    pub fn drop_programme_audio(&mut self, id: BroadcastId) {
        self.pending.push_back(Persist {
            op: JournalOp::DropAudio { id },
            urgent: false,
        });
    }

    pub fn forget_programme(&mut self, id: BroadcastId) {
        self.pending.push_back(Persist {
            op: JournalOp::ForgetProgramme { id },
            urgent: false,
        });
    }

    pub fn persist_quiet(&mut self, signer: String, body: Vec<u8>) {
        self.pending.push_back(Persist {
            op: JournalOp::Quiet { signer, body },
            urgent: true,
        });
    }

    /// The terminal played `id` to its end (or to the end of its validity):
    /// after a restart it is not taken again.
    pub fn mark_played(&mut self, id: BroadcastId) {
        if let Ok(Some(r)) = self.records.get(id) {
            let record = ReplayRecord { played: true, ..r };
            let _ = self.records.put(id, &record);
            self.pending.push_back(Persist {
                op: JournalOp::Broadcast { id, record },
                urgent: true,
            });
        }
    }

    /// Broadcasts accepted but neither complete nor cancelled that have not
    /// ended, with the next sequence wanted: after a restart the terminal
    /// asks its upstream to resume them there.
    pub fn open(&self, now_ms: i64, limit: usize) -> Vec<(BroadcastId, u32)> {
        self.records.open(now_ms, limit)
    }
}

impl ReplayStore for Journal {
    type Error = Infallible;

    fn get(&self, id: BroadcastId) -> Result<Option<ReplayRecord>, Infallible> {
        self.records.get(id)
    }

    fn put(&mut self, id: BroadcastId, record: &ReplayRecord) -> Result<(), Infallible> {
        let before = self.records.get(id)?;
        self.records.put(id, record)?;
        let first = before.is_none();
        // Progress alone is kept in memory only: a restarted terminal has
        // lost the audio and takes an open broadcast again from its first
        // segment (`ReplayRecord::rejoin`), so a stored sequence would be
        // reset on load anyway. Writing it cost every terminal a store write
        // and a flush per segment.
        let progress_only = before.is_some_and(|b| {
            !record.closed
                && ReplayRecord {
                    next_seq: record.next_seq,
                    ..b
                } == *record
        });
        if progress_only {
            return Ok(());
        }
        self.pending.push_back(Persist {
            op: JournalOp::Broadcast {
                id,
                record: *record,
            },
            urgent: first || record.closed,
        });
        Ok(())
    }

    fn insert_command(
        &mut self,
        signer_serial: u64,
        command_id: u64,
        expires_ms: i64,
    ) -> Result<bool, Infallible> {
        let fresh = self
            .records
            .insert_command(signer_serial, command_id, expires_ms)?;
        if fresh {
            self.pending.push_back(Persist {
                op: JournalOp::Command {
                    signer: signer_serial,
                    id: command_id,
                    expires_ms,
                },
                urgent: true,
            });
        }
        Ok(fresh)
    }

    fn closed(&self, now_ms: i64, limit: usize) -> Result<Vec<BroadcastId>, Infallible> {
        self.records.closed(now_ms, limit)
    }

    fn prune(&mut self, now_ms: i64) -> Result<usize, Infallible> {
        let (broadcasts, commands) = self.records.remove_ended(now_ms);
        let n = broadcasts.len() + commands.len();
        if n > 0 {
            self.pending.push_back(Persist {
                op: JournalOp::Forget {
                    broadcasts,
                    commands,
                },
                urgent: false,
            });
        }
        Ok(n)
    }
}

fn encode(r: &ReplayRecord) -> [u8; 45] {
    let mut b = [0u8; 45];
    b[..32].copy_from_slice(&r.digest);
    b[32..40].copy_from_slice(&r.end_ms.to_be_bytes());
    b[40..44].copy_from_slice(&r.next_seq.to_be_bytes());
    b[44] = r.closed as u8 | (r.cancelled as u8) << 1 | (r.played as u8) << 2;
    b
}

/// A record that does not decode is treated as seen and closed: never play
/// what cannot be checked.
fn decode(b: &[u8]) -> ReplayRecord {
    let unreadable = ReplayRecord {
        digest: [0; 32],
        end_ms: i64::MAX,
        next_seq: u32::MAX,
        closed: true,
        cancelled: true,
        played: true,
    };
    if b.len() != 45 {
        return unreadable;
    }
    let (Ok(digest), Ok(end), Ok(next)) = (
        b[..32].try_into(),
        <[u8; 8]>::try_from(&b[32..40]),
        <[u8; 4]>::try_from(&b[40..44]),
    ) else {
        return unreadable;
    };
    ReplayRecord {
        digest,
        end_ms: i64::from_be_bytes(end),
        next_seq: u32::from_be_bytes(next),
        closed: b[44] & 1 != 0,
        cancelled: b[44] & 2 != 0,
        played: b[44] & 4 != 0,
    }
}

fn command_key(signer: u64, id: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&signer.to_be_bytes());
    k[8..].copy_from_slice(&id.to_be_bytes());
    k
}

/// The terminal's sled store. Written only by the host's store thread
/// (after start-up), flushed only when that thread says.
pub struct TerminalStore {
    db: sled::Db,
    broadcasts: sled::Tree,
    commands: sled::Tree,
    revocations: sled::Tree,
    programmes: sled::Tree,
    chunks: sled::Tree,
    quiet: sled::Tree,
}

/// What a terminal finds in its store at start.
pub struct Loaded {
    pub journal: Journal,
    /// Encoded revocation lists, one per signer.
    pub revocations: Vec<Vec<u8>>,
    /// What was sent ahead: programmes, their audio, quiet hours (bodies,
    /// verified again before use).
    pub ahead: Ahead,
}

/// Programmes, chunks and quiet hours as stored (signed or digest-bound
/// bodies: the core checks each again).
#[derive(Debug, Default)]
pub struct Ahead {
    pub programmes: Vec<Vec<u8>>,
    pub chunks: Vec<Vec<u8>>,
    pub quiet: Vec<Vec<u8>>,
}

fn chunk_key(id: BroadcastId, index: u16) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[..16].copy_from_slice(&id.as_u128().to_be_bytes());
    k[16..].copy_from_slice(&index.to_be_bytes());
    k
}

impl TerminalStore {
    pub fn open(path: &Path) -> Result<Self, sled::Error> {
        // No background flusher: the store thread flushes (one thread for
        // every terminal of a process instead of one each).
        // A small cache: the record is read once, at start (sled's default
        // of 1 GiB would let every terminal's memory grow with its writes).
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .cache_capacity(128 * 1024)
            .open()?;
        Ok(TerminalStore {
            broadcasts: db.open_tree("broadcasts")?,
            commands: db.open_tree("commands")?,
            revocations: db.open_tree("revocations")?,
            programmes: db.open_tree("programmes")?,
            chunks: db.open_tree("programme_chunks")?,
            quiet: db.open_tree("quiet_hours")?,
            db,
        })
    }

    /// Everything stored, into memory (bounded: records are forgotten once
    /// their broadcast or command has ended). The audio held before the
    /// restart is gone, so what was not cancelled is taken again
    /// (`ReplayRecord::rejoin`), and plays from the present on.
    pub fn load(&self) -> Result<Loaded, sled::Error> {
        let mut journal = Journal::default();
        for item in self.broadcasts.iter() {
            let (k, v) = item?;
            let id = <[u8; 16]>::try_from(&k[..])
                .ok()
                .and_then(|k| BroadcastId::from_u128(u128::from_be_bytes(k)).ok());
            if let Some(id) = id {
                let _ = journal.records.put(id, &decode(&v).rejoin());
            }
        }
        for item in self.commands.iter() {
            let (k, v) = item?;
            let (Ok(k), Ok(v)) = (<[u8; 16]>::try_from(&k[..]), <[u8; 8]>::try_from(&v[..])) else {
                continue;
            };
            let signer = u64::from_be_bytes(k[..8].try_into().unwrap_or_default());
            let id = u64::from_be_bytes(k[8..].try_into().unwrap_or_default());
            let _ = journal
                .records
                .insert_command(signer, id, i64::from_be_bytes(v));
        }
        let revocations = self
            .revocations
            .iter()
            .values()
            .map(|v| Ok(v?.to_vec()))
            .collect::<Result<_, sled::Error>>()?;
        let values = |t: &sled::Tree| {
            t.iter()
                .values()
                .map(|v| Ok(v?.to_vec()))
                .collect::<Result<Vec<_>, sled::Error>>()
        };
        let ahead = Ahead {
            programmes: values(&self.programmes)?,
            chunks: values(&self.chunks)?,
            quiet: values(&self.quiet)?,
        };
        Ok(Loaded {
            journal,
            revocations,
            ahead,
        })
    }

    fn remove_chunks(&self, id: BroadcastId) -> Result<(), sled::Error> {
        for k in self.chunks.scan_prefix(id.as_u128().to_be_bytes()).keys() {
            self.chunks.remove(k?)?;
        }
        Ok(())
    }

    pub fn apply(&self, op: &JournalOp) -> Result<(), sled::Error> {
        match op {
            JournalOp::Broadcast { id, record } => {
                self.broadcasts
                    .insert(id.as_u128().to_be_bytes(), &encode(record)[..])?;
            }
            JournalOp::Command {
                signer,
                id,
                expires_ms,
            } => {
                self.commands
                    .insert(command_key(*signer, *id), &expires_ms.to_be_bytes()[..])?;
            }
            JournalOp::Revocation { signer, list } => {
                self.revocations
                    .insert(signer.to_be_bytes(), list.as_slice())?;
            }
            JournalOp::Forget {
                broadcasts,
                commands,
            } => {
                for id in broadcasts {
                    self.broadcasts.remove(id.as_u128().to_be_bytes())?;
                }
                for (s, i) in commands {
                    self.commands.remove(command_key(*s, *i))?;
                }
            }
            JournalOp::Programme { id, body } => {
                self.programmes
                    .insert(id.as_u128().to_be_bytes(), body.as_slice())?;
            }
            JournalOp::Chunk { id, index, body } => {
                self.chunks
                    .insert(chunk_key(*id, *index), body.as_slice())?;
            }
            JournalOp::DropAudio { id } => self.remove_chunks(*id)?,
            JournalOp::ForgetProgramme { id } => {
                self.programmes.remove(id.as_u128().to_be_bytes())?;
                self.remove_chunks(*id)?;
            }
            JournalOp::Quiet { signer, body } => {
                self.quiet.insert(signer.as_bytes(), body.as_slice())?;
            }
        }
        Ok(())
    }

    pub fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> BroadcastId {
        BroadcastId::from_u128(43601210000000101010000202612010000 + n).unwrap()
    }

    fn record(next_seq: u32, closed: bool) -> ReplayRecord {
        ReplayRecord {
            digest: [7; 32],
            end_ms: 10_000,
            next_seq,
            closed,
            cancelled: closed,
            played: false,
        }
    }

    #[test]
    fn changes_reach_the_store_and_come_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let mut j = Journal::default();
        j.put(id(1), &record(0, false)).unwrap();
        j.put(id(1), &record(5, false)).unwrap();
        j.put(id(2), &record(3, true)).unwrap();
        let complete = ReplayRecord {
            cancelled: false,
            ..record(9, true)
        };
        j.put(id(3), &complete).unwrap();
        j.put(id(4), &complete).unwrap();
        j.mark_played(id(4));
        assert!(j.insert_command(9, 1, 10_000).unwrap());
        assert!(
            !j.insert_command(9, 1, 10_000).unwrap(),
            "a replayed command"
        );
        j.persist_revocation(4, vec![1, 2, 3]);
        let urgent: Vec<bool> = j.pending.iter().map(|p| p.urgent).collect();
        // First sight (its progress stays in memory), cancelled, complete,
        // complete, played, command, revocation.
        assert_eq!(urgent, [true, true, true, true, true, true, true]);
        assert_eq!(j.records.get(id(1)).unwrap().unwrap().next_seq, 5);
        {
            let store = TerminalStore::open(&path).unwrap();
            for p in j.drain() {
                store.apply(&p.op).unwrap();
            }
            store.flush().unwrap();
        }
        let store = TerminalStore::open(&path).unwrap();
        let mut loaded = store.load().unwrap();
        assert_eq!(loaded.revocations, vec![vec![1, 2, 3]]);
        let back = &mut loaded.journal;
        // The audio went with the memory: what was not cancelled is taken
        // again from its start; what was cancelled stays closed.
        assert_eq!(back.get(id(1)).unwrap(), Some(record(0, false)));
        let mut open = back.open(0, 10);
        open.sort();
        assert_eq!(open, vec![(id(1), 0), (id(3), 0)]);
        // A broadcast played out is not taken again either.
        let mut closed = back.closed(0, 10).unwrap();
        closed.sort();
        assert_eq!(closed, vec![id(2), id(4)]);
        assert!(!back.insert_command(9, 1, 10_000).unwrap(), "still refused");
        // Ended records are forgotten, in memory and in the store.
        assert_eq!(back.prune(20_000).unwrap(), 5);
        for p in back.drain() {
            store.apply(&p.op).unwrap();
        }
        assert!(store.load().unwrap().journal.records.is_empty());
    }

    #[test]
    fn an_unreadable_record_counts_as_closed() {
        let r = decode(&[1, 2, 3]);
        assert!(r.closed && r.next_seq == u32::MAX && r.end_ms == i64::MAX);
    }
}
