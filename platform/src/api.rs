//! The HTTP API (axum): issue from an uploaded audio file, cancel, list
//! broadcasts with live coverage, list terminals. Changing anything needs
//! the platform's bearer token; there is no default password.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use certs::AreaCode;
use protocol::{BroadcastClass, BroadcastId, MessageType, Severity};
use serde::Serialize;
use serde_json::json;

use crate::book::{Coverage, TerminalRow};
use crate::issue::{self, IdAllocator, IssueError, IssueRequest};
use crate::now_ms;
use crate::relay::Relay;
use crate::upload::Upload;

/// A terminal whose last heartbeat is older than this is offline.
pub const OFFLINE_AFTER_MS: i64 = 30_000;

#[derive(Clone)]
pub struct ApiState {
    pub relay: Arc<Relay>,
    pub ids: IdAllocator,
    pub token: Arc<String>,
    pub ingest: codec::IngestConfig,
    pub name: Arc<String>,
    pub lead_ms: i64,
    pub expiry_warning: std::time::Duration,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/status", get(status))
        .route("/api/broadcasts", get(list).post(create))
        .route("/api/broadcasts/{id}/cancel", post(cancel))
        .route("/api/terminals", get(terminals))
        .route("/api/commands", post(command))
        .route("/api/security-events", get(security_events))
        .route("/api/revocations", get(revocations).post(revoke))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(200 * 1024 * 1024))
        .with_state(state)
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<IssueError> for ApiError {
    fn from(e: IssueError) -> Self {
        let code = match e {
            IssueError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            IssueError::IdsExhausted { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(code, e.to_string())
    }
}

/// Runs work that decodes, signs or fsyncs off the runtime's threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, IssueError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => Ok(r?),
        Err(e) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn authorise(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if t.as_bytes() == state.token.as_bytes() => Ok(()),
        _ => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required".into(),
        )),
    }
}

async fn status(State(s): State<ApiState>) -> Json<serde_json::Value> {
    let cert = s.relay.identity.cert();
    Json(json!({
        "name": *s.name,
        "tier": cert.tier().name(),
        "serial": format!("{:016x}", cert.serial()),
        "scope": s.relay.scope.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "broadcasts": s.relay.broadcasts.current(now_ms()).len(),
        "refusals": s.relay.refusals().iter().map(|(r, n)| (r.name().to_string(), n)).collect::<std::collections::BTreeMap<_, _>>(),
        "certificates": crate::expiry::chain_expiry(&s.relay, certs::time::unix_now(), s.expiry_warning),
        "revocations": s.relay.revocations.numbers().iter().map(|(signer, n)| json!({"signer": format!("{signer:016x}"), "number": n})).collect::<Vec<_>>(),
    }))
}

/// Security events reported here (this platform's own and from below):
/// totals by reason, and the most recent events, newest first.
async fn security_events(State(s): State<ApiState>) -> Json<serde_json::Value> {
    let book = s.relay.book();
    let totals: std::collections::BTreeMap<&str, u64> =
        book.refusals.iter().map(|(r, n)| (r.name(), *n)).collect();
    Json(json!({ "totals": totals, "events": book.events() }))
}

fn list_json(l: &certs::RevocationList) -> serde_json::Value {
    json!({
        "signer": format!("{:016x}", l.signer_serial),
        "number": l.number,
        "issued_at": l.issued_at,
        "revoked": l.revoked.iter().map(|s| format!("{s:016x}")).collect::<Vec<_>>(),
    })
}

async fn revocations(State(s): State<ApiState>) -> Json<Vec<serde_json::Value>> {
    Json(s.relay.revocations.lists().iter().map(list_json).collect())
}

#[derive(serde::Deserialize)]
struct RevokeRequest {
    /// Certificate serials, hex as `certs show` prints them.
    revoke: Vec<String>,
}

