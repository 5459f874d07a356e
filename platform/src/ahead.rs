//! What a platform sends ahead of time (R9, R20): scheduled programmes
//! with their audio, and quiet hours. Each is verified once here (a relay
//! drops what fails), kept in the store, and passed down unchanged to the
//! children whose area it concerns: a programme once all its audio is
//! here, quiet hours at once. Programme audio stays on disk (read when a
//! child needs it), so a district holding a year of programmes for every
//! village does not hold them in memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use certs::AreaCode;
use protocol::frame::{FrameKind, FRAME_PREFIX_LEN};
use protocol::{
    BroadcastId, Held, Inventory, Message, ProgrammeChunk, ProgrammeVerdict, SignedProgramme,
    SignedQuietHours,
};
use tokio::sync::broadcast;

use crate::relay::{IngestError, Relay};
use crate::store::StoreError;

/// A programme is forgotten (with what its terminals reported) this long
/// after its validity ended.
pub const KEEP_ENDED_MS: i64 = 7 * 86_400_000;

/// A programme as held here.
pub struct HeldProgramme {
    pub signed: SignedProgramme,
    /// Its frame, as received or made: passed down byte for byte.
    pub frame: Bytes,
    /// Which chunks of its audio are in the store.
    present: Mutex<Vec<bool>>,
    /// The revision before held the same audio.
    pub audio_as_before: bool,
}

impl HeldProgramme {
    pub fn id(&self) -> BroadcastId {
        self.signed.id()
    }

    /// All its audio is here (a withdrawn one has none to wait for).
    pub fn complete(&self) -> bool {
        self.present
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .all(|p| *p)
    }

    /// Still valid at `now_ms` (a child would refuse it as expired).
    pub fn valid_at(&self, now_ms: i64) -> bool {
        self.signed.programme().until_ms() >= now_ms
    }

    pub fn targets_any(&self, scope: &[AreaCode]) -> bool {
        certs::area::any_overlap(&self.signed.programme().targets, scope)
    }

    fn mark(&self, index: usize) -> bool {
        let mut present = self.present.lock().unwrap_or_else(|p| p.into_inner());
        match present.get_mut(index) {
            Some(p) if !*p => {
                *p = true;
                true
            }
            _ => false,
        }
    }
}

/// Quiet hours as held here: the newest policy of one platform.
#[derive(Clone)]
pub struct HeldQuiet {
    pub signed: SignedQuietHours,
    pub frame: Bytes,
}

/// News for the child sessions.
#[derive(Clone)]
pub enum News {
    /// A programme (a new one, or a new revision) is complete here.
    Programme(Arc<HeldProgramme>),
    /// A platform's quiet hours changed.
    Quiet(Arc<HeldQuiet>),
}

/// The programmes and quiet hours a platform holds.
pub struct Ahead {
    programmes: RwLock<BTreeMap<BroadcastId, Arc<HeldProgramme>>>,
    quiet: RwLock<BTreeMap<String, HeldQuiet>>,
    news: broadcast::Sender<News>,
    store_programmes: sled::Tree,
    store_chunks: sled::Tree,
    store_quiet: sled::Tree,
}

