//! Drafts: what an operator asks to broadcast, with its audio already
//! ingested (so the reviewer hears exactly the frames that will be
//! signed), through the states Draft → Submitted → Approved → Published
//! (or Rejected, Cancelled). The fields are checked here, each against its
//! limit, before any audio is touched.

use std::collections::BTreeSet;

use certs::AreaCode;
use protocol::{BroadcastClass, BroadcastId, EventType, MessageType, Severity};
use serde::{Deserialize, Serialize};

use crate::accounts::sha256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DraftState {
    /// Being written; not yet asked for review.
    Draft,
    /// Waiting for approval.
    Submitted,
    /// Approved; published at its start time (or now).
    Approved,
    /// Signed and sent.
    Published,
    /// Sent to the tier above as a publish request, waiting for its answer.
    Requested,
    /// Sent back with a comment; may be edited and submitted again.
    Rejected,
    /// Withdrawn before publishing, or cancelled after.
    Cancelled,
}

impl DraftState {
    pub fn name(self) -> &'static str {
        match self {
            DraftState::Draft => "draft",
            DraftState::Submitted => "submitted",
            DraftState::Approved => "approved",
            DraftState::Published => "published",
            DraftState::Requested => "requested",
            DraftState::Rejected => "rejected",
            DraftState::Cancelled => "cancelled",
        }
    }

    /// May still change before it is signed.
    pub fn editable(self) -> bool {
        matches!(
            self,
            DraftState::Draft | DraftState::Submitted | DraftState::Approved | DraftState::Rejected
        )
    }
}

/// A field that does not meet its rule: which, and why (English and
/// Chinese, shown to people).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
    pub message_zh: String,
}

pub(crate) fn field_error(
    field: &'static str,
    en: impl Into<String>,
    zh: impl Into<String>,
) -> FieldError {
    FieldError {
        field,
        message: en.into(),
        message_zh: zh.into(),
    }
}

/// Longest validity: the verifier refuses a broadcast valid for longer
/// than 7 days after issue.
pub const MAX_VALID_MINUTES: i64 = 7 * 24 * 60;
/// Longest delay of a scheduled start.
pub const MAX_START_AHEAD_MS: i64 = 7 * 86_400_000;

/// A draft's fields, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftFields {
    pub targets: Vec<AreaCode>,
    pub class: BroadcastClass,
    pub severity: Severity,
    pub event_type: EventType,
    pub title: String,
    pub text: String,
    pub language: String,
    pub valid_minutes: i64,
    pub volume: Option<u8>,
    /// Publish at this time (unix ms) rather than at approval.
    pub start_at_ms: Option<i64>,
    /// A scheduled programme (R9): it plays by this timetable, cached on
    /// the terminals, rather than once now.
    pub schedule: Option<crate::timetable::Timetable>,
}

impl DraftFields {
    pub fn msg_type(&self) -> MessageType {
        match self.class {
            BroadcastClass::Drill => MessageType::DrillPlatform,
            _ => MessageType::Broadcast,
        }
    }

