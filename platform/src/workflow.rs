//! The review procedure (严格审稿和播出程序) and every other action a person
//! takes on the platform, each checked against the caller's roles and
//! areas and recorded in the audit trail (flushed) before it is
//! acknowledged. The HTTP API is a thin layer over this. Blocking (store
//! flushes, ingest, signing): callers on a runtime use `spawn_blocking`.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use certs::AreaCode;
use protocol::BroadcastId;

use crate::accounts::{Account, Accounts, Role};
use crate::audit::{AuditTrail, Outcome, Record};
use crate::drafts::{
    frames_digest, AudioInfo, Decision, Draft, DraftFields, DraftState, DraftStore,
    DraftStoreError, FieldError, Origin, SentRequest,
};
use crate::issue::{self, IdAllocator, IssueError};
use crate::policy::{self, ReviewPolicy};
use crate::relay::Relay;

/// Longest comment on an approval or rejection, in bytes: what an
/// outcome sent down to a requester carries.
pub const MAX_COMMENT_BYTES: usize = protocol::request::MAX_DECISION_COMMENT_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("not allowed: {0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("draft {id} is {state}: it cannot be {action}")]
    WrongState {
        id: u64,
        state: &'static str,
        action: &'static str,
    },
    #[error("you drafted or edited draft {0}: another approver must approve it")]
    OwnDraft(u64),
    #[error("you approved draft {0} already; it needs another approver")]
    ApprovedAlready(u64),
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error(transparent)]
    Issue(#[from] IssueError),
    #[error("store: {0}")]
    Store(String),
}

impl From<DraftStoreError> for WorkflowError {
    fn from(e: DraftStoreError) -> Self {
        match e {
            DraftStoreError::Missing(id) => WorkflowError::NotFound(format!("draft {id}")),
            e => WorkflowError::Store(e.to_string()),
        }
    }
}

impl From<crate::audit::AuditError> for WorkflowError {
    fn from(e: crate::audit::AuditError) -> Self {
        WorkflowError::Store(e.to_string())
    }
}

impl From<crate::accounts::AccountError> for WorkflowError {
    fn from(e: crate::accounts::AccountError) -> Self {
        WorkflowError::Store(e.to_string())
    }
}

fn forbidden(s: impl Into<String>) -> WorkflowError {
    WorkflowError::Forbidden(s.into())
}

/// A file to ingest, with the name it was uploaded under (errors name it,
/// never the temporary file).
pub struct AudioUpload<'a> {
    pub path: &'a Path,
    pub file_name: &'a str,
    /// The audio was spoken from the draft's text: what the voice read.
    pub spoken: Option<&'a str>,
}

/// Audio ingested for a draft.
pub(crate) struct Ingested {
    pub(crate) info: AudioInfo,
    pub(crate) frames: Vec<Vec<u8>>,
    pub(crate) warnings: Vec<String>,
}

pub struct Workflow {
    pub relay: Arc<Relay>,
    pub ids: IdAllocator,
    pub drafts: DraftStore,
    pub audit: AuditTrail,
    pub accounts: Accounts,
    pub policy: ReviewPolicy,
    pub ingest: codec::IngestConfig,
    pub lead_ms: i64,
    /// The playout delay live broadcasts name in their header.
    pub live_delay_ms: u16,
    pub now: fn() -> i64,
    /// The earliest start of an approved draft waiting for it (i64::MIN:
    /// not known yet, scan; i64::MAX: none).
    pub next_start_ms: AtomicI64,
    /// Speaks typed text, where a voice is installed.
    pub voice: Option<Arc<dyn tts::Voice>>,
}

impl Workflow {
    /// The areas `a` may address here.
    pub fn reach(&self, a: &Account) -> Vec<AreaCode> {
        a.reach(&self.relay.scope)
    }

    fn within_reach(&self, a: &Account, targets: &[AreaCode]) -> bool {
        certs::area::first_outside(targets, &self.reach(a)).is_none()
    }

    fn check_reach(&self, a: &Account, targets: &[AreaCode]) -> Result<(), WorkflowError> {
        Ok(crate::drafts::check_targets(targets, &self.reach(a))?)
    }

    /// Records `r` and returns `result`: what was done or refused is in the
    /// trail before anyone hears of it.
    pub(crate) fn audited<T>(
        &self,
        r: Record,
        result: Result<T, WorkflowError>,
    ) -> Result<T, WorkflowError> {
        let r = match &result {
            Ok(_) => r,
            Err(WorkflowError::Store(e)) => r.outcome(Outcome::Failed).detail(e.clone()),
            Err(WorkflowError::Issue(IssueError::Store(e))) => {
                r.outcome(Outcome::Failed).detail(e.clone())
            }
            Err(e) => r.outcome(Outcome::Refused).detail(e.to_string()),
        };
        self.audit.record(r, (self.now)())?;
        result
    }

