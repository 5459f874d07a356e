//! What an authenticated alert from above does here, whichever format it
//! came in: filed once as a draft (its original id kept), its areas those
//! of this platform it names (by code, or by shape against the villages'
//! configured points), its audio through the same ingest as an upload (or
//! its text spoken, or the draft waits for audio), then relayed at once or
//! put in the review queue as its source's policy says. An update
//! replaces, a cancel stops what it names. Every step is in the audit
//! trail before the sender hears of it. Blocking: callers use
//! `spawn_blocking`.

use certs::AreaCode;
use gateway::{Action, Alert, Audio};
use protocol::control::PlayState as BrdState;
use protocol::{BroadcastClass, BroadcastId, EventType, Severity};

use super::{Gateway, Source};
use crate::audit::{Outcome, Record};
use crate::drafts::{
    AlertOrigin, AudioInfo, Decision, Draft, DraftFields, DraftState, MAX_START_AHEAD_MS,
    MAX_VALID_MINUTES,
};
use crate::issue::{self, IssueError};
use crate::upload::Upload;
use crate::workflow::{AudioUpload, WorkflowError};

/// Validity of an alert that names no end.
pub const DEFAULT_VALID_MINUTES: i64 = 60;
/// A start this far ahead or more is a scheduled start; nearer is now.
const SCHEDULED_AFTER_MS: i64 = 5_000;

/// What an alert came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// Signed and sent at once, as its source's policy says.
    Relayed,
    /// Waiting in the review queue.
    Review,
    /// Stopped the drafts and broadcasts it named.
    Cancelled(Vec<u64>),
    /// It names none of this platform's areas.
    NotHere,
    /// Received before: nothing new done.
    Duplicate,
}

impl Done {
    pub fn name(&self) -> &'static str {
        match self {
            Done::Relayed => "relayed",
            Done::Review => "review",
            Done::Cancelled(_) => "cancelled",
            Done::NotHere => "not_here",
            Done::Duplicate => "duplicate",
        }
    }

    /// In the sender's words (EBDResponse's ResultDesc).
    pub fn zh(&self) -> String {
        match self {
            Done::Relayed => "已验证，已立即转发播出".into(),
            Done::Review => "已验证，已进入审核队列".into(),
            Done::Cancelled(d) => format!("已验证，已取消 {} 条", d.len()),
            Done::NotHere => "已验证，不涉及本平台区域".into(),
            Done::Duplicate => "已验证，此前已收到".into(),
        }
    }
}

#[derive(Debug)]
pub struct Taken {
    pub done: Done,
    pub draft: Option<Draft>,
    pub warnings: Vec<String>,
}

/// Why an alert was not taken; each maps to a GY/T result code.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// Its content cannot be used as it is (code 2).
    #[error("{0}")]
    Invalid(String),
    /// It lacks something it needs (code 3).
    #[error("{0}")]
    Missing(String),
    /// Expired, refers to nothing known, or the store failed (code 5).
    #[error("{0}")]
    Other(String),
}

impl IntakeError {
    pub fn code(&self) -> gateway::ResultCode {
        match self {
            IntakeError::Invalid(_) => gateway::ResultCode::ParseFailure,
            IntakeError::Missing(_) => gateway::ResultCode::MissingContent,
            IntakeError::Other(_) => gateway::ResultCode::Other,
        }
    }
}

impl From<WorkflowError> for IntakeError {
    fn from(e: WorkflowError) -> Self {
        match e {
            WorkflowError::Field(f) => IntakeError::Invalid(f.to_string()),
            WorkflowError::Issue(IssueError::Audio(a)) => {
                IntakeError::Invalid(format!("audio: {a}"))
            }
            WorkflowError::Issue(e @ IssueError::LongerThanValidity { .. }) => {
                IntakeError::Invalid(e.to_string())
            }
            e => IntakeError::Other(e.to_string()),
        }
    }
}

impl From<crate::drafts::DraftStoreError> for IntakeError {
    fn from(e: crate::drafts::DraftStoreError) -> Self {
        IntakeError::Other(format!("store: {e}"))
    }
}