    /// Checks the form's text fields (`get` returns a field, or None if
    /// absent), each against its limit, and the targets against `reach`
    /// (the caller's areas within the platform's scope). `now_ms` bounds a
    /// scheduled start.
    pub fn parse(
        get: &dyn Fn(&str) -> Option<String>,
        reach: &[AreaCode],
        now_ms: i64,
    ) -> Result<DraftFields, FieldError> {
        let text = |k: &str| get(k).unwrap_or_default();
        let areas = text("areas");
        let mut targets = Vec::new();
        for a in areas.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            let code: AreaCode = a.parse().map_err(|e| {
                field_error(
                    "areas",
                    format!("{a:?} is not a 12-digit area code: {e}"),
                    format!("{a:?} 不是12位区域编码"),
                )
            })?;
            if !targets.contains(&code) {
                targets.push(code);
            }
        }
        if targets.is_empty() {
            return Err(field_error(
                "areas",
                "at least one target area is required",
                "请选择至少一个播发区域",
            ));
        }
        if targets.len() > protocol::header::MAX_TARGETS {
            return Err(field_error(
                "areas",
                format!(
                    "{} areas; the limit is {}",
                    targets.len(),
                    protocol::header::MAX_TARGETS
                ),
                format!("区域过多（上限 {} 个）", protocol::header::MAX_TARGETS),
            ));
        }
        check_targets(&targets, reach)?;
        let class = match text("class").as_str() {
            "emergency" => BroadcastClass::Emergency,
            "daily" => BroadcastClass::Daily,
            "drill" => BroadcastClass::Drill,
            "" => {
                return Err(field_error(
                    "class",
                    "required: emergency, daily or drill",
                    "请选择类别：应急、日常或演练",
                ))
            }
            other => {
                return Err(field_error(
                    "class",
                    format!("{other:?} is not one of emergency, daily, drill"),
                    "类别只能是应急、日常或演练",
                ))
            }
        };
        let severity = parse_severity(&text("severity"), class)?;
        let event_type = match text("event_type").as_str() {
            "" => "10000".parse(),
            e => e.parse(),
        }
        .map_err(|_: certs::encoding::DecodeError| {
            field_error(
                "event_type",
                "5 characters of 0-9 and A-Z (GB/T 35965 event code, e.g. 11B06)",
                "事件类型应为5位编码（如 11B06）",
            )
        })?;
        let title = text("title").trim().to_string();
        if title.is_empty() {
            return Err(field_error("title", "a title is required", "请填写标题"));
        }
        check_bytes("title", &title, protocol::header::MAX_TITLE_BYTES, "标题")?;
        let body = text("text");
        check_bytes("text", &body, protocol::header::MAX_TEXT_BYTES, "正文")?;
        let language = match text("language").as_str() {
            "" => "zh-CN".to_string(),
            l if l.len() <= protocol::header::MAX_LANGUAGE_BYTES
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
            {
                l.to_string()
            }
            _ => {
                return Err(field_error(
                    "language",
                    format!(
                        "a language tag such as zh-CN, at most {} characters",
                        protocol::header::MAX_LANGUAGE_BYTES
                    ),
                    "语言代码格式错误（如 zh-CN）",
                ))
            }
        };
        let valid_minutes = match text("valid_minutes").as_str() {
            "" => 60,
            v => match v.parse::<i64>() {
                Ok(m) if (1..=MAX_VALID_MINUTES).contains(&m) => m,
                _ => {
                    return Err(field_error(
                        "valid_minutes",
                        format!(
                        "{v:?}: a whole number of minutes from 1 to {MAX_VALID_MINUTES} (7 days)"
                    ),
                        format!("有效时长应为 1 到 {MAX_VALID_MINUTES} 分钟的整数"),
                    ))
                }
            },
        };
        let volume = match text("volume").as_str() {
            "" => None,
            v => Some(v.parse::<u8>().ok().filter(|v| *v <= 100).ok_or_else(|| {
                field_error(
                    "volume",
                    format!("{v:?}: a whole number from 0 to 100"),
                    "音量应为 0 到 100 的整数",
                )
            })?),
        };
        let schedule = crate::timetable::Timetable::parse(get, now_ms)?;
        if schedule.is_some() && class != BroadcastClass::Daily {
            return Err(field_error(
                "schedule",
                "only daily programming is scheduled; an emergency or a drill is issued when it is due",
                "只有日常节目可以定时播出",
            ));
        }
        let start_at_ms = match text("start_at_ms").as_str() {
            "" => None,
            v => Some(
                v.parse::<i64>()
                    .ok()
                    .filter(|t| *t <= now_ms + MAX_START_AHEAD_MS)
                    .ok_or_else(|| {
                        field_error(
                            "start_at_ms",
                            "unix milliseconds, at most 7 days ahead",
                            "定时播发时间应在7天之内",
                        )
                    })?,
            ),
        };
        Ok(DraftFields {
            targets,
            class,
            severity,
            event_type,
            title,
            text: body,
            language,
            valid_minutes,
            volume,
            start_at_ms,
            schedule,
        })
    }
}

