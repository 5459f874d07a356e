//! Drafts over HTTP: create and edit (multipart, the audio streamed to a
//! bounded temporary file and ingested once every other field has been
//! checked), preview the normalised audio, submit, approve, reject,
//! withdraw. `POST /api/broadcasts` is create-and-submit in one call.

use std::collections::HashMap;

use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::ApiError;
use super::{blocking, optional_json, ApiState};
use crate::accounts::Role;
use crate::drafts::{AudioInfo, Decision, Draft, DraftFields, DraftState};
use crate::upload::{Upload, UploadError};
use crate::workflow::AudioUpload;

/// Text fields of a form, and how long one may be.
const MAX_FIELDS: usize = 32;
const MAX_FIELD_BYTES: usize = 16 * 1024;

/// The draft form (multipart/form-data). Every field but `audio` is text.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DraftForm {
    /// Target area codes, comma-separated (12 digits each).
    areas: String,
    /// emergency, daily or drill.
    class: String,
    /// 1 (I, most severe) to 4 (IV); a daily notice may leave it out.
    severity: Option<String>,
    /// GB/T 35965 event code, 5 characters (default 10000).
    event_type: Option<String>,
    /// Up to 256 bytes (85 Chinese characters).
    title: String,
    /// Up to 8192 bytes.
    text: Option<String>,
    language: Option<String>,
    /// 1 to 10080 (default 60); must cover the audio.
    valid_minutes: Option<String>,
    /// 0 to 100.
    volume: Option<String>,
    /// Publish at this unix ms instead of at approval (at most 7 days ahead).
    start_at_ms: Option<String>,
    /// true: submit for review at once (POST /api/drafts only).
    submit: Option<String>,
    /// A scheduled programme (daily class only): once, daily, weekdays or
    /// weekly. Without it the draft is broadcast once.
    schedule: Option<String>,
    /// Start times, "07:00,18:30" China time.
    times: Option<String>,
    /// Weekly: days of the week, "1,3,5" (Monday = 1).
    weekdays: Option<String>,
    /// First day it plays, YYYY-MM-DD (default today).
    first_date: Option<String>,
    /// Last day it plays, YYYY-MM-DD (once: the first date).
    last_date: Option<String>,
    /// The audio file (WAV, MP3, FLAC, Ogg...).
    #[schema(value_type = String, format = Binary)]
    audio: Option<Vec<u8>>,
    /// true: no audio file; the platform's voice speaks `text` (where text
    /// to speech is installed).
    speak: Option<String>,
}

/// A draft as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct DraftView {
    pub id: u64,
    pub state: DraftState,
    pub targets: Vec<String>,
    /// emergency, daily, drill
    pub class: String,
    /// Shown everywhere a drill appears, so it is never taken for a real alert.
    pub drill: bool,
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
    pub authors: Vec<String>,
    pub audio: AudioInfo,
    pub approvals: Vec<Decision>,
    pub approvals_needed: u8,
    pub rejection: Option<Decision>,
    /// The broadcast's id once it is signed (here, or by the tier above
    /// for a request sent up).
    pub broadcast: Option<String>,
    pub warnings: Vec<String>,
    /// A request from a lower platform: where it came from.
    pub origin: Option<crate::drafts::Origin>,
    /// Sent to the tier above for approval: the request and its answer.
    pub request: Option<crate::drafts::SentRequest>,
    /// A scheduled programme's timetable; `broadcast` is then the
    /// programme's id once published.
    pub schedule: Option<crate::timetable::Timetable>,
    /// The timetable in words (Chinese).
    pub schedule_zh: Option<String>,
    /// A revision of this programme.
    pub revises: Option<String>,
    /// An alert from above: its format, source, original id and how it
    /// was authenticated.
    pub alert: Option<crate::drafts::AlertOrigin>,
}

/// A class's name by its code: emergency, daily, drill.
pub fn class_name(c: u8) -> &'static str {
    match c {
        1 => "emergency",
        2 => "daily",
        _ => "drill",
    }
}

