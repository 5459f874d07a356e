//! Peacetime programming at the issuing platform (R9, R20): a reviewed
//! draft with a timetable is signed as a programme (its audio in chunks
//! bound by digest) and sent ahead; a change of timetable is a reviewed
//! new revision; a withdrawal is signed at once (no second person is
//! needed to stop audio); quiet hours are set for the areas this platform
//! owns. Every action is audited before it is acknowledged.

use certs::AreaCode;
use protocol::frame::FrameKind;
use protocol::programme::MAX_PROGRAMME_MS;
use protocol::quiet::MAX_QUIET_WINDOWS;
use protocol::{
    BroadcastClass, BroadcastId, Message, Programme, ProgrammeAudio, ProgrammeChunk, QuietHours,
    QuietMode, SignedProgramme, SignedQuietHours,
};

use crate::accounts::{Account, Role};
use crate::ahead::encoded;
use crate::audit::Record;
use crate::drafts::{Draft, DraftFields, DraftState, Plan};
use crate::issue::IssueError;
use crate::timetable::{format_time, parse_time};
use crate::workflow::{Workflow, WorkflowError};

/// Frames per chunk of programme audio (5 s of 20 ms frames).
pub const FRAMES_PER_CHUNK: u16 = 250;

fn field(f: &'static str, en: impl Into<String>, zh: impl Into<String>) -> WorkflowError {
    crate::drafts::field_error(f, en, zh).into()
}

/// A programme's audio and timetable fit together: at most 30 minutes,
/// and no play runs into the next.
pub fn check_programme_audio(fields: &DraftFields, audio_ms: i64) -> Result<(), WorkflowError> {
    let Some(t) = &fields.schedule else {
        return Ok(());
    };
    if audio_ms > MAX_PROGRAMME_MS {
        return Err(field(
            "audio",
            format!(
                "{} s of audio; a scheduled programme lasts at most {} minutes",
                audio_ms / 1000,
                MAX_PROGRAMME_MS / 60_000
            ),
            "定时节目最长30分钟",
        ));
    }
    t.to_schedule().check(audio_ms).map_err(|e| {
        field(
            "times",
            format!("{e}: the audio lasts {} s", audio_ms / 1000),
            "播出时间间隔短于节目时长",
        )
    })
}

/// Quiet hours as a person sets them.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
pub struct QuietForm {
    /// Area codes this platform owns (within its scope and the caller's
    /// areas).
    pub areas: Vec<String>,
    /// hold (non-emergency content waits for the end) or skip.
    pub mode: String,
    /// "22:00-06:00" windows, China time; none clears the quiet hours.
    pub windows: Vec<String>,
}

impl Workflow {
    /// Signs and sends the programme of approved draft `d` (its plan
    /// claimed): a new programme, or the next revision of the one it
    /// revises. The same plan gives the same bytes, so a crash between
    /// signing and recording signs the same revision again.
    pub(crate) fn sign_programme(
        &self,
        d: &Draft,
        plan: &Plan,
    ) -> Result<BroadcastId, WorkflowError> {
        let f = d.fields();
        let t = f
            .schedule
            .as_ref()
            .ok_or_else(|| WorkflowError::Store(format!("draft {} has no timetable", d.id)))?;
        crate::issue::check_scope(&self.relay, &f.targets)?;
        let id = BroadcastId::from_u128(plan.broadcast)
            .map_err(|e| IssueError::Invalid(e.to_string()))?;
        let frames = self.drafts.frames(d)?;
        let programme = Programme {
            id,
            revision: plan.revision.unwrap_or(1),
            issued_at_ms: plan.issued_at_ms,
            withdrawn: false,
            class: BroadcastClass::Daily,
            event_type: f.event_type,
            targets: f.targets.clone(),
            language: f.language.clone(),
            title: f.title.clone(),
            text: f.text.clone(),
            schedule: t.to_schedule(),
            audio: ProgrammeAudio::of(&frames, d.audio.sample_rate, 20, FRAMES_PER_CHUNK),
            volume_hint: f.volume,
        };
        let signed = SignedProgramme::sign(programme, &self.relay.identity)
            .map_err(|e| IssueError::Invalid(e.to_string()))?;
        self.publish_programme(&signed, Some(&frames))?;
        Ok(id)
    }

