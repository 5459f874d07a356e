//! What everyone signed in may read (status, broadcasts with live
//! coverage, terminals, security events, revocation lists, metrics) and
//! what maintainers and approvers do (commands, revocation, cancel).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use certs::AreaCode;
use protocol::BroadcastId;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::ApiError;
use super::{blocking, ApiJson, ApiState};
use crate::book::{Coverage, TerminalRow};
use crate::now_ms;
use crate::workflow::Revoke;

/// A terminal whose last heartbeat is older than this is offline: three
/// heartbeats at the terminal's default idle period (30 s).
pub const OFFLINE_AFTER_MS: i64 = 90_000;

#[utoipa::path(get, path = "/api/status", responses((status = 200, body = Object)))]
pub async fn status(State(s): State<ApiState>) -> Json<serde_json::Value> {
    let relay = &s.workflow.relay;
    let cert = relay.identity.cert();
    let clock = relay.clock.estimate();
    Json(json!({
        "name": *s.name,
        "tier": cert.tier().name(),
        "serial": format!("{:016x}", cert.serial()),
        "scope": relay.scope.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "broadcasts": relay.broadcasts.current(now_ms()).len(),
        "refusals": relay.refusals().iter().map(|(r, n)| (r.name().to_string(), n)).collect::<BTreeMap<_, _>>(),
        "certificates": crate::expiry::chain_expiry(relay, certs::time::unix_now(), s.expiry_warning),
        "revocations": relay.revocations.numbers().iter().map(|(signer, n)| json!({"signer": format!("{signer:016x}"), "number": n})).collect::<Vec<_>>(),
        // The tree's time as this platform serves it: its own at the top,
        // else measured against its parent (tree − local, µs).
        "clock": {
            "top_of_tree": relay.clock.is_root(),
            "synced": clock.synced,
            "offset_us": clock.offset_at(clock.at_local_us),
            "uncertainty_us": clock.uncertainty_us,
            "min_rtt_us": clock.min_rtt_us,
        },
    }))
}

/// Security events reported here (this platform's own and from below):
/// totals by reason, and the most recent events, newest first.
#[utoipa::path(get, path = "/api/security-events", responses((status = 200, body = Object)))]
pub async fn security_events(State(s): State<ApiState>) -> Json<serde_json::Value> {
    let book = s.workflow.relay.book();
    let totals: BTreeMap<&str, u64> = book.refusals.iter().map(|(r, n)| (r.name(), *n)).collect();
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

#[utoipa::path(get, path = "/api/revocations", responses((status = 200, body = [Object])))]
pub async fn revocations(State(s): State<ApiState>) -> Json<Vec<serde_json::Value>> {
    Json(
        s.workflow
            .relay
            .revocations
            .lists()
            .iter()
            .map(list_json)
            .collect(),
    )
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Certificate serials, hex as `certs show` prints them.
    pub revoke: Vec<String>,
}

/// Revokes certificates (maintainers): a JSON body `{"revoke": [serial,
/// ...]}` has this platform sign its next list; a PEM body (`certs revoke`
/// output, e.g. from the offline root) is applied as it is. Either way the
/// list travels down the tree at once.
#[utoipa::path(post, path = "/api/revocations",
    request_body(content = RevokeRequest, description = "JSON, or a PEM revocation list as text/plain"),
    responses((status = 200, body = Object), (status = 400, body = super::error::ErrorBody)))]