    pub(crate) fn ingest_audio(
        &self,
        fields: &DraftFields,
        audio: &AudioUpload<'_>,
    ) -> Result<Ingested, WorkflowError> {
        // A programme's validity is its timetable's, not valid_minutes.
        let checked = match fields.schedule {
            Some(_) => DraftFields {
                valid_minutes: crate::drafts::MAX_VALID_MINUTES,
                ..fields.clone()
            },
            None => fields.clone(),
        };
        let (encoded, warnings) = issue::ingest(audio.path, &self.ingest, &checked, self.lead_ms)
            .map_err(|e| match e {
            // The codec's message names the temporary file: name the upload.
            IssueError::Audio(c) => IssueError::Invalid(format!(
                "audio: {:?} cannot be used: {}",
                audio.file_name,
                c.to_string()
                    .replace(&audio.path.display().to_string(), audio.file_name)
            )),
            e => e,
        })?;
        let info = AudioInfo {
            file_name: audio.file_name.to_string(),
            duration_ms: encoded.frames.len() as i64 * 20,
            frames: encoded.frames.len(),
            sample_rate: encoded.sample_rate,
            source_lufs: encoded.normalisation.source_lufs,
            gain_db: encoded.normalisation.gain_db,
            frames_sha256: frames_digest(&encoded.frames),
            spoken: audio.spoken.map(str::to_string),
        };
        Ok(Ingested {
            info,
            frames: encoded.frames,
            warnings,
        })
    }

    /// Saves a new draft with its audio ingested once, now.
    pub fn create(
        &self,
        by: &Account,
        fields: DraftFields,
        audio: AudioUpload<'_>,
    ) -> Result<Draft, WorkflowError> {
        let record = Record::new(&by.name, "draft.create", "new")
            .areas(&fields.targets)
            .detail(fields.title.clone());
        let result = (|| {
            if !policy::may_draft(by, fields.class) {
                return Err(forbidden("drafting needs the drafter or clerk role"));
            }
            self.check_reach(by, &fields.targets)?;
            let Ingested {
                info,
                frames,
                warnings,
            } = self.ingest_audio(&fields, &audio)?;
            crate::scheduling::check_programme_audio(&fields, info.duration_ms)?;
            let now = (self.now)();
            let d = Draft::new(
                self.drafts.next_id()?,
                &by.name,
                now,
                &fields,
                info,
                self.policy.approvals_needed(fields.class),
                warnings,
            );
            self.drafts.insert(&d, &frames)?;
            Ok(d)
        })();
        let object = result
            .as_ref()
            .map(|d| format!("draft {}", d.id))
            .unwrap_or_else(|_| "draft (none)".into());
        self.audited(Record { object, ..record }, result)
    }

    /// Changes a draft's fields and/or audio. An edit after submission
    /// clears its approvals and sends it back to review.
    pub fn edit(
        &self,
        by: &Account,
        id: u64,
        fields: Option<DraftFields>,
        audio: Option<AudioUpload<'_>>,
    ) -> Result<Draft, WorkflowError> {
        let record = Record::new(&by.name, "draft.edit", format!("draft {id}"));
        let result = (|| {
            let current = self.get(by, id)?;
            if !current.authors.contains(&by.name) && !by.has(Role::Drafter) {
                return Err(forbidden("only its authors or a drafter may edit a draft"));
            }
            let fields = fields.unwrap_or_else(|| current.fields());
            self.check_reach(by, &fields.targets)?;
            let new_audio = match &audio {
                Some(a) => Some(self.ingest_audio(&fields, a)?),
                None => None,
            };
            let duration_ms = new_audio
                .as_ref()
                .map_or(current.audio.duration_ms, |a| a.info.duration_ms);
            crate::scheduling::check_programme_audio(&fields, duration_ms)?;
            if let Some(a) = &new_audio {
                self.drafts
                    .put_frames(id, &a.info.frames_sha256, &a.frames)?;
            }
            let old_digest = current.audio.frames_sha256.clone();
            let now = (self.now)();
            let d = self.drafts.update(id, |d| {
                if !d.state.editable() || d.plan.is_some() {
                    return Err(WorkflowError::WrongState {
                        id,
                        state: d.state.name(),
                        action: "edited",
                    });
                }
                d.set_fields(&fields);
                if let Some(a) = &new_audio {
                    d.audio = a.info.clone();
                    d.warnings = a.warnings.clone();
                }
                d.authors.insert(by.name.clone());
                d.updated_ms = now;
                d.approvals.clear();
                d.approvals_needed = self.policy.approvals_needed(fields.class);
                d.state = match d.state {
                    DraftState::Submitted | DraftState::Approved => DraftState::Submitted,
                    _ => DraftState::Draft,
                };
                Ok(())
            })??;
            if d.audio.frames_sha256 != old_digest {
                self.drafts.remove_frames(id, &old_digest)?;
            }
            Ok(d)
        })();
        self.audited(record, result)
    }

    /// A draft, if the caller may see it (its areas are within theirs).
    pub fn get(&self, by: &Account, id: u64) -> Result<Draft, WorkflowError> {
        let d = self
            .drafts
            .get(id)?
            .ok_or_else(|| WorkflowError::NotFound(format!("draft {id}")))?;
        if !self.within_reach(by, &d.fields().targets) {
            return Err(WorkflowError::NotFound(format!("draft {id}")));
        }
        Ok(d)
    }

    pub fn list(
        &self,
        by: &Account,
        state: Option<DraftState>,
        limit: usize,
    ) -> Result<Vec<Draft>, WorkflowError> {
        Ok(self
            .drafts
            .list(state, limit)?
            .into_iter()
            .filter(|d| self.within_reach(by, &d.fields().targets))
            .collect())
    }

