//! Scheduled programmes and quiet hours over HTTP (R9, R20). A programme
//! is drafted like any notice (`POST /api/drafts` with a `schedule`), and
//! reviewed by the same policy; here it is listed, withdrawn, revised, and
//! its plays (what each village's terminals did) read; quiet hours are
//! read and set.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use certs::AreaCode;
use protocol::schedule::{local_day, CHINA_OFFSET_MINUTES};
use protocol::BroadcastId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::drafts::DraftView;
use super::error::ApiError;
use super::{blocking, ApiJson, ApiState};
use crate::ahead::HeldProgramme;
use crate::now_ms;
use crate::plays::PlaySummary;
use crate::scheduling::QuietForm;
use crate::timetable::{format_date, parse_date, Timetable};

/// A programme as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct ProgrammeView {
    pub id: String,
    pub revision: u32,
    pub title: String,
    pub text: String,
    pub targets: Vec<String>,
    /// The issuing platform's resource code; `own` when it is this one.
    pub issuer: String,
    pub own: bool,
    pub withdrawn: bool,
    pub timetable: Timetable,
    /// The timetable in words, Chinese and English.
    pub schedule_zh: String,
    pub schedule_en: String,
    pub duration_ms: i64,
    /// The next play's start (unix ms), if any is left.
    pub next_play_ms: Option<i64>,
    /// Its audio is all here.
    pub complete_here: bool,
    /// Terminals that reported holding its audio.
    pub cached_terminals: usize,
    /// The draft it was published from, on this platform.
    pub draft: Option<u64>,
}

pub fn view(s: &ApiState, p: &HeldProgramme) -> ProgrammeView {
    let relay = &s.workflow.relay;
    let prog = p.signed.programme();
    let t = Timetable::of(&prog.schedule);
    let now = now_ms();
    let dur = prog.audio.duration_ms();
    let issuer = p.signed.signer().body().resource_code.to_string();
    let own = issuer == relay.identity.cert().body().resource_code.to_string();
    let next = (!prog.withdrawn)
        .then(|| prog.schedule.next_start(now))
        .flatten();
    let cached = relay.book().plays.cached(p.id(), prog.revision).count();
    let draft = own
        .then(|| s.workflow.drafts.by_broadcast(p.id()).ok().flatten())
        .flatten()
        .map(|d| d.id);
    ProgrammeView {
        id: p.id().to_string(),
        revision: prog.revision,
        title: prog.title.clone(),
        text: prog.text.clone(),
        targets: prog.targets.iter().map(|a| a.to_string()).collect(),
        issuer,
        own,
        withdrawn: prog.withdrawn,
        schedule_zh: t.describe_zh(),
        schedule_en: t.describe_en(),
        timetable: t,
        duration_ms: dur,
        next_play_ms: next,
        complete_here: p.complete(),
        cached_terminals: cached,
        draft,
    }
}

fn programme_id(s: &str) -> Result<BroadcastId, ApiError> {
    s.parse().map_err(|_| {
        ApiError::invalid(
            "id",
            format!("{s:?} is not a 35-digit programme id"),
            "节目编号应为35位数字",
        )
    })
}

/// The caller sees the programmes whose targets meet their areas.
fn visible(s: &ApiState, c: &Caller, p: &HeldProgramme) -> bool {
    certs::area::any_overlap(&p.signed.programme().targets, &s.workflow.reach(&c.account))
}

/// Programmes held here (issued here or sent from above) for the
/// caller's areas, newest first.
#[utoipa::path(get, path = "/api/programmes", responses((status = 200, body = [ProgrammeView])))]
pub async fn list(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
) -> Json<Vec<ProgrammeView>> {
    let programmes = s.workflow.relay.ahead.programmes();
    Json(
        programmes
            .iter()
            .filter(|p| visible(&s, &c, p))
            .map(|p| view(&s, p))
            .collect(),
    )
}

/// Withdraws a programme of this platform everywhere, at once (a signed
/// revision with no audio): its authors and approvers.
#[utoipa::path(post, path = "/api/programmes/{id}/withdraw", params(("id" = String, Path, description = "35-digit programme id")),
    responses((status = 200, body = Object), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn withdraw(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = programme_id(&id)?;
    let wf = s.workflow.clone();
    let revision = blocking(move || wf.withdraw_programme(&c.account, id)).await?;
    Ok(Json(
        serde_json::json!({ "withdrawn": id.to_string(), "revision": revision }),
    ))
}

/// A new timetable for a programme.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ReviseRequest {
    /// once, daily, weekdays or weekly.
    pub schedule: String,
    /// "07:00,18:30" (China time).
    pub times: String,
    /// Weekly: "1,3,5" (Monday = 1).
    #[serde(default)]
    pub weekdays: String,
    /// YYYY-MM-DD (default today).
    #[serde(default)]
    pub first_date: String,
    /// YYYY-MM-DD (once: the first date).
    #[serde(default)]
    pub last_date: String,
    /// A new title, if it changes.
    #[serde(default)]
    pub title: Option<String>,
}