/// Every target within `reach` (the caller's areas within the platform's
/// scope): the one check of "may address this area" for people.
pub fn check_targets(targets: &[AreaCode], reach: &[AreaCode]) -> Result<(), FieldError> {
    if let Some(out) = certs::area::first_outside(targets, reach) {
        let reach: Vec<String> = reach.iter().map(|a| a.to_string()).collect();
        return Err(field_error(
            "areas",
            format!(
                "area {out} lies outside this platform's scope or your areas ({})",
                reach.join(", ")
            ),
            format!("区域 {out} 不在本平台或您的管辖范围内"),
        ));
    }
    Ok(())
}

fn check_bytes(field: &'static str, value: &str, limit: usize, zh: &str) -> Result<(), FieldError> {
    if value.len() <= limit {
        return Ok(());
    }
    // A Chinese character is 3 bytes of UTF-8.
    Err(field_error(
        field,
        format!(
            "{} bytes; the limit is {limit} bytes of UTF-8 ({} Chinese characters)",
            value.len(),
            limit / 3
        ),
        format!("{zh}过长：最多 {} 个汉字（{limit} 字节）", limit / 3),
    ))
}

/// Severity 1–4 (I–IV); a daily notice may leave it empty or 0 (none).
fn parse_severity(v: &str, class: BroadcastClass) -> Result<Severity, FieldError> {
    let bad = || {
        field_error(
            "severity",
            format!("{v:?}: a whole number from 1 (I, most severe) to 4 (IV); required for an emergency or a drill"),
            "预警级别应为 1（I级，特别重大）到 4（IV级，一般）",
        )
    };
    match (v, class) {
        ("" | "0", BroadcastClass::Daily) => Ok(Severity::Unknown),
        ("1" | "2" | "3" | "4", _) => {
            Severity::from_code(v.as_bytes()[0] - b'0').map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

/// A reviewer's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Decision {
    pub by: String,
    pub at_ms: i64,
    pub comment: String,
}

/// What the ingest made of the uploaded audio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AudioInfo {
    /// The uploaded file's name.
    pub file_name: String,
    pub duration_ms: i64,
    pub frames: usize,
    pub sample_rate: u32,
    pub source_lufs: Option<f64>,
    pub gain_db: f64,
    /// SHA-256 of the encoded frames: what the approver heard is what is
    /// signed.
    pub frames_sha256: String,
    /// Spoken from the text by the platform's voice: what it read
    /// (tone-numbered pinyin).
    #[serde(default)]
    pub spoken: Option<String>,
}

/// The header's times fixed when it is signed, kept so a crash between
/// signing and storing re-signs the very same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub broadcast: u128,
    pub issued_at_ms: i64,
    pub end_ms: i64,
    pub play_at_us: i64,
    /// The header's playout delay (0: the terminals' own).
    #[serde(default)]
    pub playout_delay_ms: u16,
    /// A programme's revision (its id is `broadcast`).
    #[serde(default)]
    pub revision: Option<u32>,
}

/// A stored draft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Draft {
    pub id: u64,
    pub state: DraftState,
    pub targets: Vec<u64>,
    pub class: u8,
    pub severity: u8,
    pub event_type: String,
    pub title: String,
    pub text: String,
    pub language: String,
    pub valid_minutes: i64,
    pub volume: Option<u8>,
    pub start_at_ms: Option<i64>,
    pub created_by: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Everyone who wrote any of it: none of them may approve it.
    pub authors: BTreeSet<String>,
    pub audio: AudioInfo,
    pub approvals: Vec<Decision>,
    pub approvals_needed: u8,
    pub rejection: Option<Decision>,
    pub plan: Option<Plan>,
    pub warnings: Vec<String>,
    /// A request from a lower platform: where it came from.
    #[serde(default)]
    pub origin: Option<Origin>,
    /// Sent to the tier above: the request and its answer.
    #[serde(default)]
    pub request: Option<SentRequest>,
    /// A scheduled programme's timetable (R9).
    #[serde(default)]
    pub schedule: Option<crate::timetable::Timetable>,
    /// A new revision of this programme (its id) rather than a new one.
    #[serde(default)]
    pub revises: Option<u128>,
    /// An alert from above (R13): where it came from and how it was
    /// authenticated.
    #[serde(default)]
    pub alert: Option<AlertOrigin>,
}