/// The store's key of an alert: format, source, original id.
pub fn key(source: &Source, id: &str) -> String {
    format!("{}\u{1f}{}\u{1f}{id}", source.format.key(), source.name)
}

/// How an alert was authenticated, for the record.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub how: String,
    /// Its audio is covered by what authenticated it (a GY/T file whose
    /// SM3 digest the signed message gives; CAP audio came over the
    /// source's authenticated channel).
    pub audio_covered: bool,
}

/// The audio an alert ends up with.
struct Sound {
    ingested: Option<crate::workflow::Ingested>,
    /// Where it came from, in words.
    from: String,
    /// Covered by the sender's authentication, or spoken from its text.
    trusted: bool,
}

impl Gateway {
    /// Takes `alert` from `source`, authenticated as `auth` says.
    pub fn take(
        &self,
        source: &Source,
        alert: Alert,
        auth: &Authenticated,
    ) -> Result<Taken, IntakeError> {
        let w = &self.workflow;
        let object = format!("{} {}", alert.format.name(), alert.id);
        let record = Record::new(&source.actor(), "alert.receive", object.clone()).detail(format!(
            "{}; from {} {}; {}",
            alert.title, alert.sender, alert.sender_name, auth.how
        ));
        let k = key(source, &alert.id);
        if let Some(id) = w.drafts.alert_draft(&k)? {
            if let Some(d) = w.drafts.get(id)? {
                w.record(record.detail(format!("duplicate of draft {id}; {}", auth.how)))?;
                return Ok(Taken {
                    done: Done::Duplicate,
                    draft: Some(d),
                    warnings: vec![],
                });
            }
        }
        let result = match alert.action {
            Action::Cancel => self.cancel(source, &alert, &k),
            Action::Alert | Action::Update => self.file(source, alert, auth, &k),
        };
        let record = match &result {
            Ok(t) => {
                let what = match (&t.done, &t.draft) {
                    (Done::Cancelled(ids), _) => format!("cancelled drafts {ids:?}"),
                    (done, Some(d)) => format!("{} as draft {}", done.name(), d.id),
                    (done, None) => done.name().to_string(),
                };
                let areas = t
                    .draft
                    .as_ref()
                    .map(|d| d.target_codes())
                    .unwrap_or_default();
                Record {
                    detail: format!("{}; {what}", record.detail),
                    ..record
                }
                .areas(&areas)
            }
            Err(e) => Record {
                detail: format!("{}; refused: {e}", record.detail),
                ..record
            }
            .outcome(Outcome::Refused),
        };
        w.record(record)?;
        let t = result?;
        // Published after its receipt is recorded: the publishing is its
        // own entry.
        match (&t.done, &t.draft) {
            (Done::Relayed, Some(d)) => {
                let d = w.publish_if_due(&source.actor(), d.clone())?;
                Ok(Taken {
                    draft: Some(d),
                    ..t
                })
            }
            _ => Ok(t),
        }
    }