/// Revises a programme's timetable: a new draft with its audio, reviewed
/// like any daily draft; publishing it signs the next revision.
#[utoipa::path(post, path = "/api/programmes/{id}/revise", params(("id" = String, Path, description = "35-digit programme id")),
    request_body = ReviseRequest,
    responses((status = 200, body = DraftView), (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn revise(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ReviseRequest>,
) -> Result<Json<DraftView>, ApiError> {
    let id = programme_id(&id)?;
    let fields: BTreeMap<&str, String> = [
        ("schedule", req.schedule.clone()),
        ("times", req.times.clone()),
        ("weekdays", req.weekdays.clone()),
        ("first_date", req.first_date.clone()),
        ("last_date", req.last_date.clone()),
    ]
    .into_iter()
    .collect();
    let t = Timetable::parse(&|k| fields.get(k).cloned(), now_ms())?.ok_or_else(|| {
        ApiError::invalid("schedule", "a timetable is required", "请填写播出时间表")
    })?;
    if let Some(title) = &req.title {
        if title.trim().is_empty() || title.len() > protocol::header::MAX_TITLE_BYTES {
            return Err(ApiError::invalid(
                "title",
                "1 to 256 bytes (85 Chinese characters)",
                "标题不能为空，最多85个汉字",
            ));
        }
    }
    let wf = s.workflow.clone();
    let d = blocking(move || {
        let d = wf.revise_programme(&c.account, id, t, req.title)?;
        // Submitted at once: a revision exists to be reviewed.
        wf.submit(&c.account, d.id)
    })
    .await?;
    Ok(Json(d.into()))
}

#[derive(Deserialize, ToSchema, utoipa::IntoParams)]
pub struct DateQuery {
    /// YYYY-MM-DD (China); default today.
    pub date: Option<String>,
    /// A village or community's area code: only its terminals count.
    pub area: Option<String>,
}

/// One play of the day: a programme at one start time, with what the
/// terminals reported.
#[derive(Serialize, ToSchema)]
pub struct PlayRow {
    pub at_ms: i64,
    /// "HH:MM" China time.
    pub time: String,
    pub programme: String,
    pub title: String,
    pub duration_ms: i64,
    pub withdrawn: bool,
    /// Terminals of the area now known.
    pub terminals: usize,
    pub summary: PlaySummary,
}

/// A day's plan for one area.
#[derive(Serialize, ToSchema)]
pub struct AreaPlan {
    pub area: String,
    pub name: String,
    /// Terminals of the area now known.
    pub terminals: usize,
    pub plays: Vec<PlayRow>,
}

#[derive(Serialize, ToSchema)]
pub struct DayPlan {
    pub date: String,
    pub areas: Vec<AreaPlan>,
}

pub fn day_of(date: Option<&str>) -> Result<i64, ApiError> {
    match date {
        None | Some("") => Ok(local_day(now_ms(), CHINA_OFFSET_MINUTES)),
        Some(d) => parse_date(d).ok_or_else(|| {
            ApiError::invalid(
                "date",
                format!("{d:?} is not a date YYYY-MM-DD"),
                "日期格式应为 年-月-日",
            )
        }),
    }
}

/// A day's plan per village: every play of every programme for it that
/// day (its own and from above), and what that village's terminals did.
#[utoipa::path(get, path = "/api/plan", params(DateQuery), responses((status = 200, body = DayPlan), (status = 400, body = super::error::ErrorBody)))]
pub async fn plan(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Query(q): Query<DateQuery>,
) -> Result<Json<DayPlan>, ApiError> {
    let day = day_of(q.date.as_deref())?;
    let only: Option<AreaCode> = match q.area.as_deref() {
        None | Some("") => None,
        Some(a) => Some(a.parse().map_err(|_| {
            ApiError::invalid(
                "area",
                format!("{a:?} is not a 12-digit area code"),
                "区域编码格式错误",
            )
        })?),
    };
    let reach = s.workflow.reach(&c.account);
    Ok(Json(day_plan(&s, &reach, day, only)))
}

/// The plan of `day` for each village in `reach` (or only `only`): the one
/// implementation the API and the console show.
pub fn day_plan(s: &ApiState, reach: &[AreaCode], day: i64, only: Option<AreaCode>) -> DayPlan {
    let relay = &s.workflow.relay;
    let terminals = relay.members.terminals();
    let mut areas: Vec<AreaCode> = terminals.iter().map(|(_, a)| *a).collect();
    areas.extend(
        s.places
            .named()
            .filter(|a| a.level() == certs::area::AreaLevel::Village),
    );
    areas.sort();
    areas.dedup();
    areas.retain(|a| reach.iter().any(|r| r.covers(*a)) && only.is_none_or(|o| o == *a));
    let from = protocol::schedule::instant(day, 0, CHINA_OFFSET_MINUTES);
    let to = from + 86_400_000;
    let programmes = relay.ahead.programmes();
    let book = relay.book();
    let mut out = Vec::new();
    for area in areas {
        let here: Vec<u64> = terminals
            .iter()
            .filter(|(_, a)| *a == area)
            .map(|(t, _)| *t)
            .collect();
        let mut plays = Vec::new();
        for p in &programmes {
            let prog = p.signed.programme();
            if !prog.targets.iter().any(|t| t.covers(area)) {
                continue;
            }
            for at in prog
                .schedule
                .starts_between(from, to, protocol::schedule::MAX_TIMES_PER_DAY)
            {
                let second = ((at - from) / 1000) as u32;
                plays.push(PlayRow {
                    at_ms: at,
                    time: crate::timetable::format_time(second),
                    programme: p.id().to_string(),
                    title: prog.title.clone(),
                    duration_ms: prog.audio.duration_ms(),
                    withdrawn: prog.withdrawn,
                    terminals: here.len(),
                    summary: book.plays.summary(p.id(), at, |t| here.contains(&t)),
                });
            }
        }
        plays.sort_by_key(|r| r.at_ms);
        out.push(AreaPlan {
            area: area.to_string(),
            name: s.places.name(area),
            terminals: here.len(),
            plays,
        });
    }
    DayPlan {
        date: format_date(day),
        areas: out,
    }
}

/// Quiet hours as the API shows them.
#[derive(Serialize, ToSchema)]
pub struct QuietView {
    /// The platform that set them (resource code); `own` when this one.
    pub signer: String,
    pub signer_name: String,
    pub own: bool,
    pub number: u64,
    pub areas: Vec<String>,
    /// hold or skip.
    pub mode: String,
    /// "22:00-06:00" windows, China time.
    pub windows: Vec<String>,
    pub issued_at_ms: i64,
}

/// Quiet hours in force here: this platform's and those of the tiers above
/// over its areas. A terminal keeps every one covering it.
#[utoipa::path(get, path = "/api/quiet-hours", responses((status = 200, body = [QuietView])))]
pub async fn quiet(State(s): State<ApiState>) -> Json<Vec<QuietView>> {
    Json(quiet_views(&s))
}

/// Every platform's quiet hours held here.
pub fn quiet_views(s: &ApiState) -> Vec<QuietView> {
    let own = s
        .workflow
        .relay
        .identity
        .cert()
        .body()
        .resource_code
        .to_string();
    s.workflow
        .relay
        .ahead
        .quiet()
        .into_iter()
        .map(|q| {
            let p = q.signed.policy();
            let signer = q.signed.signer().body().resource_code.to_string();
            QuietView {
                own: signer == own,
                signer_name: q.signed.signer().body().name.clone(),
                signer,
                number: p.number,
                areas: p.targets.iter().map(|a| a.to_string()).collect(),
                mode: match p.mode {
                    protocol::QuietMode::Hold => "hold".into(),
                    protocol::QuietMode::Skip => "skip".into(),
                },
                windows: p
                    .windows
                    .iter()
                    .map(|w| crate::scheduling::window_text(*w))
                    .collect(),
                issued_at_ms: p.issued_at_ms,
            }
        })
        .collect()
}

/// Sets this platform's quiet hours (replacing its earlier ones): the
/// approver role, areas within the caller's. Audited.
#[utoipa::path(put, path = "/api/quiet-hours", request_body = QuietForm,
    responses((status = 200, body = Object), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn set_quiet(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    ApiJson(form): ApiJson<QuietForm>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let wf = s.workflow.clone();
    let number = blocking(move || wf.set_quiet_hours(&c.account, &form)).await?;
    Ok(Json(serde_json::json!({ "number": number })))
}