/// Revokes certificates: a JSON body `{"revoke": [serial, ...]}` has the
/// district sign its next list; a PEM body (`certs revoke` output, e.g.
/// from the offline root) is applied as it is. Either way the list travels
/// down the tree at once.
async fn revoke(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorise(&s, &headers)?;
    let text = std::str::from_utf8(&body).map_err(|_| bad("body is not UTF-8"))?;
    let list = if text.trim_start().starts_with("-----BEGIN") {
        let list = certs::RevocationList::from_pem(text).map_err(|e| bad(e.to_string()))?;
        s.relay
            .apply_revocation(list.clone(), crate::now_ms())
            .map_err(|e| bad(format!("list refused: {e}")))?;
        list
    } else {
        let req: RevokeRequest = serde_json::from_str(text).map_err(|e| {
            bad(format!(
                "expected {{\"revoke\": [serials]}} or a PEM list: {e}"
            ))
        })?;
        let serials = req
            .revoke
            .iter()
            .map(|t| {
                u64::from_str_radix(t, 16).map_err(|_| bad(format!("serial {t:?} is not hex")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        crate::revoke::revoke(&s.relay, &serials).map_err(|e| bad(e.to_string()))?
    };
    Ok(Json(list_json(&list)))
}

async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        crate::metrics::render(&s.relay, s.expiry_warning, OFFLINE_AFTER_MS),
    )
}

#[derive(Serialize)]
struct BroadcastRow {
    id: String,
    msg_type: u8,
    class: u8,
    severity: u8,
    title: String,
    targets: Vec<String>,
    issued_at_ms: i64,
    end_ms: i64,
    segments: usize,
    total_segments: u32,
    cancelled: bool,
    coverage: Coverage,
}

async fn list(State(s): State<ApiState>) -> Json<Vec<BroadcastRow>> {
    let all = s.relay.broadcasts.all();
    // The book's lock is always the last one taken.
    let now = now_ms();
    let book = s.relay.book();
    Json(
        all.iter()
            .map(|b| {
                let h = b.header.header();
                BroadcastRow {
                    id: b.id().to_string(),
                    msg_type: h.msg_type.code(),
                    class: h.class.code(),
                    severity: h.severity.code(),
                    title: h.title.clone(),
                    targets: h.targets.iter().map(|t| t.to_string()).collect(),
                    issued_at_ms: h.issued_at_ms,
                    end_ms: h.end_ms,
                    segments: b.segment_count(),
                    total_segments: h.audio.total_segments,
                    cancelled: b.is_cancelled(),
                    coverage: book.coverage(b.id(), now, h.end_ms),
                }
            })
            .collect(),
    )
}

async fn terminals(State(s): State<ApiState>) -> Json<Vec<TerminalRow>> {
    Json(s.relay.book().terminals(now_ms(), OFFLINE_AFTER_MS))
}

async fn cancel(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorise(&s, &headers)?;
    let target: BroadcastId = id
        .parse()
        .map_err(|_| bad(format!("{id:?} is not a 35-digit broadcast id")))?;
    let cancel_id = blocking(move || issue::cancel(&s.relay, &s.ids, target)).await?;
    Ok(Json(
        json!({ "cancelled": target.to_string(), "cancel_id": cancel_id.to_string() }),
    ))
}

async fn create(
    State(s): State<ApiState>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    authorise(&s, &headers)?;
    let mut fields = std::collections::HashMap::new();
    let mut audio: Option<Upload> = None;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| bad(format!("malformed form: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_string();
        if name == "audio" {
            let ext = field
                .file_name()
                .and_then(|f| std::path::Path::new(f).extension())
                .and_then(|e| e.to_str())
                .unwrap_or("bin")
                .to_string();
            let data = field
                .bytes()
                .await
                .map_err(|e| bad(format!("audio upload: {e}")))?;
            let upload = Upload::write(&data, &ext)
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            audio = Some(upload);
        } else {
            let text = field
                .text()
                .await
                .map_err(|e| bad(format!("field {name}: {e}")))?;
            fields.insert(name, text);
        }
    }
    let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
    let targets = get("areas")
        .split(',')
        .filter(|a| !a.trim().is_empty())
        .map(|a| a.trim().parse::<AreaCode>().map_err(|e| bad(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let (class, msg_type) = match get("class") {
        "emergency" | "" => (BroadcastClass::Emergency, MessageType::Broadcast),
        "daily" => (BroadcastClass::Daily, MessageType::Broadcast),
        "drill" => (BroadcastClass::Drill, MessageType::DrillPlatform),
        other => return Err(bad(format!("class {other:?} (emergency, daily, drill)"))),
    };
    let severity = Severity::from_code(get("severity").parse().unwrap_or(0))
        .map_err(|e| bad(e.to_string()))?;
    let event_type = match get("event_type") {
        "" => "10000".parse(),
        e => e.parse(),
    }
    .map_err(|e: certs::encoding::DecodeError| bad(e.to_string()))?;
    let valid_minutes = match get("valid_minutes") {
        "" => 60,
        v => v
            .parse()
            .map_err(|_| bad(format!("valid_minutes {v:?} is not a number")))?,
    };
    let volume = match get("volume") {
        "" => None,
        v => Some(
            v.parse::<u8>()
                .ok()
                .filter(|v| *v <= 100)
                .ok_or_else(|| bad("volume is 0 to 100"))?,
        ),
    };
    let title = get("title").to_string();
    if title.is_empty() {
        return Err(bad("a title is required"));
    }
    issue::check_scope(&s.relay, &targets)?;
    let audio = audio.ok_or_else(|| bad("an audio file is required (field 'audio')"))?;
    let req = IssueRequest {
        targets,
        class,
        msg_type,
        severity,
        event_type,
        title,
        text: get("text").to_string(),
        language: match get("language") {
            "" => "zh-CN".to_string(),
            l => l.to_string(),
        },
        valid_minutes,
        volume,
    };
    let issued =
        blocking(move || issue::issue(&s.relay, &s.ids, req, audio.path(), &s.ingest, s.lead_ms))
            .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": issued.id.to_string(),
            "accepted_ms": now_ms(),
            "warnings": issued.warnings,
        })),
    ))
}

#[derive(serde::Deserialize)]
struct CommandRequest {
    #[serde(default)]
    areas: Vec<String>,
    /// Terminal serials, hex as the terminals list shows them.
    #[serde(default)]
    terminals: Vec<String>,
    /// volume, mute, unmute, restart
    action: String,
    #[serde(default)]
    value: Option<u8>,
}

async fn command(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Json(req): Json<CommandRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorise(&s, &headers)?;
    let areas = req
        .areas
        .iter()
        .map(|a| a.parse::<AreaCode>().map_err(|e| bad(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let terminals = req
        .terminals
        .iter()
        .map(|t| {
            u64::from_str_radix(t, 16)
                .map_err(|_| bad(format!("terminal {t:?} is not a hex serial")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let action = match (req.action.as_str(), req.value) {
        ("volume", Some(v)) if v <= 100 => protocol::Action::Volume(v),
        ("volume", _) => return Err(bad("volume needs a value 0 to 100")),
        ("mute", _) => protocol::Action::Mute(true),
        ("unmute", _) => protocol::Action::Mute(false),
        ("restart", _) => protocol::Action::Restart,
        (other, _) => {
            return Err(bad(format!(
                "action {other:?} (volume, mute, unmute, restart)"
            )))
        }
    };
    let id = issue::command(&s.relay, areas, terminals, action)?;
    Ok(Json(json!({ "command_id": format!("{id:016x}") })))
}