    fn file(
        &self,
        source: &Source,
        alert: Alert,
        auth: &Authenticated,
        k: &str,
    ) -> Result<Taken, IntakeError> {
        let w = &self.workflow;
        let now = (w.now)();
        let targets = self.targets(&alert)?;
        if targets.is_empty() {
            return Ok(Taken {
                done: Done::NotHere,
                draft: None,
                warnings: vec![],
            });
        }
        let mut warnings = Vec::new();
        let (fields, mut field_warnings) = self.fields(&alert, targets, now)?;
        warnings.append(&mut field_warnings);
        let sound = self.sound(&alert, &fields, auth, &mut warnings)?;
        let (info, frames) = match sound.ingested {
            Some(i) => {
                warnings.extend(i.warnings);
                (i.info, i.frames)
            }
            None => (
                AudioInfo {
                    file_name: String::new(),
                    duration_ms: 0,
                    frames: 0,
                    sample_rate: 48_000,
                    source_lufs: None,
                    gain_db: 0.0,
                    frames_sha256: crate::drafts::frames_digest(&[]),
                    spoken: None,
                },
                Vec::new(),
            ),
        };
        let has_audio = !frames.is_empty();
        // An update replaces what it names: drafts still in review are
        // withdrawn now; broadcasts on air are cancelled once it is.
        let mut replaces = Vec::new();
        if alert.action == Action::Update {
            for r in &alert.refers_to {
                let Some(old) = self.referred(source, r)? else {
                    warnings.push(format!("the alert it updates ({r}) is not known here"));
                    continue;
                };
                match old.broadcast_id() {
                    Some(b) => replaces.push(b.to_string()),
                    None if old.state.editable() => {
                        w.set_state(old.id, DraftState::Cancelled)?;
                    }
                    None => {}
                }
            }
        }
        let at_once = source.relays_at_once(alert.severity, alert.drill)
            && has_audio
            && sound.trusted
            && severity_given(&alert);
        if source.relays_at_once(alert.severity, alert.drill) && !at_once {
            warnings.push("reviewed rather than relayed at once: see the warnings above".into());
        }
        let id = match w.drafts.alert_draft(k)? {
            Some(id) => id,
            None => w.drafts.next_id()?,
        };
        w.drafts.file_alert(k, id)?;
        let needed = w.policy.approvals_needed(fields.class).max(1);
        let mut d = Draft::new(
            id,
            &source.actor(),
            now,
            &fields,
            info,
            needed,
            warnings.clone(),
        );
        d.alert = Some(AlertOrigin {
            format: alert.format.name().into(),
            source: source.name.clone(),
            id: alert.id.clone(),
            sender: alert.sender.clone(),
            sender_name: alert.sender_name.clone(),
            verified: auth.how.clone(),
            received_ms: now,
            audio: sound.from,
            replaces,
        });
        if at_once {
            d.state = DraftState::Approved;
            d.approvals = vec![Decision {
                by: format!("policy:{}", source.name),
                at_ms: now,
                comment: "按网关策略立即转发（上级应急广播）".into(),
            }];
            d.approvals_needed = 1;
        } else {
            d.state = DraftState::Submitted;
        }
        w.drafts.insert(&d, &frames)?;
        Ok(Taken {
            done: if at_once { Done::Relayed } else { Done::Review },
            draft: Some(d),
            warnings,
        })
    }

    /// The draft an earlier alert of `source` was filed as.
    fn referred(&self, source: &Source, id: &str) -> Result<Option<Draft>, IntakeError> {
        let w = &self.workflow;
        Ok(match w.drafts.alert_draft(&key(source, id))? {
            Some(d) => w.drafts.get(d)?,
            None => None,
        })
    }

    /// Stops what a cancel names: broadcasts on air get a signed cancel
    /// (no review: stopping audio never waits), drafts in review are
    /// withdrawn.
    fn cancel(&self, source: &Source, alert: &Alert, k: &str) -> Result<Taken, IntakeError> {
        let w = &self.workflow;
        let mut cancelled = Vec::new();
        let mut last = None;
        for r in &alert.refers_to {
            let Some(d) = self.referred(source, r)? else {
                continue;
            };
            if let Some(b) = d.broadcast_id() {
                match issue::cancel(&w.relay, &w.ids, b) {
                    Ok(_)
                    | Err(IssueError::AlreadyCancelled(_))
                    | Err(IssueError::NoSuchBroadcast(_)) => {}
                    Err(e) => return Err(IntakeError::Other(e.to_string())),
                }
                let d = w.set_state(d.id, DraftState::Cancelled)?;
                cancelled.push(d.id);
                last = Some(d);
            } else if d.state.editable() || d.state == DraftState::Cancelled {
                let d = w.set_state(d.id, DraftState::Cancelled)?;
                cancelled.push(d.id);
                last = Some(d);
            }
        }
        let Some(d) = last else {
            return Err(IntakeError::Other(format!(
                "nothing here to cancel: {} is not known from {}",
                alert.refers_to.join(", "),
                source.name
            )));
        };
        w.drafts.file_alert(k, d.id)?;
        Ok(Taken {
            done: Done::Cancelled(cancelled),
            draft: Some(d),
            warnings: vec![],
        })
    }