fn chunk_key(id: BroadcastId, index: u16) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[..16].copy_from_slice(&id.as_u128().to_be_bytes());
    k[16..].copy_from_slice(&index.to_be_bytes());
    k
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Ahead {
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Ahead {
            programmes: RwLock::default(),
            quiet: RwLock::default(),
            news: broadcast::channel(256).0,
            store_programmes: db.open_tree("programmes").map_err(StoreError::from)?,
            store_chunks: db.open_tree("programme_chunks").map_err(StoreError::from)?,
            store_quiet: db.open_tree("quiet_hours").map_err(StoreError::from)?,
        })
    }

    pub fn news(&self) -> broadcast::Receiver<News> {
        self.news.subscribe()
    }

    pub fn get(&self, id: BroadcastId) -> Option<Arc<HeldProgramme>> {
        read(&self.programmes).get(&id).cloned()
    }

    /// Every programme held, newest id first.
    pub fn programmes(&self) -> Vec<Arc<HeldProgramme>> {
        read(&self.programmes).values().rev().cloned().collect()
    }

    /// Every platform's quiet hours held here.
    pub fn quiet(&self) -> Vec<HeldQuiet> {
        read(&self.quiet).values().cloned().collect()
    }

    pub fn quiet_of(&self, signer_resource_code: &str) -> Option<HeldQuiet> {
        read(&self.quiet).get(signer_resource_code).cloned()
    }

    /// What this platform holds, for its parent (complete programmes only
    /// count as complete).
    pub fn inventory(&self) -> Inventory {
        Inventory {
            held: read(&self.programmes)
                .values()
                .take(protocol::programme::MAX_INVENTORY)
                .map(|p| Held {
                    id: p.id(),
                    revision: p.signed.programme().revision,
                    complete: p.complete(),
                })
                .collect(),
        }
    }

    /// The chunk frames `from..to` of programme `id`, from the store.
    pub fn chunk_frames(
        &self,
        id: BroadcastId,
        from: u16,
        to: u16,
    ) -> Result<Vec<Bytes>, StoreError> {
        let mut out = Vec::new();
        for i in from..to {
            match self
                .store_chunks
                .get(chunk_key(id, i))
                .map_err(StoreError::from)?
            {
                Some(v) => out.push(Bytes::from(v.to_vec())),
                None => break,
            }
        }
        Ok(out)
    }

    fn keep_programme(&self, held: Arc<HeldProgramme>) -> Result<(), StoreError> {
        let id = held.id();
        self.store_programmes
            .insert(id.as_u128().to_be_bytes(), held.frame.as_ref())
            .map_err(StoreError::from)?;
        if !held.audio_as_before {
            self.remove_chunks(id)?;
        }
        let complete = held.complete();
        write(&self.programmes).insert(id, held.clone());
        if complete {
            let _ = self.news.send(News::Programme(held));
        }
        Ok(())
    }

    fn remove_chunks(&self, id: BroadcastId) -> Result<(), StoreError> {
        for k in self
            .store_chunks
            .scan_prefix(id.as_u128().to_be_bytes())
            .keys()
        {
            self.store_chunks
                .remove(k.map_err(StoreError::from)?)
                .map_err(StoreError::from)?;
        }
        Ok(())
    }

    fn keep_chunk(
        &self,
        held: &Arc<HeldProgramme>,
        index: u16,
        frame: &[u8],
    ) -> Result<(), StoreError> {
        self.store_chunks
            .insert(chunk_key(held.id(), index), frame)
            .map_err(StoreError::from)?;
        if held.mark(index as usize) && held.complete() {
            let _ = self.news.send(News::Programme(held.clone()));
        }
        Ok(())
    }

    fn keep_quiet(&self, q: HeldQuiet) -> Result<(), StoreError> {
        let key = q.signed.signer().body().resource_code.to_string();
        self.store_quiet
            .insert(key.as_bytes(), &q.frame[FRAME_PREFIX_LEN..])
            .map_err(StoreError::from)?;
        write(&self.quiet).insert(key, q.clone());
        let _ = self.news.send(News::Quiet(Arc::new(q)));
        Ok(())
    }

    /// Forgets programmes whose validity ended before `now_ms`; returns
    /// their ids.
    pub fn prune(&self, now_ms: i64) -> Vec<BroadcastId> {
        let over: Vec<BroadcastId> = read(&self.programmes)
            .values()
            .filter(|p| p.signed.programme().until_ms() < now_ms)
            .map(|p| p.id())
            .collect();
        for id in &over {
            write(&self.programmes).remove(id);
            let _ = self.store_programmes.remove(id.as_u128().to_be_bytes());
            if let Err(e) = self.remove_chunks(*id) {
                tracing::warn!("forgetting programme {id}: {e}");
            }
        }
        over
    }
}

fn frame_of(kind: FrameKind, body: &[u8]) -> Bytes {
    Bytes::from(protocol::frame::encode_frame(kind, body))
}

impl Relay {
    /// Verifies and keeps a programme frame (from the parent, or signed
    /// here): a new programme, or a newer revision of one held.
    pub fn ingest_programme(
        &self,
        frame: Bytes,
        now_ms: i64,
    ) -> Result<ProgrammeVerdict, IngestError> {
        let signed = match SignedProgramme::decode(&frame[FRAME_PREFIX_LEN..]) {
            Ok(p) => p,
            Err(e) => return Err(self.undecodable(e, true, now_ms)),
        };
        let id = signed.id();
        let before = self.ahead.get(id);
        let held = before
            .as_ref()
            .map(|h| (u64::from(h.signed.programme().revision), *h.signed.digest()));
        let verdict = self.verifier().accept_programme(&signed, held, now_ms);
        let verdict = match verdict {
            Ok(v) => v,
            Err(r) => {
                self.report(&r, Some(id), signed.signer().serial(), now_ms);
                return Err(r.into());
            }
        };
        if verdict != ProgrammeVerdict::Same {
            let p = signed.programme();
            let audio_as_before = before
                .as_ref()
                .is_some_and(|b| b.signed.programme().audio.chunks == p.audio.chunks);
            let present = match &before {
                Some(b) if audio_as_before => {
                    b.present.lock().unwrap_or_else(|e| e.into_inner()).clone()
                }
                _ => vec![false; p.audio.chunks.len()],
            };
            tracing::info!(%id, revision = p.revision, withdrawn = p.withdrawn, "programme kept");
            self.ahead.keep_programme(Arc::new(HeldProgramme {
                signed,
                frame,
                present: Mutex::new(present),
                audio_as_before,
            }))?;
        }
        Ok(verdict)
    }