    /// Asks for review. A draft that needs no approval (a daily notice by
    /// default) is published at once (or at its start).
    pub fn submit(&self, by: &Account, id: u64) -> Result<Draft, WorkflowError> {
        let record = Record::new(&by.name, "draft.submit", format!("draft {id}"));
        let result = (|| {
            let current = self.get(by, id)?;
            if !current.authors.contains(&by.name) {
                return Err(forbidden("only an author of a draft may submit it"));
            }
            let needed = self.policy.approvals_needed(current.class());
            let above = self.policy.goes_above(current.class());
            if above && current.schedule.is_some() {
                return Err(FieldError {
                    field: "schedule",
                    message: "a scheduled programme is reviewed on the platform that issues it; \
                              this platform sends daily content to the tier above (review.daily)"
                        .into(),
                    message_zh: "本平台日常节目须上级审核，定时节目无法上报".into(),
                }
                .into());
            }
            if above && current.audio.frames > protocol::request::MAX_REQUEST_FRAMES {
                return Err(FieldError {
                    field: "audio",
                    message: format!(
                        "{} s of audio; a request to the tier above carries at most {} s",
                        current.audio.duration_ms / 1000,
                        protocol::request::MAX_REQUEST_FRAMES / 50
                    ),
                    message_zh: "上报申请的音频最长10分钟".into(),
                }
                .into());
            }
            let now = (self.now)();
            let d = self.drafts.update(id, |d| {
                if !matches!(d.state, DraftState::Draft | DraftState::Rejected) {
                    return Err(WorkflowError::WrongState {
                        id,
                        state: d.state.name(),
                        action: "submitted",
                    });
                }
                d.approvals.clear();
                d.rejection = None;
                d.approvals_needed = needed;
                d.state = if above {
                    d.request = Some(SentRequest {
                        request_id: new_request_id(),
                        requested_at_ms: now,
                        account: by.name.clone(),
                        held_by: None,
                        broadcast: None,
                        decided_by: None,
                    });
                    DraftState::Requested
                } else if needed == 0 {
                    DraftState::Approved
                } else {
                    DraftState::Submitted
                };
                Ok(())
            })??;
            Ok(d)
        })();
        let d = self.audited(record, result)?;
        if d.state == DraftState::Requested {
            return self.send_request(&by.name, d);
        }
        self.publish_if_due(&by.name, d)
    }

    /// The signed request frame of draft `d` (sent up): the same bytes
    /// every time, from what the draft holds.
    fn request_frame(&self, d: &Draft) -> Result<Vec<u8>, WorkflowError> {
        let sent = d
            .request
            .as_ref()
            .ok_or_else(|| WorkflowError::Store(format!("draft {} has no request", d.id)))?;
        let f = d.fields();
        let req = protocol::PublishRequest {
            request_id: sent.request_id,
            requested_at_ms: sent.requested_at_ms,
            // An account name: at most 32 bytes, as the request allows.
            requester_account: sent.account.clone(),
            targets: f.targets.clone(),
            class: f.class,
            severity: f.severity,
            event_type: f.event_type,
            valid_minutes: f.valid_minutes as u32,
            volume: f.volume,
            language: f.language.clone(),
            title: f.title.clone(),
            text: f.text.clone(),
            sample_rate: d.audio.sample_rate,
            frames: self.drafts.frames(d)?,
        };
        Ok(protocol::Message::PublishRequest(req.sign(&self.relay.identity)).encode())
    }

    /// Keeps the request in the outbox (sent again at every connection to
    /// a parent until its answer is final) and sends it now.
    fn send_request(&self, actor: &str, d: Draft) -> Result<Draft, WorkflowError> {
        let Some(sent) = d.request.clone() else {
            return Ok(d);
        };
        let record = Record::new(
            actor,
            "request.send",
            format!("draft {} request {:016x}", d.id, sent.request_id),
        )
        .areas(&d.target_codes())
        .detail(d.title.clone());
        let result = (|| {
            let frame = self.request_frame(&d)?;
            self.drafts.note_sent(sent.request_id, d.id)?;
            self.relay
                .store()
                .put_outbox(sent.request_id, &frame)
                .map_err(|e| WorkflowError::Store(e.to_string()))?;
            self.relay.requests.outbox_changed();
            Ok(d)
        })();
        self.audited(record, result)
    }

    /// At the tier above: files a child's request once (across restarts)
    /// as a draft waiting for approval here, and returns the answer to
    /// send back (queued, or the decision if there is one).
    pub fn file_request(
        &self,
        inc: crate::requests::Incoming,
    ) -> Result<protocol::SignedOutcome, WorkflowError> {
        let r = &inc.request.request;
        let existing = self.drafts.filed(inc.child_serial, r.request_id)?;
        if let Some(d) = existing
            .map(|id| self.drafts.get(id))
            .transpose()?
            .flatten()
        {
            return Ok(self.outcome_of(&d));
        }
        let author = format!("{}@{}", r.requester_account, inc.child_name);
        let record = Record::new(
            &author,
            "request.receive",
            format!("request {:016x} of {:016x}", r.request_id, inc.child_serial),
        )
        .areas(&r.targets)
        .detail(r.title.clone());
        let result = (|| {
            let fields = DraftFields {
                targets: r.targets.clone(),
                class: r.class,
                severity: r.severity,
                event_type: r.event_type,
                title: r.title.clone(),
                text: r.text.clone(),
                language: r.language.clone(),
                valid_minutes: r.valid_minutes as i64,
                volume: r.volume,
                start_at_ms: None,
                schedule: None,
            };
            let audio_ms = r.frames.len() as i64 * 20;
            if audio_ms + self.lead_ms > fields.valid_minutes * 60_000 {
                return Err(IssueError::LongerThanValidity {
                    audio_ms,
                    lead_ms: self.lead_ms,
                    valid_minutes: fields.valid_minutes,
                }
                .into());
            }
            let id = match existing {
                Some(id) => id,
                None => self.drafts.next_id()?,
            };
            self.drafts.file(inc.child_serial, r.request_id, id)?;
            let info = AudioInfo {
                file_name: format!("发布申请 {}", inc.child_name),
                duration_ms: audio_ms,
                frames: r.frames.len(),
                sample_rate: r.sample_rate,
                source_lufs: None,
                gain_db: 0.0,
                frames_sha256: frames_digest(&r.frames),
                spoken: None,
            };
            let needed = self.policy.approvals_needed(r.class).max(1);
            let mut d = Draft::new(id, &author, (self.now)(), &fields, info, needed, vec![]);
            d.state = DraftState::Submitted;
            d.origin = Some(Origin {
                platform_serial: format!("{:016x}", inc.child_serial),
                platform_name: inc.child_name.clone(),
                request_id: r.request_id,
                account: r.requester_account.clone(),
            });
            self.drafts.insert(&d, &r.frames)?;
            Ok(d)
        })();
        let d = self.audited(record, result)?;
        Ok(self.outcome_of(&d))
    }