    /// This platform's areas the alert names: an area code that covers
    /// the whole scope gives the scope; one within it gives itself; a
    /// shape gives every configured area within scope whose point lies
    /// inside it.
    fn targets(&self, alert: &Alert) -> Result<Vec<AreaCode>, IntakeError> {
        let scope = &self.workflow.relay.scope;
        let mut named = Vec::new();
        for code in &alert.area_codes {
            let Ok(a) = code.parse::<AreaCode>() else {
                continue;
            };
            for s in scope {
                if a.covers(*s) {
                    named.push(*s);
                } else if s.covers(a) {
                    named.push(a);
                }
            }
        }
        if !alert.shapes.is_empty() {
            for a in self.places.named() {
                let Some((lon, lat)) = self.places.point(a) else {
                    continue;
                };
                let p = gateway::geo::Point { lat, lon };
                if scope.iter().any(|s| s.covers(a)) && alert.shapes.iter().any(|s| s.contains(p)) {
                    named.push(a);
                }
            }
        }
        // The widest only: a village inside a named town adds nothing.
        named.sort();
        named.dedup();
        let widest: Vec<AreaCode> = named
            .iter()
            .filter(|a| !named.iter().any(|b| b != *a && b.covers(**a)))
            .copied()
            .collect();
        if widest.len() > protocol::header::MAX_TARGETS {
            return Err(IntakeError::Invalid(format!(
                "areas: {} of this platform's areas are named; the limit is {}",
                widest.len(),
                protocol::header::MAX_TARGETS
            )));
        }
        Ok(widest)
    }

    /// The draft's fields, each within its limit, and what was adjusted.
    fn fields(
        &self,
        a: &Alert,
        targets: Vec<AreaCode>,
        now: i64,
    ) -> Result<(DraftFields, Vec<String>), IntakeError> {
        let mut warnings = Vec::new();
        let severity = match Severity::from_code(a.severity) {
            Ok(s) if severity_given(a) => s,
            _ => {
                warnings.push(
                    "severity: not given by the sender; filed as IV (一般) for review".into(),
                );
                Severity::from_code(4).map_err(|e| IntakeError::Other(e.to_string()))?
            }
        };
        let event_type: EventType = a.event_type.parse().unwrap_or_else(|_| {
            warnings.push(format!(
                "event type {:?} is not a GB/T 35965 code; 10000 used",
                a.event_type
            ));
            "10000".parse().expect("a valid event type")
        });
        let title = match a.title.trim() {
            "" if !a.event.is_empty() => a.event.clone(),
            "" => "上级预警信息".to_string(),
            t => t.to_string(),
        };
        let bounded = |field: &str, v: &str, max: usize| {
            if v.len() > max {
                Err(IntakeError::Invalid(format!(
                    "{field}: {} bytes; the limit is {max}",
                    v.len()
                )))
            } else {
                Ok(())
            }
        };
        bounded("title", &title, protocol::header::MAX_TITLE_BYTES)?;
        bounded("text", &a.text, protocol::header::MAX_TEXT_BYTES)?;
        let language = match a.language.as_str() {
            "" | "zho" | "chi" | "zh" | "cmn" => "zh-CN".to_string(),
            l if l.len() <= protocol::header::MAX_LANGUAGE_BYTES
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
            {
                l.to_string()
            }
            _ => "zh-CN".to_string(),
        };
        let start = a.start_ms.unwrap_or(now);
        let start_at_ms = (start > now + SCHEDULED_AFTER_MS).then_some(start);
        if start_at_ms.is_some_and(|s| s > now + MAX_START_AHEAD_MS) {
            return Err(IntakeError::Invalid(
                "StartTime: more than 7 days ahead".into(),
            ));
        }
        let from = start.max(now);
        let end = a.end_ms.unwrap_or(from + DEFAULT_VALID_MINUTES * 60_000);
        if end <= now {
            return Err(IntakeError::Other(format!(
                "expired: it ended at {}",
                crate::audit::china_time(end)
            )));
        }
        if end <= from {
            return Err(IntakeError::Invalid("EndTime: not after StartTime".into()));
        }
        let valid_minutes = ((end - from + 59_999) / 60_000).clamp(1, MAX_VALID_MINUTES);
        Ok((
            DraftFields {
                targets,
                class: if a.drill {
                    BroadcastClass::Drill
                } else {
                    BroadcastClass::Emergency
                },
                severity,
                event_type,
                title,
                text: a.text.clone(),
                language,
                valid_minutes,
                volume: None,
                start_at_ms,
                schedule: None,
            },
            warnings,
        ))
    }