impl From<Draft> for DraftView {
    fn from(d: Draft) -> Self {
        DraftView {
            id: d.id,
            state: d.state,
            targets: d.target_codes(),
            class: class_name(d.class).into(),
            drill: d.is_drill(),
            severity: d.severity,
            event_type: d.event_type.clone(),
            broadcast: d
                .broadcast_id()
                .map(|b| b.to_string())
                .or_else(|| d.request.as_ref().and_then(|r| r.broadcast.clone())),
            title: d.title,
            text: d.text,
            language: d.language,
            valid_minutes: d.valid_minutes,
            volume: d.volume,
            start_at_ms: d.start_at_ms,
            created_by: d.created_by,
            created_ms: d.created_ms,
            updated_ms: d.updated_ms,
            authors: d.authors.into_iter().collect(),
            audio: d.audio,
            approvals: d.approvals,
            approvals_needed: d.approvals_needed,
            rejection: d.rejection,
            warnings: d.warnings,
            origin: d.origin,
            request: d.request,
            schedule_zh: d.schedule.as_ref().map(|t| t.describe_zh()),
            schedule: d.schedule,
            revises: d
                .revises
                .and_then(|r| protocol::BroadcastId::from_u128(r).ok())
                .map(|r| r.to_string()),
            alert: d.alert,
        }
    }
}

/// A parsed form: its text fields and its audio on disk.
struct Form {
    fields: HashMap<String, String>,
    audio: Option<(Upload, String)>,
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    let text = e.body_text();
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            text,
            "请求体过大",
        );
    }
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid",
        format!("malformed multipart form: {text}"),
        "表单格式错误",
    )
}

/// Reads the form: text fields bounded in number and size, the audio
/// streamed to a private temporary file bounded by `limit` bytes.
async fn read_form(mut form: Multipart, limit: u64) -> Result<Form, ApiError> {
    let mut fields = HashMap::new();
    let mut audio = None;
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "audio" {
            let file_name: String = field
                .file_name()
                .unwrap_or("audio")
                .chars()
                .filter(|c| !c.is_control())
                .take(128)
                .collect();
            let mut upload = Upload::create(&file_name)
                .map_err(|e| ApiError::internal(format!("spooling the upload: {e}")))?;
            while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                upload.append(&chunk, limit).await.map_err(|e| match e {
                    UploadError::TooLarge { limit_mb } => ApiError::too_large("audio", limit_mb),
                    e => ApiError::internal(e.to_string()),
                })?;
            }
            upload
                .finish()
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
            audio = Some((upload, file_name));
            continue;
        }
        if fields.len() >= MAX_FIELDS {
            return Err(ApiError::invalid(
                "form",
                format!("more than {MAX_FIELDS} fields"),
                "表单字段过多",
            ));
        }
        let mut value = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            if value.len() + chunk.len() > MAX_FIELD_BYTES {
                return Err(ApiError::invalid(
                    "form",
                    format!("field {name:?} is longer than {MAX_FIELD_BYTES} bytes"),
                    "字段过长",
                ));
            }
            value.extend_from_slice(&chunk);
        }
        let value = String::from_utf8(value).map_err(|_| {
            ApiError::invalid(
                "form",
                format!("field {name:?} is not UTF-8 text"),
                "字段不是 UTF-8 文本",
            )
        })?;
        fields.insert(name, value);
    }
    Ok(Form { fields, audio })
}

fn check_fields(s: &ApiState, c: &Caller, form: &Form) -> Result<DraftFields, ApiError> {
    let reach = s.workflow.reach(&c.account);
    let get = |k: &str| form.fields.get(k).cloned();
    Ok(DraftFields::parse(&get, &reach, (s.workflow.now)())?)
}

fn draft_roles(c: &Caller) -> Result<(), ApiError> {
    c.require(&[Role::Drafter, Role::Clerk])
}

/// Creates a draft; with `submit=true`, submits it too.
#[utoipa::path(post, path = "/api/drafts",
    request_body(content = DraftForm, content_type = "multipart/form-data"),
    responses((status = 201, body = DraftView), (status = 400, body = super::error::ErrorBody), (status = 413, body = super::error::ErrorBody)))]
pub async fn create(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    form: Multipart,
) -> Result<(StatusCode, Json<DraftView>), ApiError> {
    draft_roles(&c)?;
    let form = read_form(form, s.max_upload_bytes).await?;
    let d = create_draft(&s, &c, form, None).await?;
    Ok((StatusCode::CREATED, Json(d.into())))
}