    /// Puts a programme signed here (and its audio) into this platform's
    /// own relay, durably, before anyone is told.
    fn publish_programme(
        &self,
        signed: &SignedProgramme,
        frames: Option<&[Vec<u8>]>,
    ) -> Result<(), WorkflowError> {
        let now = (self.now)();
        let refused = |e: crate::relay::IngestError| IssueError::Refused(e.to_string());
        self.relay
            .ingest_programme(encoded(&Message::Programme(signed.clone())), now)
            .map_err(refused)?;
        for (i, chunk) in frames
            .unwrap_or_default()
            .chunks(FRAMES_PER_CHUNK as usize)
            .enumerate()
        {
            let c = ProgrammeChunk {
                id: signed.id(),
                index: i as u16,
                frames: chunk.to_vec(),
            };
            let frame = protocol::frame::encode_frame(FrameKind::ProgrammeChunk, &c.encode());
            self.relay
                .ingest_chunk(bytes::Bytes::from(frame), now)
                .map_err(refused)?;
        }
        self.relay
            .flush()
            .map_err(|e| WorkflowError::Store(e.to_string()))?;
        Ok(())
    }

    /// The programme of this platform `id` held here, if the caller may
    /// act on it (its targets within their areas).
    fn own_programme(
        &self,
        by: &Account,
        id: BroadcastId,
    ) -> Result<std::sync::Arc<crate::ahead::HeldProgramme>, WorkflowError> {
        let held = self
            .relay
            .ahead
            .get(id)
            .ok_or_else(|| WorkflowError::NotFound(format!("programme {id}")))?;
        if held.signed.signer().body().resource_code != self.relay.resource_code() {
            return Err(WorkflowError::Forbidden(
                "a programme is changed or withdrawn by the platform that issued it".into(),
            ));
        }
        if certs::area::first_outside(&held.signed.programme().targets, &self.reach(by)).is_some() {
            return Err(WorkflowError::NotFound(format!("programme {id}")));
        }
        Ok(held)
    }

    /// Withdraws programme `id` everywhere: a signed revision with no
    /// audio, at once. Its authors and approvers may; no second approval
    /// is needed to stop audio.
    pub fn withdraw_programme(&self, by: &Account, id: BroadcastId) -> Result<u32, WorkflowError> {
        let record = Record::new(&by.name, "programme.withdraw", format!("programme {id}"));
        let result = (|| {
            let held = self.own_programme(by, id)?;
            let draft = self.drafts.by_broadcast(id)?;
            let author = draft.as_ref().is_some_and(|d| d.authors.contains(&by.name));
            if !author && !by.has(Role::Approver) {
                return Err(WorkflowError::Forbidden(
                    "withdrawing needs the approver role or authorship of the programme".into(),
                ));
            }
            let p = held.signed.programme();
            if p.withdrawn {
                return Err(WorkflowError::Issue(IssueError::Invalid(format!(
                    "programme {id} is already withdrawn"
                ))));
            }
            let withdrawn = Programme {
                revision: p.revision + 1,
                issued_at_ms: (self.now)(),
                withdrawn: true,
                audio: ProgrammeAudio::NONE,
                ..p.clone()
            };
            let signed = SignedProgramme::sign(withdrawn, &self.relay.identity)
                .map_err(|e| IssueError::Invalid(e.to_string()))?;
            self.publish_programme(&signed, None)?;
            if let Some(d) = draft {
                self.drafts
                    .update(d.id, |d| {
                        d.state = DraftState::Cancelled;
                        Ok::<(), std::convert::Infallible>(())
                    })?
                    .ok();
            }
            Ok(signed.programme().revision)
        })();
        let record = match self.relay.ahead.get(id) {
            Some(h) => record
                .areas(&h.signed.programme().targets)
                .detail(h.signed.programme().title.clone()),
            None => record,
        };
        self.audited(record, result)
    }

    /// A new draft revising programme `id`: its audio and fields, with
    /// `timetable` (and title, text if given). It goes through review like
    /// any draft of its class; publishing it signs the next revision.
    pub fn revise_programme(
        &self,
        by: &Account,
        id: BroadcastId,
        timetable: crate::timetable::Timetable,
        title: Option<String>,
    ) -> Result<Draft, WorkflowError> {
        let record = Record::new(&by.name, "programme.revise", format!("programme {id}"));
        let result = (|| {
            self.own_programme(by, id)?;
            if !crate::policy::may_draft(by, BroadcastClass::Daily) {
                return Err(WorkflowError::Forbidden(
                    "revising needs the drafter or clerk role".into(),
                ));
            }
            let source = self.drafts.by_broadcast(id)?.ok_or_else(|| {
                WorkflowError::NotFound(format!("the draft programme {id} was published from"))
            })?;
            let frames = self.drafts.frames(&source)?;
            let mut fields = source.fields();
            fields.schedule = Some(timetable);
            if let Some(t) = title {
                fields.title = t;
            }
            check_programme_audio(&fields, source.audio.duration_ms)?;
            let mut d = Draft::new(
                self.drafts.next_id()?,
                &by.name,
                (self.now)(),
                &fields,
                source.audio.clone(),
                self.policy.approvals_needed(BroadcastClass::Daily),
                vec![],
            );
            d.revises = Some(id.as_u128());
            self.drafts.insert(&d, &frames)?;
            Ok(d)
        })();
        let record = match &result {
            Ok(d) => record
                .areas(&d.target_codes())
                .detail(format!("draft {}", d.id)),
            Err(_) => record,
        };
        self.audited(record, result)
    }