/// Where an alert from above came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertOrigin {
    /// GY/T 385 or CAP 1.2.
    pub format: String,
    /// The configured source it came through.
    pub source: String,
    /// Its original identifier (the EBMID, or the CAP identifier), kept
    /// beside the broadcast id given here.
    pub id: String,
    /// The sender's code and name as the message gives them.
    pub sender: String,
    pub sender_name: String,
    /// How it was authenticated (the SM2 certificate that verified, or the
    /// source's token).
    pub verified: String,
    pub received_ms: i64,
    /// Where its audio came from.
    pub audio: String,
    /// Broadcasts (ids) it replaces: cancelled once it is published.
    #[serde(default)]
    pub replaces: Vec<String>,
}

/// Where a publish request came from (at the tier above).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Origin {
    /// The requesting platform's certificate serial (hex) and name.
    pub platform_serial: String,
    pub platform_name: String,
    pub request_id: u64,
    /// Its drafter, at the requesting platform.
    pub account: String,
}

/// A request this platform sent up (at the requesting platform). Its
/// fields fix the request's bytes: signing it again gives the same frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SentRequest {
    pub request_id: u64,
    pub requested_at_ms: i64,
    pub account: String,
    /// The parent that filed it (serial, hex), once it said so.
    pub held_by: Option<String>,
    /// The broadcast the tier above issued, once approved.
    pub broadcast: Option<String>,
    pub decided_by: Option<String>,
}

impl Draft {
    /// A new draft in state Draft, written by `created_by` at `now`.
    pub fn new(
        id: u64,
        created_by: &str,
        now: i64,
        fields: &DraftFields,
        audio: AudioInfo,
        approvals_needed: u8,
        warnings: Vec<String>,
    ) -> Draft {
        let mut d = Draft {
            id,
            state: DraftState::Draft,
            targets: vec![],
            class: 0,
            severity: 0,
            event_type: String::new(),
            title: String::new(),
            text: String::new(),
            language: String::new(),
            valid_minutes: 0,
            volume: None,
            start_at_ms: None,
            created_by: created_by.to_string(),
            created_ms: now,
            updated_ms: now,
            authors: [created_by.to_string()].into(),
            audio,
            approvals: vec![],
            approvals_needed,
            rejection: None,
            plan: None,
            warnings,
            origin: None,
            request: None,
            schedule: None,
            revises: None,
            alert: None,
        };
        d.set_fields(fields);
        d
    }

    pub fn fields(&self) -> DraftFields {
        DraftFields {
            targets: self
                .targets
                .iter()
                .filter_map(|t| AreaCode::from_u64(*t).ok())
                .collect(),
            class: BroadcastClass::from_code(self.class).unwrap_or(BroadcastClass::Emergency),
            severity: Severity::from_code(self.severity).unwrap_or(Severity::Unknown),
            event_type: self
                .event_type
                .parse()
                .unwrap_or_else(|_| EventType::from_bytes(*b"10000").expect("valid")),
            title: self.title.clone(),
            text: self.text.clone(),
            language: self.language.clone(),
            valid_minutes: self.valid_minutes,
            volume: self.volume,
            start_at_ms: self.start_at_ms,
            schedule: self.schedule.clone(),
        }
    }

    pub fn set_fields(&mut self, f: &DraftFields) {
        self.targets = f.targets.iter().map(|t| t.as_u64()).collect();
        self.class = f.class.code();
        self.severity = f.severity.code();
        self.event_type = f.event_type.as_str().to_string();
        self.title = f.title.clone();
        self.text = f.text.clone();
        self.language = f.language.clone();
        self.valid_minutes = f.valid_minutes;
        self.volume = f.volume;
        self.start_at_ms = f.start_at_ms;
        self.schedule = f.schedule.clone();
    }

    pub fn class(&self) -> BroadcastClass {
        self.fields().class
    }

