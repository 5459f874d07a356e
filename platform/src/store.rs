//! The platform's durable state in sled: broadcasts (header and segment
//! frames), receipts, terminal status, security events and revocation lists. Anything acknowledged to an
//! operator or a peer is flushed first.

use std::path::Path;

use protocol::BroadcastId;

#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(#[from] sled::Error);

/// A stored broadcast: its header frame and its segment frames by sequence.
pub type StoredBroadcast = (Vec<u8>, Vec<(u32, Vec<u8>)>);

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    headers: sled::Tree,
    segments: sled::Tree,
    receipts: sled::Tree,
    status: sled::Tree,
    events: sled::Tree,
    revocations: sled::Tree,
    /// Broadcasts silenced here (R20): id → the areas, as u64s.
    silences: sled::Tree,
    /// This platform's publish requests not yet decided above: request id
    /// → the signed frame, sent again at each connection to a parent.
    outbox: sled::Tree,
    /// Next free broadcast sequence number per issue day (yyyymmdd).
    sequences: sled::Tree,
    /// Programme receipts: (programme, start, terminal, outcome) → frame.
    play_receipts: sled::Tree,
}

/// Broadcast ids carry a 4-digit sequence of the issue day.
pub const SEQUENCES_PER_DAY: u16 = 10_000;

