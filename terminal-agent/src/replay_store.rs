//! The terminal's replay store in sled: what it accepted survives a restart,
//! so a recorded genuine broadcast replayed later is refused. The revocation
//! lists in force are kept here too: a restart never forgets a revocation.

use protocol::{BroadcastId, ReplayRecord, ReplayStore};

#[derive(Clone)]
pub struct SledReplayStore {
    db: sled::Db,
    broadcasts: sled::Tree,
    commands: sled::Tree,
    revocations: sled::Tree,
}

impl SledReplayStore {
    pub fn open(path: &std::path::Path) -> Result<Self, sled::Error> {
        // Segment progress is flushed every 200 ms; headers and commands at once.
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(Some(200))
            .open()?;
        Ok(SledReplayStore {
            broadcasts: db.open_tree("broadcasts")?,
            commands: db.open_tree("commands")?,
            revocations: db.open_tree("revocations")?,
            db,
        })
    }

    /// Keeps the current list of one signer, flushed at once.
    pub fn put_revocation(&self, signer: u64, list: &[u8]) -> Result<(), sled::Error> {
        self.revocations.insert(signer.to_be_bytes(), list)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn revocations(&self) -> Result<Vec<Vec<u8>>, sled::Error> {
        self.revocations
            .iter()
            .values()
            .map(|v| Ok(v?.to_vec()))
            .collect()
    }
}

fn encode(r: &ReplayRecord) -> [u8; 45] {
    let mut b = [0u8; 45];
    b[..32].copy_from_slice(&r.digest);
    b[32..40].copy_from_slice(&r.end_ms.to_be_bytes());
    b[40..44].copy_from_slice(&r.next_seq.to_be_bytes());
    b[44] = r.closed as u8;
    b
}

fn decode(b: &[u8]) -> Option<ReplayRecord> {
    if b.len() != 45 {
        return None;
    }
    Some(ReplayRecord {
        digest: b[..32].try_into().ok()?,
        end_ms: i64::from_be_bytes(b[32..40].try_into().ok()?),
        next_seq: u32::from_be_bytes(b[40..44].try_into().ok()?),
        closed: b[44] != 0,
    })
}

impl ReplayStore for SledReplayStore {
    type Error = sled::Error;

    fn get(&self, id: BroadcastId) -> Result<Option<ReplayRecord>, sled::Error> {
        // A record that does not decode is treated as seen and closed: never
        // play what cannot be checked.
        Ok(self.broadcasts.get(id.as_u128().to_be_bytes())?.map(|v| {
            decode(&v).unwrap_or(ReplayRecord {
                digest: [0; 32],
                end_ms: i64::MAX,
                next_seq: u32::MAX,
                closed: true,
            })
        }))
    }

    fn put(&mut self, id: BroadcastId, record: &ReplayRecord) -> Result<(), sled::Error> {
        let first = self
            .broadcasts
            .insert(id.as_u128().to_be_bytes(), &encode(record)[..])?
            .is_none();
        if first || record.closed {
            self.db.flush()?;
        }
        Ok(())
    }

    fn insert_command(
        &mut self,
        signer_serial: u64,
        command_id: u64,
        expires_ms: i64,
    ) -> Result<bool, sled::Error> {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&signer_serial.to_be_bytes());
        k[8..].copy_from_slice(&command_id.to_be_bytes());
        let fresh = self
            .commands
            .compare_and_swap(
                k,
                None as Option<&[u8]>,
                Some(&expires_ms.to_be_bytes()[..]),
            )?
            .is_ok();
        self.db.flush()?;
        Ok(fresh)
    }

    fn closed(&self, now_ms: i64, limit: usize) -> Result<Vec<BroadcastId>, sled::Error> {
        let mut out = Vec::new();
        for item in self.broadcasts.iter() {
            let (k, v) = item?;
            let (Some(r), Ok(k)) = (decode(&v), <[u8; 16]>::try_from(&k[..])) else {
                continue;
            };
            if r.closed && r.end_ms >= now_ms {
                if let Ok(id) = BroadcastId::from_u128(u128::from_be_bytes(k)) {
                    out.push(id);
                }
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn prune(&mut self, now_ms: i64) -> Result<usize, sled::Error> {
        let mut n = 0;
        for item in self.broadcasts.iter() {
            let (k, v) = item?;
            if decode(&v).is_some_and(|r| r.end_ms < now_ms) {
                self.broadcasts.remove(k)?;
                n += 1;
            }
        }
        for item in self.commands.iter() {
            let (k, v) = item?;
            if v.len() == 8 && i64::from_be_bytes(v[..8].try_into().unwrap_or([0; 8])) < now_ms {
                self.commands.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }
}