    pub fn target_codes(&self) -> Vec<String> {
        self.fields()
            .targets
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    pub fn broadcast_id(&self) -> Option<BroadcastId> {
        self.plan
            .and_then(|p| BroadcastId::from_u128(p.broadcast).ok())
    }

    pub fn is_drill(&self) -> bool {
        self.class == BroadcastClass::Drill.code()
    }
}

pub fn frames_digest(frames: &[Vec<u8>]) -> String {
    let mut all = Vec::new();
    for f in frames {
        all.extend_from_slice(&(f.len() as u16).to_be_bytes());
        all.extend_from_slice(f);
    }
    hex::encode(sha256(&all))
}

#[derive(Debug, thiserror::Error)]
pub enum DraftStoreError {
    #[error("store: {0}")]
    Store(#[from] sled::Error),
    #[error("stored draft {0} does not decode")]
    Corrupt(u64),
    #[error("no draft {0}")]
    Missing(u64),
}

/// Drafts and their encoded audio in the platform's store.
#[derive(Clone)]
pub struct DraftStore {
    db: sled::Db,
    drafts: sled::Tree,
    audio: sled::Tree,
    /// broadcast id → draft id
    published: sled::Tree,
    /// (requester serial, request id) → draft id, at the tier above.
    filed: sled::Tree,
    /// request id → draft id, at the requesting platform.
    sent: sled::Tree,
    /// An alert from above (`alerts::intake::key`) → draft id.
    alerts: sled::Tree,
}

impl DraftStore {
    pub fn open(db: &sled::Db) -> Result<Self, DraftStoreError> {
        Ok(DraftStore {
            db: db.clone(),
            drafts: db.open_tree("drafts")?,
            audio: db.open_tree("draft_audio")?,
            published: db.open_tree("published")?,
            filed: db.open_tree("filed_requests")?,
            sent: db.open_tree("sent_requests")?,
            alerts: db.open_tree("filed_alerts")?,
        })
    }

