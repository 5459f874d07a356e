//! What a platform knows of the terminals below it: their latest status and
//! every receipt, summarised per broadcast ("587 / 600 playing").

use std::collections::{BTreeMap, HashMap};

use protocol::{BroadcastId, Receipt, ReceiptKind, RefusalReason, Status};
use serde::Serialize;

/// One terminal's progress with one broadcast.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    received: bool,
    playing: bool,
    finished: bool,
    preempted: bool,
    cancelled: bool,
    refused: Option<RefusalReason>,
    first_started_ms: Option<i64>,
}

/// Counts per broadcast, as the API shows them.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Coverage {
    pub received: u32,
    pub playing: u32,
    pub finished: u32,
    pub preempted: u32,
    pub cancelled: u32,
    pub refused: u32,
    /// Refusals by reason name.
    pub refused_by_reason: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TerminalRow {
    pub serial: String,
    pub online: bool,
    pub last_seen_ms: i64,
    pub volume: u8,
    pub muted: bool,
    pub playing: Option<String>,
    pub software: String,
    pub faults: Vec<String>,
    pub refusals: u64,
}

#[derive(Debug, Default)]
pub struct Book {
    progress: HashMap<BroadcastId, HashMap<u64, Progress>>,
    status: HashMap<u64, (Status, i64)>,
    /// Security events (refusals) reported from below, by reason.
    pub refusals: BTreeMap<RefusalReason, u64>,
}

impl Book {
    pub fn record_receipt(&mut self, r: &Receipt) {
        if r.kind == ReceiptKind::Refused {
            if let Some(reason) = r.reason {
                *self.refusals.entry(reason).or_default() += 1;
            }
        }
        let Some(id) = r.broadcast else { return };
        let p = self
            .progress
            .entry(id)
            .or_default()
            .entry(r.terminal_serial)
            .or_default();
        p.received = true;
        match r.kind {
            ReceiptKind::Received | ReceiptKind::Verified => {}
            ReceiptKind::Started | ReceiptKind::Resumed => {
                p.playing = true;
                p.preempted = false;
                p.first_started_ms.get_or_insert(r.at_ms);
            }
            ReceiptKind::Finished => {
                p.playing = false;
                p.finished = true;
            }
            ReceiptKind::Preempted => {
                p.playing = false;
                p.preempted = true;
            }
            ReceiptKind::Cancelled => {
                p.playing = false;
                p.cancelled = true;
            }
            ReceiptKind::Refused => {
                p.playing = false;
                p.refused = r.reason;
            }
        }
    }

    pub fn record_status(&mut self, s: &Status, now_ms: i64) {
        self.status.insert(s.terminal_serial, (s.clone(), now_ms));
    }

    pub fn coverage(&self, id: BroadcastId) -> Coverage {
        let mut c = Coverage::default();
        for p in self.progress.get(&id).into_iter().flat_map(|m| m.values()) {
            c.received += p.received as u32;
            c.playing += p.playing as u32;
            c.finished += p.finished as u32;
            c.preempted += p.preempted as u32;
            c.cancelled += p.cancelled as u32;
            if let Some(r) = p.refused {
                c.refused += 1;
                *c.refused_by_reason.entry(r.name().to_string()).or_default() += 1;
            }
        }
        c
    }

    /// When each terminal first started `id` (unix ms), for activation latency.
    pub fn start_times(&self, id: BroadcastId) -> Vec<i64> {
        self.progress
            .get(&id)
            .into_iter()
            .flat_map(|m| m.values().filter_map(|p| p.first_started_ms))
            .collect()
    }

    /// Terminals whose last heartbeat is newer than `offline_after_ms` count as online.
    pub fn terminals(&self, now_ms: i64, offline_after_ms: i64) -> Vec<TerminalRow> {
        let mut rows: Vec<TerminalRow> = self
            .status
            .iter()
            .map(|(serial, (s, seen))| TerminalRow {
                serial: format!("{serial:016x}"),
                online: now_ms - seen <= offline_after_ms,
                last_seen_ms: *seen,
                volume: s.volume,
                muted: s.muted,
                playing: s.playing.map(|p| p.to_string()),
                software: s.software.clone(),
                faults: s
                    .faults
                    .iter()
                    .map(|f| format!("{}: {}", f.code, f.detail))
                    .collect(),
                refusals: s.refusals.iter().map(|(_, n)| *n as u64).sum(),
            })
            .collect();
        rows.sort_by(|a, b| a.serial.cmp(&b.serial));
        rows
    }
}