    /// The answer for a request filed as draft `d`, signed here.
    fn outcome_of(&self, d: &Draft) -> protocol::SignedOutcome {
        use protocol::OutcomeState;
        let (serial, request_id) = d
            .origin
            .as_ref()
            .map(|o| {
                (
                    u64::from_str_radix(&o.platform_serial, 16).unwrap_or(0),
                    o.request_id,
                )
            })
            .unwrap_or((0, 0));
        let last = d.approvals.last();
        let (state, broadcast, by, comment) = match (d.state, d.broadcast_id()) {
            (_, Some(b)) => (
                OutcomeState::Approved,
                Some(b),
                last.map(|a| a.by.clone()).unwrap_or_default(),
                last.map(|a| a.comment.clone()).unwrap_or_default(),
            ),
            (DraftState::Rejected, None) => (
                OutcomeState::Rejected,
                None,
                d.rejection
                    .as_ref()
                    .map(|r| r.by.clone())
                    .unwrap_or_default(),
                d.rejection
                    .as_ref()
                    .map(|r| r.comment.clone())
                    .unwrap_or_default(),
            ),
            (DraftState::Cancelled, None) => (
                OutcomeState::Rejected,
                None,
                String::new(),
                "withdrawn".into(),
            ),
            _ => (OutcomeState::Queued, None, String::new(), String::new()),
        };
        protocol::RequestOutcome {
            requester_serial: serial,
            request_id,
            state,
            broadcast,
            // Account names and comments are bounded here as the outcome
            // bounds them (`accounts::MAX_NAME_BYTES`, `MAX_COMMENT_BYTES`).
            decided_by: by,
            comment,
            at_ms: (self.now)(),
        }
        .sign(&self.relay.identity)
    }

    /// Tells the requesting platform how its request stands, if `d` is one.
    fn answer_origin(&self, d: &Draft) {
        if let Some(o) = &d.origin {
            if let Ok(serial) = u64::from_str_radix(&o.platform_serial, 16) {
                let frame = protocol::Message::RequestOutcome(self.outcome_of(d)).encode();
                self.relay
                    .requests
                    .answer(serial, bytes::Bytes::from(frame));
            }
        }
    }

    /// At the requesting platform: the parent's answer. A final one
    /// (approved, rejected) settles the draft and empties its outbox entry.
    pub fn apply_outcome(&self, from: crate::requests::FromParent) -> Result<(), WorkflowError> {
        use protocol::OutcomeState;
        let o = &from.outcome.outcome;
        if o.requester_serial != self.relay.identity.cert().serial() {
            return Ok(());
        }
        let Some(id) = self.drafts.sent_draft(o.request_id)? else {
            return Ok(());
        };
        let parent = format!("{:016x}", from.parent_serial);
        let now = (self.now)();
        let before = self.drafts.get(id)?.map(|d| d.state);
        let d = self.drafts.update(id, |d| {
            let Some(sent) = d.request.as_mut() else {
                return Err(());
            };
            if sent.request_id != o.request_id || d.state != DraftState::Requested {
                return Err(());
            }
            sent.held_by = Some(parent.clone());
            match o.state {
                OutcomeState::Queued => {}
                OutcomeState::Approved => {
                    sent.broadcast = o.broadcast.map(|b| b.to_string());
                    sent.decided_by = Some(o.decided_by.clone());
                    d.state = DraftState::Published;
                }
                OutcomeState::Rejected => {
                    sent.decided_by = Some(o.decided_by.clone());
                    d.rejection = Some(Decision {
                        by: format!("{}@{parent}", o.decided_by),
                        at_ms: now,
                        comment: o.comment.clone(),
                    });
                    d.state = DraftState::Rejected;
                }
            }
            Ok(())
        })?;
        let Ok(d) = d else {
            return Ok(());
        };
        if o.state != OutcomeState::Queued {
            self.relay
                .store()
                .remove_outbox(o.request_id)
                .map_err(|e| WorkflowError::Store(e.to_string()))?;
        }
        if before != Some(d.state) {
            let action = match o.state {
                OutcomeState::Queued => "request.queued",
                OutcomeState::Approved => "request.approved",
                OutcomeState::Rejected => "request.rejected",
            };
            let mut r = Record::new(
                &format!("{}@{parent}", o.decided_by),
                action,
                format!("draft {id} request {:016x}", o.request_id),
            )
            .areas(&d.target_codes())
            .detail(o.comment.clone());
            if let Some(b) = o.broadcast {
                r.object = format!("{} broadcast {b}", r.object);
            }
            self.record(r)?;
        }
        Ok(())
    }