    /// Sets this platform's quiet hours for `form.areas` (R20): signed,
    /// kept, and sent down to every terminal there, which enforces them
    /// whoever sends it content. Needs the approver role.
    pub fn set_quiet_hours(&self, by: &Account, form: &QuietForm) -> Result<u64, WorkflowError> {
        let record = Record::new(&by.name, "quiet_hours.set", "quiet hours")
            .areas(&form.areas)
            .detail(format!("{} {}", form.mode, form.windows.join(", ")));
        let result = (|| {
            if !by.has(Role::Approver) {
                return Err(WorkflowError::Forbidden(
                    "setting quiet hours needs the approver role".into(),
                ));
            }
            let policy = self.quiet_policy(by, form)?;
            let number = policy.number;
            let signed = SignedQuietHours::sign(policy, &self.relay.identity)
                .map_err(|e| IssueError::Invalid(e.to_string()))?;
            self.relay
                .ingest_quiet(encoded(&Message::QuietHours(signed)), (self.now)())
                .map_err(|e| IssueError::Refused(e.to_string()))?;
            self.relay
                .flush()
                .map_err(|e| WorkflowError::Store(e.to_string()))?;
            Ok(number)
        })();
        self.audited(record, result)
    }

    fn quiet_policy(&self, by: &Account, form: &QuietForm) -> Result<QuietHours, WorkflowError> {
        let mut targets = Vec::new();
        for a in &form.areas {
            let code: AreaCode = a.trim().parse().map_err(|_| {
                field(
                    "areas",
                    format!("{a:?} is not a 12-digit area code"),
                    "区域编码格式错误",
                )
            })?;
            if !targets.contains(&code) {
                targets.push(code);
            }
        }
        if targets.is_empty() || targets.len() > protocol::quiet::MAX_QUIET_TARGETS {
            return Err(field("areas", "1 to 64 areas", "请选择 1 到 64 个区域"));
        }
        crate::drafts::check_targets(&targets, &self.reach(by))?;
        let mode = match form.mode.as_str() {
            "hold" => QuietMode::Hold,
            "skip" => QuietMode::Skip,
            other => {
                return Err(field(
                    "mode",
                    format!("{other:?} is not hold or skip"),
                    "方式只能是暂缓（hold）或跳过（skip）",
                ))
            }
        };
        if form.windows.len() > MAX_QUIET_WINDOWS {
            return Err(field(
                "windows",
                format!("at most {MAX_QUIET_WINDOWS} windows"),
                format!("最多 {MAX_QUIET_WINDOWS} 个时段"),
            ));
        }
        let mut windows = Vec::new();
        for w in &form.windows {
            // Whole minutes: quiet hours are set to the minute.
            let minute = |t: &str| {
                parse_time(t)
                    .filter(|s| s % 60 == 0)
                    .map(|s| (s / 60) as u16)
            };
            let parsed = w
                .split_once('-')
                .and_then(|(s, e)| Some((minute(s)?, minute(e)?)))
                .filter(|(s, e)| s != e);
            let Some(window) = parsed else {
                return Err(field(
                    "windows",
                    format!("{w:?} is not a window HH:MM-HH:MM"),
                    "时段格式应为 时:分-时:分（如 22:00-06:00）",
                ));
            };
            windows.push(window);
        }
        let own = self.relay.resource_code().to_string();
        let number = self
            .relay
            .ahead
            .quiet_of(&own)
            .map_or(0, |q| q.signed.policy().number)
            // A number from the clock too: a platform whose store was lost
            // still goes past what its terminals hold.
            .max(((self.now)() / 1000) as u64)
            + 1;
        Ok(QuietHours {
            number,
            issued_at_ms: (self.now)(),
            targets,
            utc_offset_minutes: protocol::schedule::CHINA_OFFSET_MINUTES,
            mode,
            windows,
        })
    }
}

/// A quiet window as people write it.
pub fn window_text((s, e): (u16, u16)) -> String {
    format!(
        "{}-{}",
        format_time(s as u32 * 60),
        format_time(e as u32 * 60)
    )
}