fn seg_key(id: BroadcastId, seq: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(&id.as_u128().to_be_bytes());
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// A stored counter that does not decode counts as exhausted: never risk
/// reusing a number.
fn decode_sequence(v: &[u8]) -> u16 {
    <[u8; 2]>::try_from(v).map_or(SEQUENCES_PER_DAY, u16::from_be_bytes)
}

/// The store's page cache.
pub const STORE_CACHE_BYTES: u64 = 2 * 1024 * 1024;

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // sled caches what it wrote up to its cache capacity (1 GiB by
        // default): a platform writes every segment and receipt it relays,
        // so without a bound its memory grows with every broadcast. What
        // is read back (at start, for the API) comes from disk.
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(STORE_CACHE_BYTES)
            .open()?;
        Ok(Store {
            headers: db.open_tree("headers")?,
            segments: db.open_tree("segments")?,
            receipts: db.open_tree("receipts")?,
            status: db.open_tree("status")?,
            events: db.open_tree("events")?,
            revocations: db.open_tree("revocations")?,
            silences: db.open_tree("silences")?,
            outbox: db.open_tree("outbox")?,
            sequences: db.open_tree("sequences")?,
            play_receipts: db.open_tree("play_receipts")?,
            db,
        })
    }

    /// Reserves the next sequence number of issue day `day` (yyyymmdd) and
    /// makes the reservation durable before returning it, so no crash can
    /// ever hand the same number out twice. None once the day's
    /// `SEQUENCES_PER_DAY` numbers are all taken.
    pub fn reserve_sequence(&self, day: u32) -> Result<Option<u16>, StoreError> {
        let taken = self.sequences.fetch_and_update(day.to_be_bytes(), |old| {
            let next = old.map_or(0, decode_sequence);
            Some(
                next.saturating_add(1)
                    .min(SEQUENCES_PER_DAY)
                    .to_be_bytes()
                    .to_vec(),
            )
        })?;
        self.db.flush()?;
        let n = taken.map_or(0, |v| decode_sequence(&v));
        Ok((n < SEQUENCES_PER_DAY).then_some(n))
    }

    pub fn put_header(&self, id: BroadcastId, frame: &[u8]) -> Result<(), StoreError> {
        self.headers.insert(id.as_u128().to_be_bytes(), frame)?;
        Ok(())
    }

    pub fn put_segment(&self, id: BroadcastId, seq: u32, frame: &[u8]) -> Result<(), StoreError> {
        self.segments.insert(seg_key(id, seq), frame)?;
        Ok(())
    }

    /// The database, for the trees other parts keep (accounts, drafts,
    /// the audit trail).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Every stored broadcast: header frame and its segment frames in order.
    pub fn broadcasts(&self) -> Result<Vec<StoredBroadcast>, StoreError> {
        let mut out = Vec::new();
        for item in self.headers.iter() {
            let (k, header) = item?;
            let mut segs = Vec::new();
            for s in self.segments.scan_prefix(&k) {
                let (sk, frame) = s?;
                let seq = u32::from_be_bytes(sk[16..20].try_into().unwrap_or([0; 4]));
                segs.push((seq, frame.to_vec()));
            }
            out.push((header.to_vec(), segs));
        }
        Ok(out)
    }

    /// Keeps a receipt frame (broadcast, terminal and kind make the key: a
    /// repeated receipt replaces the same one).
    pub fn put_receipt(
        &self,
        id: Option<BroadcastId>,
        terminal: u64,
        kind: u8,
        at_ms: i64,
        frame: &[u8],
    ) -> Result<(), StoreError> {
        let mut k = Vec::with_capacity(33);
        k.extend_from_slice(&id.map_or(0, BroadcastId::as_u128).to_be_bytes());
        k.extend_from_slice(&terminal.to_be_bytes());
        k.push(kind);
        // Refusals are security events: keep each one.
        if id.is_none() || kind == protocol::ReceiptKind::Refused.code() {
            k.extend_from_slice(&at_ms.to_be_bytes());
        }
        self.receipts.insert(k, frame)?;
        Ok(())
    }

    /// Keeps a programme receipt (a repeated one replaces the same).
    pub fn put_play_receipt(
        &self,
        r: &protocol::ProgrammeReceipt,
        body: &[u8],
    ) -> Result<(), StoreError> {
        let mut k = Vec::with_capacity(33);
        k.extend_from_slice(&r.programme.as_u128().to_be_bytes());
        k.extend_from_slice(&r.occurrence_ms.to_be_bytes());
        k.extend_from_slice(&r.terminal_serial.to_be_bytes());
        k.push(r.outcome.code());
        self.play_receipts.insert(k, body)?;
        Ok(())
    }

    pub fn play_receipts(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.play_receipts
            .iter()
            .values()
            .map(|v| Ok(v?.to_vec()))
            .collect()
    }

    /// Forgets the programme receipts of `id`.
    pub fn remove_play_receipts(&self, id: BroadcastId) -> Result<(), StoreError> {
        for k in self
            .play_receipts
            .scan_prefix(id.as_u128().to_be_bytes())
            .keys()
        {
            self.play_receipts.remove(k?)?;
        }
        Ok(())
    }

    pub fn receipts(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.receipts
            .iter()
            .values()
            .map(|v| Ok(v?.to_vec()))
            .collect()
    }

    /// Keeps a terminal's latest status frame.
    pub fn put_status(&self, terminal: u64, frame: &[u8]) -> Result<(), StoreError> {
        self.status.insert(terminal.to_be_bytes(), frame)?;
        Ok(())
    }

    pub fn statuses(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.status
            .iter()
            .values()
            .map(|v| Ok(v?.to_vec()))
            .collect()
    }

    pub fn remove(&self, id: BroadcastId) -> Result<(), StoreError> {
        let k = id.as_u128().to_be_bytes();
        self.headers.remove(k)?;
        for s in self.segments.scan_prefix(k) {
            let (sk, _) = s?;
            self.segments.remove(sk)?;
        }
        self.silences.remove(k)?;
        Ok(())
    }

    /// Records that `id` is silenced here in `areas`, durably.
    pub fn put_silence(&self, id: BroadcastId, areas: &[u64]) -> Result<(), StoreError> {
        let v: Vec<u8> = areas.iter().flat_map(|a| a.to_be_bytes()).collect();
        self.silences.insert(id.as_u128().to_be_bytes(), v)?;
        self.db.flush()?;
        Ok(())
    }

    /// Keeps a signed request frame until its outcome is final, durably.
    pub fn put_outbox(&self, request_id: u64, frame: &[u8]) -> Result<(), StoreError> {
        self.outbox.insert(request_id.to_be_bytes(), frame)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn remove_outbox(&self, request_id: u64) -> Result<(), StoreError> {
        self.outbox.remove(request_id.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// The request frames still waiting for a final outcome.
    pub fn outbox(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.outbox
            .iter()
            .map(|i| i.map(|(_, v)| v.to_vec()).map_err(StoreError::from))
            .collect()
    }

    /// Every silence recorded: (broadcast, areas).
    pub fn silences(&self) -> Result<Vec<(u128, Vec<u64>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.silences.iter() {
            let (k, v) = item?;
            let Ok(id) = <[u8; 16]>::try_from(k.as_ref()) else {
                continue;
            };
            let areas = v
                .chunks_exact(8)
                .filter_map(|c| <[u8; 8]>::try_from(c).ok())
                .map(u64::from_be_bytes)
                .collect();
            out.push((u128::from_be_bytes(id), areas));
        }
        Ok(out)
    }

    /// Appends a security event frame body (keyed by arrival time and a
    /// sled-generated id: events are never overwritten).
    pub fn put_event(&self, received_ms: i64, body: &[u8]) -> Result<(), StoreError> {
        let mut k = Vec::with_capacity(16);
        k.extend_from_slice(&received_ms.to_be_bytes());
        k.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
        self.events.insert(k, body)?;
        Ok(())
    }

    /// Forgets events that arrived before `before_ms`; returns how many.
    pub fn prune_events(&self, before_ms: i64) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self.events.range(..before_ms.max(0).to_be_bytes().to_vec()) {
            let (k, _) = item?;
            self.events.remove(k)?;
            n += 1;
        }
        Ok(n)
    }

    /// Stored events, oldest first, as (arrival ms, body).
    pub fn events(&self) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        self.events
            .iter()
            .map(|item| {
                let (k, v) = item?;
                let ms = i64::from_be_bytes(k[..8].try_into().unwrap_or([0; 8]));
                Ok((ms, v.to_vec()))
            })
            .collect()
    }

    /// Keeps the current revocation list of one signer, durably at once: a
    /// restart must never forget a revocation.
    pub fn put_revocation(&self, signer: u64, list: &[u8]) -> Result<(), StoreError> {
        self.revocations.insert(signer.to_be_bytes(), list)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn revocations(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.revocations
            .iter()
            .values()
            .map(|v| Ok(v?.to_vec()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_are_never_handed_out_twice_and_run_out_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let s = Store::open(&path).unwrap();
            assert_eq!(s.reserve_sequence(20261201).unwrap(), Some(0));
            assert_eq!(s.reserve_sequence(20261201).unwrap(), Some(1));
            assert_eq!(s.reserve_sequence(20261202).unwrap(), Some(0), "per day");
        }
        // Reopened (as after a crash: reservations were flushed).
        let s = Store::open(&path).unwrap();
        assert_eq!(s.reserve_sequence(20261201).unwrap(), Some(2));
        s.sequences
            .insert(
                20261201u32.to_be_bytes(),
                &(SEQUENCES_PER_DAY - 1).to_be_bytes(),
            )
            .unwrap();
        assert_eq!(s.reserve_sequence(20261201).unwrap(), Some(9_999));
        assert_eq!(
            s.reserve_sequence(20261201).unwrap(),
            None,
            "the day is full"
        );
        assert_eq!(
            s.reserve_sequence(20261201).unwrap(),
            None,
            "and stays full"
        );
        // A counter that does not decode is never trusted to be low.
        s.sequences
            .insert(20261203u32.to_be_bytes(), &[1u8][..])
            .unwrap();
        assert_eq!(s.reserve_sequence(20261203).unwrap(), None);
    }
}
