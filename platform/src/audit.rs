//! The audit trail: who did what, when, to where, with what outcome.
//! Append-only in the platform's store, hash-chained (each entry carries
//! the hash of the one before), the head signed by the platform's key at
//! intervals (a `seal` entry). Each entry is flushed before the action it
//! records is acknowledged. `verify` checks a store's entries or an export
//! and names the first bad entry.

use std::sync::{Arc, Mutex};

use certs::{PublicKey, SignContext, Signature};
use serde::{Deserialize, Serialize};

/// A seal is written after this many entries, or at the next housekeeping
/// tick once `SEAL_EVERY_MS` has passed with entries unsealed.
pub const SEAL_EVERY_ENTRIES: u64 = 64;
pub const SEAL_EVERY_MS: i64 = 10 * 60_000;
/// The hash before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// The platform refused it (not allowed, invalid).
    Refused,
    /// Allowed, but it failed.
    Failed,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

/// One entry. Field order is the canonical form the hash covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// 1, 2, 3, ... with no gaps.
    pub seq: u64,
    /// UTC, unix ms.
    pub at_ms: i64,
    /// The account (or `system`, or the name tried at a failed login).
    pub actor: String,
    /// e.g. `login`, `draft.create`, `draft.approve`, `broadcast.publish`.
    pub action: String,
    /// What it acted on: a draft, broadcast, account or command id.
    pub object: String,
    /// Area codes concerned.
    pub areas: Vec<String>,
    pub outcome: Outcome,
    /// Free text (Chinese kept as it is): a comment, a reason, an error.
    pub detail: String,
    /// Hash of the entry before (GENESIS for the first).
    pub prev: String,
    /// SHA-256 over the canonical JSON of the fields above, hex.
    pub hash: String,
    /// On a seal entry: the platform's signature over `hash`, with the
    /// serial of the certificate that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<Seal>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Seal {
    pub signer: String,
    pub signature: String,
}

/// What a caller records; the trail adds seq, time and hashes.
#[derive(Debug, Clone)]
pub struct Record {
    pub actor: String,
    pub action: &'static str,
    pub object: String,
    pub areas: Vec<String>,
    pub outcome: Outcome,
    pub detail: String,
}

impl Record {
    pub fn new(actor: &str, action: &'static str, object: impl Into<String>) -> Self {
        Record {
            actor: actor.to_string(),
            action,
            object: object.into(),
            areas: Vec::new(),
            outcome: Outcome::Ok,
            detail: String::new(),
        }
    }

    pub fn areas<T: ToString>(mut self, areas: &[T]) -> Self {
        self.areas = areas.iter().map(|a| a.to_string()).collect();
        self
    }

    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    at_ms: i64,
    actor: &'a str,
    action: &'a str,
    object: &'a str,
    areas: &'a [String],
    outcome: Outcome,
    detail: &'a str,
    prev: &'a str,
}

impl Entry {
    /// The hash of this entry's content.
    pub fn compute_hash(&self) -> String {
        let h = Hashed {
            seq: self.seq,
            at_ms: self.at_ms,
            actor: &self.actor,
            action: &self.action,
            object: &self.object,
            areas: &self.areas,
            outcome: self.outcome,
            detail: &self.detail,
            prev: &self.prev,
        };
        let bytes = serde_json::to_vec(&h).unwrap_or_default();
        hex::encode(crate::accounts::sha256(&bytes))
    }

    /// The entry's JSON line as an export writes it.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// When, in Asia/Shanghai.
    pub fn local_time(&self) -> String {
        china_time(self.at_ms)
    }
}