    /// The alert's audio through the upload ingest, else its text spoken,
    /// else none (the draft waits in review for audio).
    fn sound(
        &self,
        alert: &Alert,
        fields: &DraftFields,
        auth: &Authenticated,
        warnings: &mut Vec<String>,
    ) -> Result<Sound, IntakeError> {
        let w = &self.workflow;
        match &alert.audio {
            Some(Audio::Inline { name, bytes }) => {
                let ext = std::path::Path::new(name)
                    .extension()
                    .and_then(|e| e.to_str())
                    .filter(|e| e.len() <= 5 && e.bytes().all(|b| b.is_ascii_alphanumeric()))
                    .unwrap_or("bin");
                let file = Upload::write(bytes, ext)
                    .map_err(|e| IntakeError::Other(format!("writing the audio: {e}")))?;
                let upload = AudioUpload {
                    path: file.path(),
                    file_name: name,
                    spoken: None,
                };
                match w.ingest_audio(fields, &upload) {
                    Ok(i) => {
                        return Ok(Sound {
                            ingested: Some(i),
                            from: format!(
                                "{name} ({})",
                                if auth.audio_covered {
                                    "covered by the sender's signature or channel"
                                } else {
                                    "not covered by the signature: no digest in the message"
                                }
                            ),
                            trusted: auth.audio_covered,
                        })
                    }
                    Err(e) => {
                        warnings.push(format!("the sender's audio {name:?} cannot be used: {e}"))
                    }
                }
            }
            Some(Audio::Remote { uri, .. }) => {
                warnings.push(format!(
                    "the audio at {uri} was not fetched (gateway.fetch_hosts)"
                ));
            }
            None => {}
        }
        let spoken_text = format!("{}。{}", fields.title, fields.text);
        if w.voice.is_none() {
            warnings.push(
                "no audio: waiting in review for an audio file (no text to speech here)".into(),
            );
            return Ok(Sound {
                ingested: None,
                from: "none yet".into(),
                trusted: false,
            });
        }
        let spoken = w.speak(&spoken_text)?;
        let upload = AudioUpload {
            path: spoken.file.path(),
            file_name: &spoken.file_name,
            spoken: Some(&spoken.pinyin),
        };
        let ingested = w.ingest_audio(fields, &upload)?;
        Ok(Sound {
            ingested: Some(ingested),
            from: format!("spoken from its text ({})", spoken.file_name),
            trusted: true,
        })
    }