async fn create_draft(
    s: &ApiState,
    c: &Caller,
    form: Form,
    submit: Option<bool>,
) -> Result<Draft, ApiError> {
    let fields = check_fields(s, c, &form)?;
    let submit = submit.unwrap_or_else(|| {
        form.fields
            .get("submit")
            .is_some_and(|v| v == "true" || v == "1")
    });
    let speak = form
        .fields
        .get("speak")
        .is_some_and(|v| v == "true" || v == "1");
    if speak {
        if form.audio.as_ref().is_some_and(|(u, _)| !u.is_empty()) {
            return Err(ApiError::invalid(
                "speak",
                "either an audio file or speak=true, not both",
                "请只选择上传音频或语音合成之一",
            ));
        }
        let wf = s.workflow.clone();
        let account = c.account.clone();
        return blocking(move || {
            let spoken = wf.speak(&fields.text)?;
            let audio = AudioUpload {
                path: spoken.file.path(),
                file_name: &spoken.file_name,
                spoken: Some(&spoken.pinyin),
            };
            let d = wf.create(&account, fields, audio)?;
            if submit {
                wf.submit(&account, d.id)
            } else {
                Ok(d)
            }
        })
        .await;
    }
    let Some((upload, file_name)) = form.audio else {
        return Err(ApiError::invalid(
            "audio",
            "an audio file is required (field 'audio'), or speak=true to have the text spoken",
            "请上传音频文件，或选择语音合成",
        ));
    };
    if upload.is_empty() {
        return Err(ApiError::invalid(
            "audio",
            format!("{file_name:?} is empty"),
            "音频文件为空",
        ));
    }
    let wf = s.workflow.clone();
    let account = c.account.clone();
    let d = blocking(move || {
        let audio = AudioUpload {
            path: upload.path(),
            file_name: &file_name,
            spoken: None,
        };
        let d = wf.create(&account, fields, audio)?;
        if submit {
            wf.submit(&account, d.id)
        } else {
            Ok(d)
        }
    })
    .await?;
    Ok(d)
}

/// Creates a draft and submits it in one call (for scripts). 201 with the
/// broadcast `id` when the policy lets it be published now; 202 with the
/// `draft` when it waits for approval.
#[utoipa::path(post, path = "/api/broadcasts",
    request_body(content = DraftForm, content_type = "multipart/form-data"),
    responses((status = 201, body = IssueAnswer), (status = 202, body = IssueAnswer), (status = 400, body = super::error::ErrorBody)))]
pub async fn issue(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    form: Multipart,
) -> Result<Response, ApiError> {
    draft_roles(&c)?;
    let form = read_form(form, s.max_upload_bytes).await?;
    let d = create_draft(&s, &c, form, Some(true)).await?;
    let published = d.state == DraftState::Published;
    let answer = IssueAnswer {
        id: d.broadcast_id().map(|b| b.to_string()),
        accepted_ms: (s.workflow.now)(),
        warnings: d.warnings.clone(),
        draft: d.into(),
    };
    let status = if published {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(answer)).into_response())
}

#[derive(Serialize, ToSchema)]
pub struct IssueAnswer {
    /// The broadcast id, once published.
    pub id: Option<String>,
    pub accepted_ms: i64,
    pub warnings: Vec<String>,
    pub draft: DraftView,
}

#[derive(Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DraftQuery {
    /// Only drafts in this state.
    pub state: Option<DraftState>,
    /// At most this many (default 100, at most 1000), newest first.
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/drafts", params(DraftQuery), responses((status = 200, body = [DraftView])))]
pub async fn list(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Query(q): Query<DraftQuery>,
) -> Result<Json<Vec<DraftView>>, ApiError> {
    let limit = q.limit.unwrap_or(100).min(1000);
    let wf = s.workflow.clone();
    let drafts = blocking(move || wf.list(&c.account, q.state, limit)).await?;
    Ok(Json(drafts.into_iter().map(DraftView::from).collect()))
}

#[utoipa::path(get, path = "/api/drafts/{id}", params(("id" = u64, Path)), responses((status = 200, body = DraftView), (status = 404, body = super::error::ErrorBody)))]
pub async fn get(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<u64>,
) -> Result<Json<DraftView>, ApiError> {
    Ok(Json(s.workflow.get(&c.account, id)?.into()))
}