pub async fn revoke(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    c.require(&[crate::accounts::Role::Maintainer])?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::invalid("body", "the body is not UTF-8", "请求体不是 UTF-8 文本"))?;
    let what = if text.trim_start().starts_with("-----BEGIN") {
        Revoke::List(certs::RevocationList::from_pem(text).map_err(|e| {
            ApiError::invalid(
                "body",
                format!("not a revocation list: {e}"),
                "吊销列表格式错误",
            )
        })?)
    } else {
        let req: RevokeRequest = serde_json::from_str(text).map_err(|e| {
            ApiError::invalid(
                "revoke",
                format!("expected {{\"revoke\": [serials]}} or a PEM list: {e}"),
                "请求格式错误",
            )
        })?;
        if req.revoke.is_empty() || req.revoke.len() > 1000 {
            return Err(ApiError::invalid(
                "revoke",
                "1 to 1000 serials",
                "须提供 1 到 1000 个证书序列号",
            ));
        }
        Revoke::Serials(
            req.revoke
                .iter()
                .map(|t| {
                    u64::from_str_radix(t, 16).map_err(|_| {
                        ApiError::invalid(
                            "revoke",
                            format!("serial {t:?} is not hex"),
                            "序列号应为十六进制",
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    let wf = s.workflow.clone();
    let list = blocking(move || wf.revoke(&c.account, what)).await?;
    Ok(Json(list_json(&list)))
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    let mut text = crate::metrics::render(
        &s.workflow.relay,
        s.expiry_warning,
        OFFLINE_AFTER_MS,
        s.workflow.lead_ms,
    );
    text.push_str(&format!(
        "# HELP ebs_api_auth_failures_total API requests refused for want of a valid session or token.\n# TYPE ebs_api_auth_failures_total counter\nebs_api_auth_failures_total {}\n",
        s.auth_failures.load(std::sync::atomic::Ordering::Relaxed)
    ));
    if let Some(g) = &s.gateway {
        text.push_str(&g.render_metrics());
    }
    ([("content-type", "text/plain; version=0.0.4")], text)
}

#[derive(Serialize, ToSchema)]
pub struct BroadcastRow {
    pub id: String,
    pub msg_type: u8,
    pub class: u8,
    /// A drill: shown as one everywhere.
    pub drill: bool,
    pub severity: u8,
    pub title: String,
    pub targets: Vec<String>,
    pub issued_at_ms: i64,
    pub end_ms: i64,
    pub segments: usize,
    pub total_segments: u32,
    pub cancelled: bool,
    /// The draft it was published from here, if any.
    pub draft: Option<u64>,
    /// Areas where this platform silenced it (R20).
    pub silenced_here: Vec<String>,
    #[schema(value_type = Object)]
    pub coverage: Coverage,
}

#[utoipa::path(get, path = "/api/broadcasts", responses((status = 200, body = [BroadcastRow])))]
pub async fn list(State(s): State<ApiState>) -> Json<Vec<BroadcastRow>> {
    let relay = &s.workflow.relay;
    let all = relay.broadcasts.all();
    let drafts: Vec<Option<u64>> = all
        .iter()
        .map(|b| {
            s.workflow
                .drafts
                .by_broadcast(b.id())
                .ok()
                .flatten()
                .map(|d| d.id)
        })
        .collect();
    // The book's lock is always the last one taken.
    let now = now_ms();
    let book = relay.book();
    Json(
        all.iter()
            .zip(drafts)
            .map(|(b, draft)| {
                let h = b.header.header();
                BroadcastRow {
                    id: b.id().to_string(),
                    msg_type: h.msg_type.code(),
                    class: h.class.code(),
                    drill: h.msg_type.is_drill() || h.class == protocol::BroadcastClass::Drill,
                    severity: h.severity.code(),
                    title: h.title.clone(),
                    targets: h.targets.iter().map(|t| t.to_string()).collect(),
                    issued_at_ms: h.issued_at_ms,
                    end_ms: h.end_ms,
                    segments: b.segment_count(),
                    total_segments: h.audio.total_segments,
                    cancelled: b.is_cancelled(),
                    draft,
                    silenced_here: b.silenced_areas().iter().map(|a| a.to_string()).collect(),
                    coverage: book.coverage(b.id(), now, h.end_ms),
                }
            })
            .collect(),
    )
}

#[utoipa::path(get, path = "/api/terminals", responses((status = 200, body = [Object])))]
pub async fn terminals(State(s): State<ApiState>) -> Json<Vec<TerminalRow>> {
    Json(
        s.workflow
            .relay
            .book()
            .terminals(now_ms(), OFFLINE_AFTER_MS),
    )
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// For a lower tier's broadcast (not held here): the areas to cancel
    /// it in. Absent for a broadcast held here.
    #[serde(default)]
    pub areas: Option<Vec<String>>,
}

/// The prepared cancel: one call stops a broadcast everywhere. Allowed to
/// its authors and to any approver; no second approval. A lower tier's
/// broadcast is cancelled from above by an approver naming the areas.
#[utoipa::path(post, path = "/api/broadcasts/{id}/cancel", params(("id" = String, Path, description = "35-digit broadcast id")),
    request_body = CancelRequest,
    responses((status = 200, body = Object), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn cancel(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let target = broadcast_id(&id)?;
    let req: CancelRequest = super::optional_json(&body)?;
    let areas = req.areas.map(|a| parse_areas(&a)).transpose()?;
    let wf = s.workflow.clone();
    let cancel_id = blocking(move || wf.cancel(&c.account, target, areas)).await?;
    Ok(Json(
        json!({ "cancelled": target.to_string(), "cancel_id": cancel_id.to_string() }),
    ))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct SilenceRequest {
    /// Why (required; at most 1024 bytes). Shown in the audit trail.
    #[serde(default)]
    pub reason: String,
    /// Area codes to silence it in; absent: all of yours.
    #[serde(default)]
    pub areas: Option<Vec<String>>,
}

/// Local silence (R20): stops a misbehaving broadcast in this platform's
/// areas (or some of them), whoever issued it, with a reason. An emergency
/// from a tier above needs an approver.
#[utoipa::path(post, path = "/api/broadcasts/{id}/silence", params(("id" = String, Path, description = "35-digit broadcast id")),
    request_body = SilenceRequest,
    responses((status = 200, body = Object), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn silence(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let target = broadcast_id(&id)?;
    let req: SilenceRequest = super::optional_json(&body)?;
    let areas = req.areas.map(|a| parse_areas(&a)).transpose()?;
    let wf = s.workflow.clone();
    let id = blocking(move || wf.silence(&c.account, target, areas, &req.reason)).await?;
    Ok(Json(
        json!({ "silenced": target.to_string(), "command_id": format!("{id:016x}") }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    #[serde(default)]
    pub areas: Vec<String>,
    /// Terminal serials, hex as the terminals list shows them.
    #[serde(default)]
    pub terminals: Vec<String>,
    /// volume, mute, unmute, restart
    pub action: String,
    #[serde(default)]
    pub value: Option<u8>,
}

/// At most this many targets in one command.
const MAX_COMMAND_TARGETS: usize = 512;

#[utoipa::path(post, path = "/api/commands", request_body = CommandRequest,
    responses((status = 200, body = Object), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn command(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    ApiJson(req): ApiJson<CommandRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    c.require(&[crate::accounts::Role::Maintainer])?;
    if req.areas.len() + req.terminals.len() > MAX_COMMAND_TARGETS {
        return Err(ApiError::invalid(
            "areas",
            format!("at most {MAX_COMMAND_TARGETS} areas and terminals in one command"),
            "目标过多",
        ));
    }
    if req.areas.is_empty() && req.terminals.is_empty() {
        return Err(ApiError::invalid(
            "areas",
            "name at least one area or terminal",
            "请选择至少一个区域或终端",
        ));
    }
    let areas = req
        .areas
        .iter()
        .map(|a| {
            a.parse::<AreaCode>().map_err(|_| {
                ApiError::invalid(
                    "areas",
                    format!("{a:?} is not a 12-digit area code"),
                    "区域编码格式错误",
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let terminals = req
        .terminals
        .iter()
        .map(|t| {
            u64::from_str_radix(t, 16).map_err(|_| {
                ApiError::invalid(
                    "terminals",
                    format!("terminal {t:?} is not a hex serial"),
                    "终端序列号应为十六进制",
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let action = match (req.action.as_str(), req.value) {
        ("volume", Some(v)) if v <= 100 => protocol::Action::Volume(v),
        ("volume", _) => {
            return Err(ApiError::invalid(
                "value",
                "volume needs a value 0 to 100",
                "音量应为 0 到 100",
            ))
        }
        ("mute", _) => protocol::Action::Mute(true),
        ("unmute", _) => protocol::Action::Mute(false),
        ("restart", _) => protocol::Action::Restart,
        (other, _) => {
            return Err(ApiError::invalid(
                "action",
                format!("action {other:?} (volume, mute, unmute, restart)"),
                "不支持的操作",
            ))
        }
    };
    let wf = s.workflow.clone();
    let id = blocking(move || wf.command(&c.account, areas, terminals, action)).await?;
    Ok(Json(json!({ "command_id": format!("{id:016x}") })))
}

fn broadcast_id(id: &str) -> Result<BroadcastId, ApiError> {
    id.parse().map_err(|_| {
        ApiError::invalid(
            "id",
            format!("{id:?} is not a 35-digit broadcast id"),
            "广播编号应为35位数字",
        )
    })
}

fn parse_areas(a: &[String]) -> Result<Vec<AreaCode>, ApiError> {
    if a.len() > protocol::header::MAX_TARGETS {
        return Err(ApiError::invalid(
            "areas",
            format!("at most {} areas", protocol::header::MAX_TARGETS),
            "区域过多",
        ));
    }
    a.iter()
        .map(|x| {
            x.parse::<AreaCode>().map_err(|_| {
                ApiError::invalid(
                    "areas",
                    format!("{x:?} is not a 12-digit area code"),
                    "区域编码格式错误",
                )
            })
        })
        .collect()
}

/// Health for load balancers: no detail, no authentication.
#[utoipa::path(get, path = "/api/health", responses((status = 200, body = Object)))]
pub async fn health() -> (StatusCode, Json<serde_json::Value>) {
    (StatusCode::OK, Json(json!({ "ok": true })))
}