    /// The draft an alert from above was filed as.
    pub fn alert_draft(&self, key: &str) -> Result<Option<u64>, DraftStoreError> {
        Ok(self
            .alerts
            .get(key.as_bytes())?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    /// Files alert `key` as draft `draft`, durably, before the draft
    /// itself (as [`DraftStore::file`]): an alert sent twice is one draft.
    pub fn file_alert(&self, key: &str, draft: u64) -> Result<(), DraftStoreError> {
        self.alerts.insert(key.as_bytes(), &draft.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// The drafts alerts from above were filed as, newest first, at most
    /// `limit`.
    pub fn alert_drafts(&self, limit: usize) -> Result<Vec<Draft>, DraftStoreError> {
        let mut ids: Vec<u64> = self
            .alerts
            .iter()
            .values()
            .filter_map(|v| v.ok())
            .filter_map(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        let mut out = Vec::new();
        for id in ids.into_iter().take(limit) {
            if let Some(d) = self.get(id)? {
                out.push(d);
            }
        }
        Ok(out)
    }

    fn filed_key(serial: u64, request_id: u64) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&serial.to_be_bytes());
        k[8..].copy_from_slice(&request_id.to_be_bytes());
        k
    }

    /// The draft filed for request `request_id` of platform `serial`.
    pub fn filed(&self, serial: u64, request_id: u64) -> Result<Option<u64>, DraftStoreError> {
        Ok(self
            .filed
            .get(Self::filed_key(serial, request_id))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    /// Files request `request_id` of `serial` as draft `draft`, durably,
    /// before the draft itself: a crash between the two leaves the id
    /// reserved, never a second draft.
    pub fn file(&self, serial: u64, request_id: u64, draft: u64) -> Result<(), DraftStoreError> {
        self.filed
            .insert(Self::filed_key(serial, request_id), &draft.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    pub fn note_sent(&self, request_id: u64, draft: u64) -> Result<(), DraftStoreError> {
        self.sent
            .insert(request_id.to_be_bytes(), &draft.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    pub fn sent_draft(&self, request_id: u64) -> Result<Option<u64>, DraftStoreError> {
        Ok(self
            .sent
            .get(request_id.to_be_bytes())?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    /// A fresh draft id (sled's monotonic id generator, durable).
    pub fn next_id(&self) -> Result<u64, DraftStoreError> {
        Ok(self.db.generate_id()? + 1)
    }

    pub fn get(&self, id: u64) -> Result<Option<Draft>, DraftStoreError> {
        match self.drafts.get(id.to_be_bytes())? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|_| DraftStoreError::Corrupt(id)),
            None => Ok(None),
        }
    }

    /// Stores a new draft `d` with its frames, flushed.
    pub fn insert(&self, d: &Draft, frames: &[Vec<u8>]) -> Result<(), DraftStoreError> {
        self.put_frames(d.id, &d.audio.frames_sha256, frames)?;
        let v = serde_json::to_vec(d).map_err(|_| DraftStoreError::Corrupt(d.id))?;
        self.drafts.insert(d.id.to_be_bytes(), v)?;
        self.db.flush()?;
        Ok(())
    }

    /// Frames are stored under their digest: a draft names the frames it
    /// holds, so an edit racing a publish can never swap the audio under it.
    pub fn put_frames(
        &self,
        id: u64,
        digest: &str,
        frames: &[Vec<u8>],
    ) -> Result<(), DraftStoreError> {
        self.audio
            .insert(frames_key(id, digest), encode_frames(frames))?;
        Ok(())
    }

    pub fn remove_frames(&self, id: u64, digest: &str) -> Result<(), DraftStoreError> {
        self.audio.remove(frames_key(id, digest))?;
        Ok(())
    }

    /// Changes draft `id` with `change`, atomically (compare and swap:
    /// of two racing changes, the second sees the first), and flushes.
    /// `change` returns Err to leave it as it is.
    pub fn update<E>(
        &self,
        id: u64,
        mut change: impl FnMut(&mut Draft) -> Result<(), E>,
    ) -> Result<Result<Draft, E>, DraftStoreError> {
        loop {
            let Some(raw) = self.drafts.get(id.to_be_bytes())? else {
                return Err(DraftStoreError::Missing(id));
            };
            let mut d: Draft =
                serde_json::from_slice(&raw).map_err(|_| DraftStoreError::Corrupt(id))?;
            if let Err(e) = change(&mut d) {
                return Ok(Err(e));
            }
            let v = serde_json::to_vec(&d).map_err(|_| DraftStoreError::Corrupt(id))?;
            let swapped = self
                .drafts
                .compare_and_swap(id.to_be_bytes(), Some(raw), Some(v))?;
            if swapped.is_ok() {
                if let Some(p) = d.plan {
                    self.published
                        .insert(p.broadcast.to_be_bytes(), &id.to_be_bytes())?;
                }
                self.db.flush()?;
                return Ok(Ok(d));
            }
        }
    }

    /// The frames draft `d` names, checked against their digest.
    pub fn frames(&self, d: &Draft) -> Result<Vec<Vec<u8>>, DraftStoreError> {
        let v = self
            .audio
            .get(frames_key(d.id, &d.audio.frames_sha256))?
            .ok_or(DraftStoreError::Corrupt(d.id))?;
        let frames = decode_frames(&v).ok_or(DraftStoreError::Corrupt(d.id))?;
        if frames_digest(&frames) != d.audio.frames_sha256 {
            return Err(DraftStoreError::Corrupt(d.id));
        }
        Ok(frames)
    }

    /// The draft a broadcast was published from.
    pub fn by_broadcast(&self, b: BroadcastId) -> Result<Option<Draft>, DraftStoreError> {
        match self.published.get(b.as_u128().to_be_bytes())? {
            Some(v) => {
                let id = <[u8; 8]>::try_from(v.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| DraftStoreError::Corrupt(0))?;
                self.get(id)
            }
            None => Ok(None),
        }
    }

    /// Drafts, newest first, at most `limit`, those in `state` only if given.
    pub fn list(
        &self,
        state: Option<DraftState>,
        limit: usize,
    ) -> Result<Vec<Draft>, DraftStoreError> {
        let mut out = Vec::new();
        for item in self.drafts.iter().rev() {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let id = <[u8; 8]>::try_from(k.as_ref()).map_or(0, u64::from_be_bytes);
            let d: Draft = serde_json::from_slice(&v).map_err(|_| DraftStoreError::Corrupt(id))?;
            if state.is_none_or(|s| s == d.state) {
                out.push(d);
            }
        }
        Ok(out)
    }
}

fn frames_key(id: u64, digest: &str) -> Vec<u8> {
    let mut k = id.to_be_bytes().to_vec();
    k.extend_from_slice(digest.as_bytes());
    k
}

fn encode_frames(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frames.iter().map(|f| f.len() + 2).sum());
    for f in frames {
        out.extend_from_slice(&(f.len() as u16).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn decode_frames(mut b: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 2 {
            return None;
        }
        let n = u16::from_be_bytes([b[0], b[1]]) as usize;
        let f = b.get(2..2 + n)?;
        out.push(f.to_vec());
        b = &b[2 + n..];
    }
    Some(out)
}

/// The frames decoded to a 16-bit mono WAV file (the preview a reviewer
/// listens to: the very frames that will be signed).
pub fn preview_wav(frames: &[Vec<u8>], rate: u32) -> Result<Vec<u8>, codec::CodecError> {
    use codec::FrameDecoder;
    let mut dec = codec::OpusFrameDecoder::new(rate)?;
    let n = dec.frame_samples();
    let mut frame = vec![0f32; n];
    let mut pcm = Vec::with_capacity(frames.len() * n);
    for f in frames {
        if dec.decode(f, &mut frame).is_err() {
            frame.iter_mut().for_each(|s| *s = 0.0);
        }
        pcm.extend_from_slice(&frame);
    }
    Ok(codec::sink::wav_bytes(&pcm, rate))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn form<'a>(
        pairs: &'a [(&'a str, &'a str)],
    ) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn every_field_is_checked_and_named() {
        let scope: Vec<AreaCode> = vec!["360100000000".parse().unwrap()];
        let ok = [
            ("areas", "360101001000"),
            ("class", "emergency"),
            ("severity", "1"),
            ("title", "防汛"),
        ];
        let f = DraftFields::parse(&form(&ok), &scope, 0).unwrap();
        assert_eq!(f.severity, Severity::Red);
        assert_eq!(f.valid_minutes, 60);
        let bad = |k: &str, v: &str| {
            let mut pairs: Vec<(&str, &str)> =
                ok.iter().filter(|(n, _)| *n != k).copied().collect();
            pairs.push((k, v));
            let owned: Vec<(String, String)> = pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            DraftFields::parse(
                &|q: &str| owned.iter().find(|(n, _)| n == q).map(|(_, v)| v.clone()),
                &scope,
                0,
            )
            .unwrap_err()
        };
        for s in ["-1", "abc", "1.5", "", "0", "5"] {
            assert_eq!(bad("severity", s).field, "severity", "{s:?}");
        }
        for v in ["0", "-5", "x", "10081"] {
            assert_eq!(bad("valid_minutes", v).field, "valid_minutes", "{v:?}");
        }
        let long = "警".repeat(86);
        let e = bad("title", &long);
        assert!(
            e.message.contains("258 bytes") && e.message.contains("85 Chinese"),
            "{e}"
        );
        assert!(e.message_zh.contains("85"), "{}", e.message_zh);
        assert_eq!(bad("areas", "110101001000").field, "areas");
        assert_eq!(bad("areas", "").field, "areas");
        assert_eq!(bad("class", "").field, "class");
        assert_eq!(bad("volume", "101").field, "volume");
        assert_eq!(bad("event_type", "abc").field, "event_type");
        // A daily notice may have no severity.
        let daily = [
            ("areas", "360101001000"),
            ("class", "daily"),
            ("title", "通知"),
        ];
        assert_eq!(
            DraftFields::parse(&form(&daily), &scope, 0)
                .unwrap()
                .severity,
            Severity::Unknown
        );
    }

    #[test]
    fn frames_round_trip() {
        let frames = vec![vec![1, 2, 3], vec![], vec![9; 300]];
        assert_eq!(decode_frames(&encode_frames(&frames)).unwrap(), frames);
        assert!(decode_frames(&[0, 5, 1]).is_none());
    }
}