    /// Verifies a chunk of audio against the programme held, and keeps it.
    pub fn ingest_chunk(&self, frame: Bytes, now_ms: i64) -> Result<(), IngestError> {
        let chunk = match ProgrammeChunk::decode(&frame[FRAME_PREFIX_LEN..]) {
            Ok(c) => c,
            Err(e) => return Err(self.undecodable(e, true, now_ms)),
        };
        let held = self.ahead.get(chunk.id);
        let verdict = self
            .verifier()
            .accept_chunk(&chunk, held.as_ref().map(|h| h.signed.programme()));
        if let Err(r) = verdict {
            let offender = held.as_ref().map_or(0, |h| h.signed.signer().serial());
            self.report(&r, Some(chunk.id), offender, now_ms);
            return Err(r.into());
        }
        if let Some(held) = held {
            self.ahead.keep_chunk(&held, chunk.index, &frame)?;
        }
        Ok(())
    }

    /// Verifies and keeps quiet hours (from the parent, or signed here).
    pub fn ingest_quiet(&self, frame: Bytes, now_ms: i64) -> Result<bool, IngestError> {
        let signed = match SignedQuietHours::decode(&frame[FRAME_PREFIX_LEN..]) {
            Ok(q) => q,
            Err(e) => return Err(self.undecodable(e, true, now_ms)),
        };
        let key = signed.signer().body().resource_code.to_string();
        let held = self
            .ahead
            .quiet_of(&key)
            .map(|q| (q.signed.policy().number, *q.signed.digest()));
        let verdict = self.verifier().accept_quiet_hours(&signed, held, now_ms);
        match verdict {
            Ok(true) => {
                tracing::info!(
                    signer = key,
                    number = signed.policy().number,
                    "quiet hours kept"
                );
                self.ahead.keep_quiet(HeldQuiet { signed, frame })?;
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(r) => {
                self.report(&r, None, signed.signer().serial(), now_ms);
                Err(r.into())
            }
        }
    }

    /// Reloads programmes (still valid), their audio (checked against its
    /// digests) and quiet hours from the store after a restart.
    pub fn restore_ahead(&self, now_ms: i64) -> Result<usize, StoreError> {
        let a = &self.ahead;
        let mut n = 0;
        for item in a.store_programmes.iter() {
            let (_, body) = item.map_err(StoreError::from)?;
            let Ok(signed) = SignedProgramme::decode(&body[FRAME_PREFIX_LEN..]) else {
                continue;
            };
            if self
                .verifier()
                .check_programme(&signed, None, now_ms)
                .is_err()
            {
                // Over (or no longer trusted): it goes from the store too.
                let id = signed.id();
                let _ = a.store_programmes.remove(id.as_u128().to_be_bytes());
                a.remove_chunks(id)?;
                continue;
            }
            let p = signed.programme();
            let mut present = vec![false; p.audio.chunks.len()];
            for (i, slot) in present.iter_mut().enumerate() {
                let stored = a
                    .store_chunks
                    .get(chunk_key(signed.id(), i as u16))
                    .map_err(StoreError::from)?;
                *slot = stored.is_some_and(|f| {
                    ProgrammeChunk::decode(&f[FRAME_PREFIX_LEN..]).is_ok_and(|c| c.matches(p))
                });
            }
            let held = HeldProgramme {
                frame: Bytes::from(body.to_vec()),
                signed,
                present: Mutex::new(present),
                audio_as_before: true,
            };
            write(&a.programmes).insert(held.id(), Arc::new(held));
            n += 1;
        }
        for item in a.store_quiet.iter() {
            let (_, body) = item.map_err(StoreError::from)?;
            let Ok(signed) = SignedQuietHours::decode(&body) else {
                continue;
            };
            if self
                .verifier()
                .check_quiet_hours(&signed, None, now_ms)
                .is_ok()
            {
                let key = signed.signer().body().resource_code.to_string();
                let frame = frame_of(FrameKind::QuietHours, &body);
                write(&a.quiet).insert(key, HeldQuiet { signed, frame });
            }
        }
        Ok(n)
    }
}

/// The frame of a message this platform made.
pub fn encoded(m: &Message) -> Bytes {
    Bytes::from(m.encode())
}