/// The draft's audio as it will be signed, decoded to WAV.
#[utoipa::path(get, path = "/api/drafts/{id}/audio", params(("id" = u64, Path)),
    responses((status = 200, content_type = "audio/wav", body = Vec<u8>), (status = 404, body = super::error::ErrorBody)))]
pub async fn audio(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<u64>,
) -> Result<Response, ApiError> {
    let wf = s.workflow.clone();
    let wav = blocking(move || {
        let d = wf.get(&c.account, id)?;
        let frames = wf.drafts.frames(&d)?;
        crate::drafts::preview_wav(&frames, d.audio.sample_rate)
            .map_err(|e| crate::workflow::WorkflowError::Store(e.to_string()))
    })
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "audio/wav"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        wav,
    )
        .into_response())
}

/// Edits a draft (any field; the audio only if a new file is sent).
#[utoipa::path(put, path = "/api/drafts/{id}", params(("id" = u64, Path)),
    request_body(content = DraftForm, content_type = "multipart/form-data"),
    responses((status = 200, body = DraftView), (status = 409, body = super::error::ErrorBody)))]
pub async fn edit(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<u64>,
    form: Multipart,
) -> Result<Json<DraftView>, ApiError> {
    draft_roles(&c)?;
    let form = read_form(form, s.max_upload_bytes).await?;
    let fields = check_fields(&s, &c, &form)?;
    let speak = form
        .fields
        .get("speak")
        .is_some_and(|v| v == "true" || v == "1");
    let wf = s.workflow.clone();
    let d = blocking(move || {
        // speak=true: the (changed) text is spoken again.
        let spoken = if speak {
            Some(wf.speak(&fields.text)?)
        } else {
            None
        };
        let audio = match &spoken {
            Some(sp) => Some(AudioUpload {
                path: sp.file.path(),
                file_name: &sp.file_name,
                spoken: Some(&sp.pinyin),
            }),
            None => form
                .audio
                .as_ref()
                .filter(|(u, _)| !u.is_empty())
                .map(|(u, n)| AudioUpload {
                    path: u.path(),
                    file_name: n,
                    spoken: None,
                }),
        };
        wf.edit(&c.account, id, Some(fields), audio)
    })
    .await?;
    Ok(Json(d.into()))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// Required to reject; at most 1024 bytes.
    #[serde(default)]
    pub comment: String,
}

#[utoipa::path(post, path = "/api/drafts/{id}/submit", params(("id" = u64, Path)), responses((status = 200, body = DraftView)))]
pub async fn submit(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<u64>,
) -> Result<Json<DraftView>, ApiError> {
    let wf = s.workflow.clone();
    Ok(Json(
        blocking(move || wf.submit(&c.account, id)).await?.into(),
    ))
}

/// Approves; the last approval needed signs and publishes it at once (or
/// at its start time).
#[utoipa::path(post, path = "/api/drafts/{id}/approve", params(("id" = u64, Path)), request_body = DecisionRequest,
    responses((status = 200, body = DraftView), (status = 403, body = super::error::ErrorBody)))]
pub async fn approve(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<u64>,
    body: axum::body::Bytes,
) -> Result<Json<DraftView>, ApiError> {
    let comment = optional_json::<DecisionRequest>(&body)?.comment;
    let wf = s.workflow.clone();
    Ok(Json(
        blocking(move || wf.approve(&c.account, id, &comment))
            .await?
            .into(),
    ))
}

#[utoipa::path(post, path = "/api/drafts/{id}/reject", params(("id" = u64, Path)), request_body = DecisionRequest,
    responses((status = 200, body = DraftView)))]
pub async fn reject(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<u64>,
    body: axum::body::Bytes,
) -> Result<Json<DraftView>, ApiError> {
    let comment = optional_json::<DecisionRequest>(&body)?.comment;
    let wf = s.workflow.clone();
    Ok(Json(
        blocking(move || wf.reject(&c.account, id, &comment))
            .await?
            .into(),
    ))
}

#[utoipa::path(post, path = "/api/drafts/{id}/withdraw", params(("id" = u64, Path)), responses((status = 200, body = DraftView)))]
pub async fn withdraw(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<u64>,
) -> Result<Json<DraftView>, ApiError> {
    let wf = s.workflow.clone();
    Ok(Json(
        blocking(move || wf.withdraw(&c.account, id)).await?.into(),
    ))
}