pub fn china_time(unix_ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(unix_ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(certs::time::CHINA_OFFSET);
    let f =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] +08:00");
    t.format(&f).unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit store: {0}")]
    Store(#[from] sled::Error),
    #[error("audit trail: {0}")]
    Corrupt(String),
}

struct Head {
    seq: u64,
    hash: String,
    unsealed: u64,
    last_seal_ms: i64,
}

/// The trail of one platform.
#[derive(Clone)]
pub struct AuditTrail {
    db: sled::Db,
    tree: sled::Tree,
    head: Arc<Mutex<Head>>,
    sealer: Sealer,
}

/// Signs a seal's hash (under `SignContext::AuditSeal`); returns the
/// signer's certificate serial and the signature.
pub type Sealer = Arc<dyn Fn(&[u8]) -> (u64, Signature) + Send + Sync>;

/// A seal of `hash` by `identity`: its certificate's serial and signature.
pub fn seal_with(identity: &certs::Identity, hash: &[u8]) -> (u64, Signature) {
    (
        identity.cert().serial(),
        identity.key.sign(SignContext::AuditSeal, &[hash]),
    )
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

impl AuditTrail {
    /// Opens the trail in `db`; seals are signed by `sealer`.
    pub fn open(db: &sled::Db, sealer: Sealer) -> Result<Self, AuditError> {
        let tree = db.open_tree("audit")?;
        let (seq, hash, unsealed, last_seal_ms) = match tree.last()? {
            Some((_, v)) => {
                let e: Entry = serde_json::from_slice(&v)
                    .map_err(|e| AuditError::Corrupt(format!("last entry: {e}")))?;
                let unsealed = if e.seal.is_some() { 0 } else { 1 };
                (e.seq, e.hash, unsealed, e.at_ms)
            }
            None => (0, GENESIS.to_string(), 0, 0),
        };
        Ok(AuditTrail {
            db: db.clone(),
            tree,
            head: Arc::new(Mutex::new(Head {
                seq,
                hash,
                unsealed,
                last_seal_ms,
            })),
            sealer,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Head> {
        self.head.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `r` at `now_ms` and makes it durable before returning. The
    /// head's lock is held only while the entry is chained and inserted;
    /// the fsync happens after.
    pub fn record(&self, r: Record, now_ms: i64) -> Result<Entry, AuditError> {
        let (entry, seal_due) = {
            let mut head = self.lock();
            let entry = self.append(&mut head, r, now_ms, false)?;
            (entry, head.unsealed >= SEAL_EVERY_ENTRIES)
        };
        if seal_due {
            self.seal(now_ms)?;
        }
        self.db.flush()?;
        Ok(entry)
    }

    fn append(
        &self,
        head: &mut Head,
        r: Record,
        now_ms: i64,
        seal: bool,
    ) -> Result<Entry, AuditError> {
        let mut e = Entry {
            seq: head.seq + 1,
            at_ms: now_ms,
            actor: r.actor,
            action: r.action.to_string(),
            object: r.object,
            areas: r.areas,
            outcome: r.outcome,
            detail: r.detail,
            prev: head.hash.clone(),
            hash: String::new(),
            seal: None,
        };
        e.hash = e.compute_hash();
        if seal {
            let (serial, sig) = (self.sealer)(e.hash.as_bytes());
            e.seal = Some(Seal {
                signer: format!("{serial:016x}"),
                signature: hex::encode(sig),
            });
        }
        let v = serde_json::to_vec(&e).map_err(|x| AuditError::Corrupt(x.to_string()))?;
        self.tree.insert(key(e.seq), v)?;
        head.seq = e.seq;
        head.hash = e.hash.clone();
        if seal {
            head.unsealed = 0;
            head.last_seal_ms = now_ms;
        } else {
            head.unsealed += 1;
        }
        Ok(e)
    }

    /// Signs the head now if anything is unsealed.
    pub fn seal(&self, now_ms: i64) -> Result<Option<Entry>, AuditError> {
        let e = {
            let mut head = self.lock();
            if head.unsealed == 0 {
                return Ok(None);
            }
            let r = Record::new("system", "audit.seal", format!("{}", head.seq))
                .detail(format!("head {}", head.hash));
            self.append(&mut head, r, now_ms, true)?
        };
        self.db.flush()?;
        Ok(Some(e))
    }

    /// Seals if the last seal is older than `SEAL_EVERY_MS` (housekeeping).
    pub fn seal_if_due(&self, now_ms: i64) -> Result<(), AuditError> {
        let due = {
            let head = self.lock();
            head.unsealed > 0 && now_ms - head.last_seal_ms >= SEAL_EVERY_MS
        };
        if due {
            self.seal(now_ms)?;
        }
        Ok(())
    }

    /// Entries with `from <= seq`, oldest first, at most `limit`.
    pub fn entries(&self, from: u64, limit: usize) -> Result<Vec<Entry>, AuditError> {
        let mut out = Vec::new();
        for item in self.tree.range(key(from)..) {
            if out.len() >= limit {
                break;
            }
            let (_, v) = item?;
            out.push(serde_json::from_slice(&v).map_err(|e| AuditError::Corrupt(e.to_string()))?);
        }
        Ok(out)
    }

    /// The newest entries, newest first.
    pub fn latest(&self, limit: usize) -> Result<Vec<Entry>, AuditError> {
        let mut out = Vec::new();
        for item in self.tree.iter().rev().take(limit) {
            let (_, v) = item?;
            out.push(serde_json::from_slice(&v).map_err(|e| AuditError::Corrupt(e.to_string()))?);
        }
        Ok(out)
    }

    /// Every entry's stored bytes, oldest first (verify reads the bytes).
    pub fn raw(&self) -> impl Iterator<Item = Result<Vec<u8>, AuditError>> + '_ {
        self.tree
            .iter()
            .map(|i| i.map(|(_, v)| v.to_vec()).map_err(AuditError::from))
    }

    pub fn len(&self) -> u64 {
        self.lock().seq
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What `verify` found in a good trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verified {
    pub entries: u64,
    pub seals: u64,
    /// The last sealed entry: whatever follows it is chained but not yet
    /// signed.
    pub last_sealed: u64,
}

/// Why a trail fails: the first bad entry (its line number in an export,
/// or its seq in a store) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("entry {line}: {problem}")]
pub struct Broken {
    pub line: u64,
    pub problem: String,
}

/// Checks entries (the exact bytes of each, as stored or as exported)
/// against each other and the seals against `keys` (by signer serial).
/// An entry must be in canonical form, so no byte can change unnoticed.
pub fn verify(
    lines: impl IntoIterator<Item = Vec<u8>>,
    keys: &dyn Fn(&str) -> Option<PublicKey>,
) -> Result<Verified, Broken> {
    let mut prev = GENESIS.to_string();
    let mut done = Verified {
        entries: 0,
        seals: 0,
        last_sealed: 0,
    };
    for (i, bytes) in lines.into_iter().enumerate() {
        let line = i as u64 + 1;
        let bad = |problem: String| Broken { line, problem };
        let e: Entry =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not an audit entry: {e}")))?;
        if e.to_line().as_bytes() != bytes.as_slice() {
            return Err(bad("not in the form the platform wrote (altered)".into()));
        }
        if e.seq != line {
            return Err(bad(format!(
                "sequence {} where {line} was expected (an entry is missing or out of order)",
                e.seq
            )));
        }
        if e.prev != prev {
            return Err(bad(
                "does not follow the entry before it (prev hash differs)".into(),
            ));
        }
        if e.compute_hash() != e.hash {
            return Err(bad("its content does not match its hash (altered)".into()));
        }
        if let Some(seal) = &e.seal {
            let key = keys(&seal.signer)
                .ok_or_else(|| bad(format!("sealed by {} whose key is not known", seal.signer)))?;
            let sig = hex::decode(&seal.signature)
                .ok()
                .and_then(|b| Signature::try_from(b.as_slice()).ok())
                .ok_or_else(|| bad("the seal's signature is not 64 bytes of hex".into()))?;
            if !key.verify(SignContext::AuditSeal, &[e.hash.as_bytes()], &sig) {
                return Err(bad("the seal's signature does not verify".into()));
            }
            done.seals += 1;
            done.last_sealed = e.seq;
        }
        prev = e.hash;
        done.entries = line;
    }
    Ok(done)
}

/// CSV of entries (UTF-8 with a byte-order mark, so spreadsheet programs
/// show the Chinese text as it is).
pub fn to_csv(entries: &[Entry]) -> String {
    let mut out = String::from("\u{feff}seq,time_utc_ms,time_china,actor,action,object,areas,outcome,detail,prev,hash,seal\r\n");
    for e in entries {
        let fields = [
            e.seq.to_string(),
            e.at_ms.to_string(),
            e.local_time(),
            e.actor.clone(),
            e.action.clone(),
            e.object.clone(),
            e.areas.join(" "),
            e.outcome.name().to_string(),
            e.detail.clone(),
            e.prev.clone(),
            e.hash.clone(),
            e.seal
                .as_ref()
                .map(|s| format!("{}:{}", s.signer, s.signature))
                .unwrap_or_default(),
        ];
        let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    out
}

fn csv_field(f: &str) -> String {
    // A leading = + - @ would be read as a formula by a spreadsheet.
    let f = if f.starts_with(['=', '+', '-', '@']) {
        format!("'{f}")
    } else {
        f.to_string()
    };
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(key: certs::SecretKey) -> Sealer {
        Arc::new(move |m| (7, key.sign(SignContext::AuditSeal, &[m])))
    }

    fn trail() -> (tempfile::TempDir, AuditTrail, PublicKey) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let key = certs::SecretKey::generate();
        let public = key.public();
        (dir, AuditTrail::open(&db, signer(key)).unwrap(), public)
    }

    #[test]
    fn a_trail_verifies_and_any_changed_byte_is_named() {
        let (_d, t, key) = trail();
        for i in 0..150 {
            t.record(
                Record::new("张三", "draft.approve", format!("d{i}"))
                    .areas(&["360100000000"])
                    .detail("同意发布,请注意"),
                1_000 + i,
            )
            .unwrap();
        }
        t.seal(5_000).unwrap();
        let lines: Vec<Vec<u8>> = t.raw().map(|r| r.unwrap()).collect();
        let keys = |_: &str| Some(key);
        let ok = verify(lines.clone(), &keys).unwrap();
        assert_eq!(ok.entries, lines.len() as u64);
        assert_eq!(ok.seals, 3, "64, 128 and the final seal");
        assert_eq!(ok.last_sealed, ok.entries);
        // One byte of entry 77 changed (a digit of its object id).
        let mut bad = lines.clone();
        let pos = bad[76]
            .windows(11)
            .position(|w| w == b"\"object\":\"d")
            .unwrap()
            + 11;
        bad[76][pos] ^= 1;
        let e = verify(bad, &keys).unwrap_err();
        assert_eq!(e.line, 77, "{e}");
        // A byte of whitespace added: not canonical.
        let mut bad = lines.clone();
        bad[9].insert(1, b' ');
        assert_eq!(verify(bad, &keys).unwrap_err().line, 10);
        // An entry removed.
        let mut bad = lines.clone();
        bad.remove(20);
        assert_eq!(verify(bad, &keys).unwrap_err().line, 21);
        // A seal made with another key.
        let okey = certs::SecretKey::generate().public();
        assert_eq!(verify(lines.clone(), &|_| Some(okey)).unwrap_err().line, 65);
        // Reopened, the trail goes on from its head.
        let n = t.len();
        let t2 = AuditTrail::open(&t.db, t.sealer.clone()).unwrap();
        t2.record(Record::new("李四", "login", "李四"), 9_000)
            .unwrap();
        let lines: Vec<Vec<u8>> = t2.raw().map(|r| r.unwrap()).collect();
        assert_eq!(verify(lines, &keys).unwrap().entries, n + 1);
        let csv = to_csv(&t2.latest(2).unwrap());
        assert!(csv.contains("李四") && csv.contains("+08:00"), "{csv}");
    }
}