    /// At start: requests whose outbox entry a crash lost are put back
    /// (the same bytes: the draft fixes them).
    pub fn recover_requests(&self) -> Result<usize, WorkflowError> {
        let mut n = 0;
        let held: Vec<Vec<u8>> = self
            .relay
            .store()
            .outbox()
            .map_err(|e| WorkflowError::Store(e.to_string()))?;
        for d in self.drafts.list(Some(DraftState::Requested), usize::MAX)? {
            let Some(sent) = &d.request else { continue };
            let frame = self.request_frame(&d)?;
            if !held.contains(&frame) {
                self.drafts.note_sent(sent.request_id, d.id)?;
                self.relay
                    .store()
                    .put_outbox(sent.request_id, &frame)
                    .map_err(|e| WorkflowError::Store(e.to_string()))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Approves with a comment: by an approver who wrote none of it, whose
    /// areas cover its targets. The last approval needed publishes it.
    pub fn approve(&self, by: &Account, id: u64, comment: &str) -> Result<Draft, WorkflowError> {
        let record = Record::new(&by.name, "draft.approve", format!("draft {id}")).detail(comment);
        let result = (|| {
            check_text("comment", comment, None)?;
            if !by.has(Role::Approver) {
                return Err(forbidden("approving needs the approver role"));
            }
            let current = self.get(by, id)?;
            if current.authors.contains(&by.name) {
                return Err(WorkflowError::OwnDraft(id));
            }
            if current.audio.frames == 0 {
                return Err(crate::drafts::field_error(
                    "audio",
                    "it has no audio yet: edit it with an audio file first",
                    "尚无音频：请先上传音频文件",
                )
                .into());
            }
            let now = (self.now)();
            let d = self.drafts.update(id, |d| {
                if d.state != DraftState::Submitted {
                    return Err(WorkflowError::WrongState {
                        id,
                        state: d.state.name(),
                        action: "approved",
                    });
                }
                if d.authors.contains(&by.name) {
                    return Err(WorkflowError::OwnDraft(id));
                }
                if d.approvals.iter().any(|a| a.by == by.name) {
                    return Err(WorkflowError::ApprovedAlready(id));
                }
                d.approvals.push(Decision {
                    by: by.name.clone(),
                    at_ms: now,
                    comment: comment.to_string(),
                });
                if d.approvals.len() >= d.approvals_needed as usize {
                    d.state = DraftState::Approved;
                }
                Ok(())
            })??;
            Ok(d)
        })();
        let record = match &result {
            Ok(d) => record.areas(&d.target_codes()),
            Err(_) => record,
        };
        let d = self.audited(record, result)?;
        self.publish_if_due(&by.name, d)
    }

    /// Sends a draft back with a comment (required).
    pub fn reject(&self, by: &Account, id: u64, comment: &str) -> Result<Draft, WorkflowError> {
        let record = Record::new(&by.name, "draft.reject", format!("draft {id}")).detail(comment);
        let result = (|| {
            check_text(
                "comment",
                comment,
                Some(("a rejection needs a comment saying why", "退回须填写原因")),
            )?;
            if !by.has(Role::Approver) {
                return Err(forbidden("rejecting needs the approver role"));
            }
            self.get(by, id)?;
            let now = (self.now)();
            self.drafts.update(id, |d| {
                if !matches!(d.state, DraftState::Submitted | DraftState::Approved)
                    || d.plan.is_some()
                {
                    return Err(WorkflowError::WrongState {
                        id,
                        state: d.state.name(),
                        action: "rejected",
                    });
                }
                d.state = DraftState::Rejected;
                d.approvals.clear();
                d.rejection = Some(Decision {
                    by: by.name.clone(),
                    at_ms: now,
                    comment: comment.to_string(),
                });
                Ok(())
            })?
        })();
        let d = self.audited(record, result)?;
        self.answer_origin(&d);
        Ok(d)
    }

    /// Withdraws a draft that is not yet published: its authors or an approver.
    pub fn withdraw(&self, by: &Account, id: u64) -> Result<Draft, WorkflowError> {
        let record = Record::new(&by.name, "draft.withdraw", format!("draft {id}"));
        let result = (|| {
            let current = self.get(by, id)?;
            if !current.authors.contains(&by.name) && !by.has(Role::Approver) {
                return Err(forbidden(
                    "only its authors or an approver may withdraw a draft",
                ));
            }
            self.drafts.update(id, |d| {
                if !d.state.editable() || d.plan.is_some() {
                    return Err(WorkflowError::WrongState {
                        id,
                        state: d.state.name(),
                        action: "withdrawn",
                    });
                }
                d.state = DraftState::Cancelled;
                Ok(())
            })?
        })();
        let d = self.audited(record, result)?;
        self.answer_origin(&d);
        Ok(d)
    }

    pub(crate) fn set_state(&self, id: u64, state: DraftState) -> Result<Draft, WorkflowError> {
        match self.drafts.update(id, |d| {
            d.state = state;
            Ok::<(), std::convert::Infallible>(())
        })? {
            Ok(d) => Ok(d),
            Err(never) => match never {},
        }
    }

    /// Publishes `d` if it is approved and its start has come.
    pub(crate) fn publish_if_due(&self, actor: &str, d: Draft) -> Result<Draft, WorkflowError> {
        let due = d.state == DraftState::Approved
            && d.plan.is_none()
            && d.start_at_ms.is_none_or(|t| t <= (self.now)());
        if due {
            self.publish(actor, d.id)
        } else {
            if let (DraftState::Approved, Some(t)) = (d.state, d.start_at_ms) {
                self.next_start_ms.fetch_min(t, Ordering::AcqRel);
            }
            Ok(d)
        }
    }

    /// Signs and sends approved draft `id`. The plan (id and times) is
    /// claimed and stored first, so of two racing publishers one signs,
    /// and a crash after signing re-signs the same bytes at restart.
    fn publish(&self, actor: &str, id: u64) -> Result<Draft, WorkflowError> {
        let now = (self.now)();
        let draft = self
            .drafts
            .get(id)?
            .ok_or_else(|| WorkflowError::NotFound(format!("draft {id}")))?;
        if draft.schedule.is_some() {
            return self.publish_scheduled(actor, draft, now);
        }
        let fields = draft.fields();
        let lead = self.relay.book().lead.lead(self.lead_ms);
        let plan = issue::plan(&self.ids, &fields, now, lead)?;
        tracing::info!(
            "draft {id}: presents {} ms after signing (slowest arrival measured: {})",
            lead.lead_ms,
            lead.measured_ms
                .map_or("none yet".to_string(), |m| format!("{m} ms"))
        );
        self.claim_and_sign(actor, id, plan)
    }

    /// Stores `plan` on approved draft `id` unless it has one, then signs
    /// it: of two racing publishers one claims it, and the other gets the
    /// draft as the first left it.
    fn claim_and_sign(
        &self,
        actor: &str,
        id: u64,
        plan: crate::drafts::Plan,
    ) -> Result<Draft, WorkflowError> {
        let claimed = self.drafts.update(id, |d| {
            if d.state != DraftState::Approved || d.plan.is_some() {
                return Err(());
            }
            d.plan = Some(plan);
            Ok(())
        })?;
        match claimed {
            Ok(d) => self.sign_planned(actor, d),
            Err(()) => self
                .drafts
                .get(id)?
                .ok_or_else(|| WorkflowError::NotFound(format!("draft {id}"))),
        }
    }

    /// Claims the plan of a programme draft (a new programme id, or the
    /// next revision of the one it revises) and signs it.
    fn publish_scheduled(&self, actor: &str, d: Draft, now: i64) -> Result<Draft, WorkflowError> {
        let id = d.id;
        let (programme, revision) = match d.revises.map(BroadcastId::from_u128) {
            Some(Ok(p)) => {
                let held = self
                    .relay
                    .ahead
                    .get(p)
                    .ok_or_else(|| WorkflowError::NotFound(format!("programme {p}")))?;
                (p, held.signed.programme().revision + 1)
            }
            Some(Err(e)) => return Err(WorkflowError::Store(e.to_string())),
            None => (self.ids.next(now)?, 1),
        };
        let until = d
            .schedule
            .as_ref()
            .map(|t| {
                let s = t.to_schedule();
                protocol::schedule::instant(s.last_day as i64 + 1, 0, s.utc_offset_minutes)
            })
            .unwrap_or(now);
        let plan = crate::drafts::Plan {
            broadcast: programme.as_u128(),
            issued_at_ms: now,
            end_ms: until,
            play_at_us: 0,
            playout_delay_ms: 0,
            revision: Some(revision),
        };
        self.claim_and_sign(actor, id, plan)
    }

    fn sign_planned(&self, actor: &str, d: Draft) -> Result<Draft, WorkflowError> {
        let id = d.id;
        let Some(plan) = d.plan else {
            return Ok(d);
        };
        if d.schedule.is_some() {
            let record = Record::new(actor, "programme.publish", format!("draft {id}"))
                .areas(&d.target_codes())
                .detail(d.title.clone());
            let result = self
                .sign_programme(&d, &plan)
                .and_then(|p| Ok((p, self.set_state(id, DraftState::Published)?)));
            let record = match &result {
                Ok((p, _)) => Record {
                    object: format!(
                        "programme {p} revision {} (draft {id})",
                        plan.revision.unwrap_or(1)
                    ),
                    ..record
                },
                Err(_) => record,
            };
            let (_, d) = self.audited(record, result)?;
            return Ok(d);
        }
        let record = Record::new(actor, "broadcast.publish", format!("draft {id}"))
            .areas(&d.target_codes())
            .detail(d.title.clone());
        let result = (|| {
            let frames = self.drafts.frames(&d)?;
            let bid = issue::sign_and_publish(
                &self.relay,
                &d.fields(),
                frames,
                d.audio.sample_rate,
                &plan,
            )?;
            Ok((bid, self.set_state(id, DraftState::Published)?))
        })();
        let record = match &result {
            Ok((bid, _)) => Record {
                object: format!("broadcast {bid} (draft {id})"),
                ..record
            },
            Err(_) => record,
        };
        let (_, d) = self.audited(record, result)?;
        self.answer_origin(&d);
        crate::alerts::intake::cancel_replaced(self, &d);
        Ok(d)
    }

    /// At start: finishes what a crash interrupted (a draft whose plan was
    /// stored but whose publishing was not recorded) and publishes
    /// approved drafts whose start has come. Returns how many it published.
    pub fn publish_due(&self) -> Result<usize, WorkflowError> {
        let now = (self.now)();
        // The scan reads every draft: only when a start may have come.
        if now < self.next_start_ms.load(Ordering::Acquire) {
            return Ok(0);
        }
        self.next_start_ms.store(i64::MAX, Ordering::Release);
        let mut n = 0;
        for d in self.drafts.list(Some(DraftState::Approved), usize::MAX)? {
            if let (None, Some(t)) = (d.plan, d.start_at_ms) {
                if t > now {
                    self.next_start_ms.fetch_min(t, Ordering::AcqRel);
                }
            }
            match d.plan {
                Some(plan) => {
                    let held = BroadcastId::from_u128(plan.broadcast)
                        .ok()
                        .is_some_and(|b| match plan.revision {
                            Some(r) => self
                                .relay
                                .ahead
                                .get(b)
                                .is_some_and(|h| h.signed.programme().revision >= r),
                            None => self.relay.broadcasts.get(b).is_some(),
                        });
                    if held {
                        self.set_state(d.id, DraftState::Published)?;
                    } else if plan.end_ms > now {
                        self.sign_planned("system", d)?;
                        n += 1;
                    }
                }
                None if d.start_at_ms.is_none_or(|t| t <= now) => {
                    self.publish("system", d.id)?;
                    n += 1;
                }
                None => {}
            }
        }
        Ok(n)
    }

    /// The prepared cancel: one call, allowed to an author of the draft it
    /// came from and to any approver. No second approval is needed to stop
    /// audio. A broadcast of a lower tier (not held here) is cancelled from
    /// above by an approver, for `areas` given.
    pub fn cancel(
        &self,
        by: &Account,
        target: BroadcastId,
        areas: Option<Vec<AreaCode>>,
    ) -> Result<BroadcastId, WorkflowError> {
        if self.relay.broadcasts.get(target).is_none() {
            if let Some(areas) = areas {
                return self.cancel_below(by, target, areas);
            }
        }
        let record = Record::new(&by.name, "broadcast.cancel", format!("broadcast {target}"));
        let draft = self.drafts.by_broadcast(target)?;
        let record = match self.relay.broadcasts.get(target) {
            Some(b) => record
                .areas(&b.header.header().targets)
                .detail(b.header.header().title.clone()),
            None => record,
        };
        let result = (|| {
            let author = draft.as_ref().is_some_and(|d| d.authors.contains(&by.name));
            if !author && !by.has(Role::Approver) {
                return Err(forbidden(
                    "cancelling needs the approver role or authorship of the broadcast",
                ));
            }
            if let Some(b) = self.relay.broadcasts.get(target) {
                if !self.within_reach(by, &b.header.header().targets) {
                    return Err(forbidden("the broadcast targets areas outside yours"));
                }
            }
            let cancel_id = issue::cancel(&self.relay, &self.ids, target)?;
            if let Some(d) = &draft {
                self.set_state(d.id, DraftState::Cancelled)?;
            }
            Ok(cancel_id)
        })();
        self.audited(record, result)
    }

    /// Opens a live broadcast of `fields` spoken by `by`, with `present`
    /// the approver at the microphone when the policy asks for one for
    /// its class (another person, holding the approver role for those
    /// areas; the caller checked their password). Signs and publishes the
    /// header; the audio follows through the returned broadcast. Audited,
    /// with who was present.
    pub fn open_live(
        &self,
        by: &Account,
        fields: &DraftFields,
        present: Option<&Account>,
    ) -> Result<crate::live::LiveBroadcast, WorkflowError> {
        let class = crate::api::drafts::class_name(fields.class.code());
        let record = Record::new(&by.name, "live.open", fields.title.clone())
            .areas(&fields.targets)
            .detail(match present {
                Some(a) => format!("class {class}, approver present: {}", a.name),
                None => format!("class {class}"),
            });
        let result = (|| {
            if !policy::may_draft(by, fields.class) {
                return Err(forbidden("going live needs the drafter or clerk role"));
            }
            self.check_reach(by, &fields.targets)?;
            if self.policy.live_needs_approver(fields.class) {
                let Some(a) = present else {
                    return Err(forbidden(
                        "a live broadcast of this class needs an approver present: their account name and password",
                    ));
                };
                if a.name == by.name {
                    return Err(forbidden(
                        "the approver present must be another person than the speaker",
                    ));
                }
                if !a.has(Role::Approver) {
                    return Err(forbidden(format!(
                        "{} does not hold the approver role",
                        a.name
                    )));
                }
                if !self.within_reach(a, &fields.targets) {
                    return Err(forbidden(format!(
                        "{} may not approve broadcasts to these areas",
                        a.name
                    )));
                }
            }
            issue::check_scope(&self.relay, &fields.targets)?;
            let (id, digest) = issue::open_live(
                &self.relay,
                &self.ids,
                fields,
                (self.now)(),
                self.live_delay_ms,
            )?;
            crate::live::LiveBroadcast::new(self.relay.clone(), id, digest)
                .map_err(|e| WorkflowError::Issue(IssueError::Invalid(e.to_string())))
        })();
        self.audited(record, result)
    }

    fn cancel_below(
        &self,
        by: &Account,
        target: BroadcastId,
        areas: Vec<AreaCode>,
    ) -> Result<BroadcastId, WorkflowError> {
        let record = Record::new(
            &by.name,
            "broadcast.cancel",
            format!("broadcast {target} (below)"),
        )
        .areas(&areas);
        let result = (|| {
            if !by.has(Role::Approver) {
                return Err(forbidden(
                    "cancelling a lower tier's broadcast needs the approver role",
                ));
            }
            self.check_reach(by, &areas)?;
            Ok(issue::cancel_below(
                &self.relay,
                &self.ids,
                target,
                areas.clone(),
            )?)
        })();
        self.audited(record, result)
    }

    /// The local-silence procedure (R20): stops broadcast `target` in
    /// `areas` (default: all the caller's), with a reason, by a signed
    /// `Silence` command its terminals obey whoever issued it. Maintainers
    /// and approvers may; an emergency from a tier above only an approver.
    /// The terminals' receipts (`silenced`) tell the tiers above at once.
    pub fn silence(
        &self,
        by: &Account,
        target: BroadcastId,
        areas: Option<Vec<AreaCode>>,
        reason: &str,
    ) -> Result<u64, WorkflowError> {
        let areas = areas.unwrap_or_else(|| self.reach(by));
        let record = Record::new(&by.name, "broadcast.silence", format!("broadcast {target}"))
            .areas(&areas)
            .detail(reason);
        let result = (|| {
            check_text(
                "reason",
                reason,
                Some(("local silence needs a reason", "本地静音须填写原因")),
            )?;
            let b = self
                .relay
                .broadcasts
                .get(target)
                .ok_or_else(|| WorkflowError::NotFound(format!("broadcast {target}")))?;
            let h = b.header.header();
            let from_above = b.header.signer().serial() != self.relay.identity.cert().serial();
            let emergency = h.class == protocol::BroadcastClass::Emergency;
            if emergency && from_above {
                if !by.has(Role::Approver) {
                    return Err(forbidden(
                        "an emergency from a tier above can be silenced only by an approver",
                    ));
                }
            } else if !by.has(Role::Maintainer) && !by.has(Role::Approver) {
                return Err(forbidden(
                    "local silence needs the maintainer or approver role",
                ));
            }
            self.check_reach(by, &areas)?;
            if !certs::area::any_overlap(&areas, &h.targets) {
                return Err(FieldError {
                    field: "areas",
                    message: "the broadcast does not target these areas".into(),
                    message_zh: "该广播未覆盖所选区域".into(),
                }
                .into());
            }
            Ok(issue::command(
                &self.relay,
                areas.clone(),
                vec![],
                protocol::Action::Silence(target),
            )?)
        })();
        self.audited(record, result)
    }

    /// A remote command (volume, mute, restart): maintainers.
    pub fn command(
        &self,
        by: &Account,
        areas: Vec<AreaCode>,
        terminals: Vec<u64>,
        action: protocol::Action,
    ) -> Result<u64, WorkflowError> {
        let record = Record::new(&by.name, "command", format!("{action:?}"))
            .areas(&areas)
            .detail(
                terminals
                    .iter()
                    .map(|t| format!("{t:016x}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        let result = (|| {
            if !by.has(Role::Maintainer) {
                return Err(forbidden("commands need the maintainer role"));
            }
            self.check_reach(by, &areas)?;
            Ok(issue::command(
                &self.relay,
                areas.clone(),
                terminals.clone(),
                action,
            )?)
        })();
        let record = match &result {
            Ok(id) => Record {
                object: format!("command {id:016x} {:?}", action),
                ..record
            },
            Err(_) => record,
        };
        self.audited(record, result)
    }

    /// Revokes certificates (a list signed here) or applies a list signed
    /// above: maintainers.
    pub fn revoke(
        &self,
        by: &Account,
        what: Revoke,
    ) -> Result<certs::RevocationList, WorkflowError> {
        let detail = match &what {
            Revoke::Serials(s) => s
                .iter()
                .map(|s| format!("{s:016x}"))
                .collect::<Vec<_>>()
                .join(" "),
            Revoke::List(l) => format!("list {} of {:016x}", l.number, l.signer_serial),
        };
        let record = Record::new(&by.name, "revocation", "certificates").detail(detail);
        let result = (|| {
            if !by.has(Role::Maintainer) {
                return Err(forbidden("revocation needs the maintainer role"));
            }
            match what {
                Revoke::Serials(serials) => crate::revoke::revoke(&self.relay, &serials)
                    .map_err(|e| IssueError::Invalid(e.to_string()).into()),
                Revoke::List(list) => {
                    self.relay
                        .apply_revocation(list.clone(), (self.now)())
                        .map_err(|e| {
                            WorkflowError::Issue(IssueError::Invalid(format!("list refused: {e}")))
                        })?;
                    Ok(list)
                }
            }
        })();
        self.audited(record, result)
    }

    /// Records an account action (login, account change) done elsewhere.
    pub fn record(&self, r: Record) -> Result<(), WorkflowError> {
        self.audit.record(r, (self.now)())?;
        Ok(())
    }
}

/// A request id: random, never 0.
fn new_request_id() -> u64 {
    use rand::RngCore;
    rand::rngs::OsRng.next_u64().max(1)
}

pub enum Revoke {
    Serials(Vec<u64>),
    List(certs::RevocationList),
}

/// A comment or reason: at most `MAX_COMMENT_BYTES`; `required` gives the
/// message (English, Chinese) for one left empty.
fn check_text(
    field: &'static str,
    comment: &str,
    required: Option<(&str, &str)>,
) -> Result<(), WorkflowError> {
    if let (Some((en, zh)), true) = (required, comment.trim().is_empty()) {
        return Err(FieldError {
            field,
            message: en.into(),
            message_zh: zh.into(),
        }
        .into());
    }
    if comment.len() > MAX_COMMENT_BYTES {
        return Err(FieldError {
            field,
            message: format!(
                "{} bytes; the limit is {MAX_COMMENT_BYTES} bytes ({} Chinese characters)",
                comment.len(),
                MAX_COMMENT_BYTES / 3
            ),
            message_zh: format!("意见过长：最多 {} 个汉字", MAX_COMMENT_BYTES / 3),
        }
        .into());
    }
    Ok(())
}