    /// Where the message `ebm_id` of `source` stands here, with its
    /// coverage from the terminals' receipts: (state, words, terminals
    /// that have it, playing, finished).
    pub fn state_of(
        &self,
        source: &Source,
        ebm_id: &str,
    ) -> Result<(BrdState, String, [u32; 3]), IntakeError> {
        let w = &self.workflow;
        let Some(d) = self.referred(source, ebm_id)? else {
            return Ok((BrdState::NotProcessed, "未收到该消息".into(), [0; 3]));
        };
        let now = (w.now)();
        let state = match (d.state, d.broadcast_id()) {
            (DraftState::Cancelled, _) => (BrdState::Cancelled, "已取消".to_string()),
            (DraftState::Rejected, _) => (
                BrdState::Failed,
                format!(
                    "审核未通过：{}",
                    d.rejection
                        .as_ref()
                        .map(|r| r.comment.as_str())
                        .unwrap_or("")
                ),
            ),
            (_, Some(b)) => match w.relay.broadcasts.get(b) {
                Some(held) if held.is_cancelled() => (BrdState::Cancelled, "已取消".into()),
                Some(held) => {
                    let h = held.header.header();
                    if now < h.start_ms {
                        (BrdState::Waiting, "等待播出".into())
                    } else if now < played_by(h) {
                        (BrdState::Playing, format!("播出中（广播 {b}）"))
                    } else {
                        (BrdState::Done, "播出完成".into())
                    }
                }
                None => (BrdState::Done, "播出完成".into()),
            },
            _ => (BrdState::Waiting, "等待审核".into()),
        };
        let coverage = match d.broadcast_id() {
            Some(b) => {
                let end = d.plan.map_or(now, |p| p.end_ms);
                let c = w.relay.book().coverage(b, now, end);
                [c.received, c.playing, c.finished]
            }
            None => [0; 3],
        };
        let (state, desc) = reached_none(state, coverage);
        Ok((state, desc, coverage))
    }
}

/// A broadcast "done" that no terminal received did not play anywhere:
/// the sender hears "failed", not "done" (a terminal that gets it later,
/// within its validity, turns it to done).
fn reached_none(state: (BrdState, String), coverage: [u32; 3]) -> (BrdState, String) {
    if state.0 == BrdState::Done && coverage[0] == 0 {
        (BrdState::Failed, "播出时段已过，没有终端收到".into())
    } else {
        state
    }
}

/// Time allowed beyond a recording's length for the terminals' playout
/// delay and stragglers before it counts as played.
const PLAYED_GRACE_MS: i64 = 15_000;

/// When a broadcast has played (for the state the sender hears): a
/// recording once its length (at most its segments' frames) and a grace
/// have passed after its start, else at the end of its validity. A
/// recording plays once; its validity may run for an hour.
fn played_by(h: &protocol::BroadcastHeader) -> i64 {
    let a = &h.audio;
    if a.live || a.total_segments == 0 {
        return h.end_ms;
    }
    let length_ms =
        i64::from(a.total_segments) * i64::from(a.frames_per_segment) * i64::from(a.frame_ms);
    (h.start_ms + length_ms + i64::from(a.playout_delay_ms) + PLAYED_GRACE_MS).min(h.end_ms)
}

/// The sender named a severity (I–IV): one unknown is never relayed
/// unreviewed.
fn severity_given(a: &Alert) -> bool {
    (1..=4).contains(&a.severity)
}

/// The broadcasts an alert's draft replaces, cancelled once it is
/// published (by whoever published it).
pub fn cancel_replaced(w: &crate::workflow::Workflow, d: &Draft) {
    let Some(a) = &d.alert else { return };
    for r in &a.replaces {
        let Ok(b) = r.parse::<BroadcastId>() else {
            continue;
        };
        match issue::cancel(&w.relay, &w.ids, b) {
            Ok(c) => {
                let _ = w.record(
                    Record::new(
                        &format!("gateway:{}", a.source),
                        "broadcast.cancel",
                        format!("broadcast {b}"),
                    )
                    .detail(format!(
                        "replaced by draft {} ({} {}); cancel {c}",
                        d.id, a.format, a.id
                    )),
                );
                if let Ok(Some(old)) = w.drafts.by_broadcast(b) {
                    let _ = w.set_state(old.id, DraftState::Cancelled);
                }
            }
            Err(IssueError::AlreadyCancelled(_)) | Err(IssueError::NoSuchBroadcast(_)) => {}
            Err(e) => tracing::error!("cancelling broadcast {b}, replaced by draft {}: {e}", d.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_without_a_terminal_is_failed() {
        let done = || (BrdState::Done, "播出完成".to_string());
        assert_eq!(reached_none(done(), [0, 0, 0]).0, BrdState::Failed);
        assert_eq!(reached_none(done(), [3, 0, 2]).0, BrdState::Done);
        let playing = (BrdState::Playing, String::new());
        assert_eq!(reached_none(playing, [0, 0, 0]).0, BrdState::Playing);
    }
}
