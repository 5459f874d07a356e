//! CAP 1.2 on the API. In: `POST /api/alerts/cap`, a source's token
//! checked before the body is read, the document checked element by
//! element (the answer names what is missing or wrong), its audio from
//! `derefUri` or fetched from a configured host, then the intake. Out:
//! `GET /api/alerts/cap`, an Atom feed of the platform's current
//! broadcasts, each a CAP 1.2 alert, and `GET /api/alerts/cap/{id}`, one.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gateway::cap::{self, CapAlert, Outgoing};
use gateway::{Alert, Audio, Format};
use serde::Serialize;

use super::intake::Authenticated;
use super::Gateway;
use crate::api::{ApiError, ApiState};
use crate::audit::{Outcome, Record};
use crate::broadcast::Broadcast;

/// What the intake made of a CAP alert.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CapAnswer {
    /// The alert's identifier.
    pub identifier: String,
    /// relayed, review, cancelled, not_here or duplicate.
    pub outcome: &'static str,
    pub outcome_zh: String,
    /// The draft it was filed as.
    pub draft: Option<u64>,
    /// The broadcast it became, once signed.
    pub broadcast: Option<String>,
    pub warnings: Vec<String>,
}

fn gateway_of(s: &ApiState) -> Result<Arc<Gateway>, ApiError> {
    s.gateway.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this platform takes no alerts from above: no [gateway] in its configuration",
            "本平台未配置上级预警接入（[gateway]）",
        )
    })
}

/// Takes a CAP 1.2 alert from a configured source.
#[utoipa::path(post, path = "/api/alerts/cap",
    request_body(content = String, content_type = "application/cap+xml"),
    responses((status = 200, body = CapAnswer), (status = 401, body = crate::api::error::ErrorBody),
        (status = 422, body = crate::api::error::ErrorBody), (status = 413, body = crate::api::error::ErrorBody)))]
pub async fn ingest(State(s): State<ApiState>, req: Request) -> Result<Json<CapAnswer>, ApiError> {
    let g = gateway_of(&s)?;
    let Some(source) = g.source_of(Format::Cap, &req) else {
        crate::api::discard_body(req.into_body()).await;
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the token of a configured CAP source (Authorization: Bearer)",
            "请提供已配置的 CAP 信息源令牌",
        ));
    };
    let body = axum::body::to_bytes(req.into_body(), cap::MAX_CAP_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("alert: over {} bytes, the limit", cap::MAX_CAP_BYTES),
                "预警文档过大",
            )
            .field("alert")
        })?;
    let refused = {
        let g = g.clone();
        let source = source.clone();
        move |detail: String| {
            g.counters.cap_refused.fetch_add(1, Ordering::Relaxed);
            let r = Record::new(&source.actor(), "alert.receive", "CAP 1.2 (refused)")
                .outcome(Outcome::Refused)
                .detail(detail.clone());
            if let Err(e) = g.workflow.record(r) {
                tracing::error!("recording a refused alert: {e}");
            }
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                detail,
                "CAP 预警文档无效",
            )
            .field("alert")
        }
    };
    let parsed = tokio::task::spawn_blocking(move || CapAlert::parse(&body))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let doc = match parsed {
        Ok(d) => d,
        Err(e) => return Err(refused(e.to_string())),
    };
    let mut alert = match Alert::from_cap(&doc) {
        Ok(a) => a,
        Err(why) => return Err(refused(format!("alert {}: {why}", doc.identifier))),
    };
    let mut fetch_warning = None;
    if let Some(Audio::Remote { resource, .. }) = &alert.audio {
        match super::fetch::fetch(resource, &g.fetch_hosts).await {
            Ok(bytes) => {
                alert.audio = Some(Audio::Inline {
                    name: resource.desc.clone(),
                    bytes,
                })
            }
            Err(e) => fetch_warning = Some(e.to_string()),
        }
    }
    let auth = Authenticated {
        how: format!(
            "token of source {}{}",
            source.name,
            if doc.signed {
                "; its enveloped XML signature is not verified here (docs/gateways.md)"
            } else {
                ""
            }
        ),
        audio_covered: true,
    };
    let identifier = alert.id.clone();
    let taken = {
        let g = g.clone();
        tokio::task::spawn_blocking(move || g.take(&source, alert, &auth))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
    };
    match taken {
        Ok(t) => {
            g.counters.cap_taken.fetch_add(1, Ordering::Relaxed);
            let mut warnings = t.warnings;
            warnings.extend(fetch_warning);
            Ok(Json(CapAnswer {
                identifier,
                outcome: t.done.name(),
                outcome_zh: t.done.zh(),
                draft: t.draft.as_ref().map(|d| d.id),
                broadcast: t
                    .draft
                    .and_then(|d| d.broadcast_id())
                    .map(|b| b.to_string()),
                warnings,
            }))
        }
        Err(e) => {
            g.counters.cap_refused.fetch_add(1, Ordering::Relaxed);
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                e.to_string(),
                "预警未能处理",
            )
            .field("alert"))
        }
    }
}

/// A held broadcast as a CAP alert.
fn outgoing<'a>(
    s: &'a ApiState,
    b: &'a Broadcast,
    areas: &'a [(String, String)],
    ids: &'a (String, String, String),
) -> Outgoing<'a> {
    let h = b.header.header();
    let cancels = match (h.msg_type, h.related) {
        (protocol::MessageType::Cancel, Some(_)) => Some((ids.2.as_str(), h.issued_at_ms)),
        _ => None,
    };
    let ours = b.id().issuer() == s.workflow.relay.resource_code();
    Outgoing {
        identifier: &ids.0,
        sender: &ids.1,
        sender_name: if ours {
            s.name.as_str()
        } else {
            ids.1.as_str()
        },
        sent_ms: h.issued_at_ms,
        drill: h.msg_type.is_drill() || h.class == protocol::BroadcastClass::Drill,
        cancels,
        event_type: h.event_type.as_str(),
        event: "",
        severity: h.severity.code(),
        start_ms: h.start_ms,
        end_ms: h.end_ms,
        headline: &h.title,
        description: &h.text,
        areas,
    }
}

/// What one alert of the feed needs: its areas (code, name) and ids
/// (identifier, sender, the identifier it cancels).
fn parts(s: &ApiState, b: &Broadcast) -> (Vec<(String, String)>, (String, String, String)) {
    let h = b.header.header();
    let areas = h
        .targets
        .iter()
        .map(|a| (a.to_string(), s.places.name(*a)))
        .collect();
    let ids = (
        b.id().to_string(),
        format!("ebs:{}", b.id().issuer().as_str()),
        h.related.map(|r| r.to_string()).unwrap_or_default(),
    );
    (areas, ids)
}

/// The current broadcasts as an Atom feed of CAP 1.2 alerts.
#[utoipa::path(get, path = "/api/alerts/cap",
    responses((status = 200, description = "Atom feed (application/atom+xml) of CAP 1.2 alerts")))]
pub async fn feed(State(s): State<ApiState>) -> Response {
    let now = crate::now_ms();
    let held = s.workflow.relay.broadcasts.current(now);
    let parts: Vec<_> = held.iter().map(|b| parts(&s, b)).collect();
    let alerts: Vec<Outgoing<'_>> = held
        .iter()
        .zip(&parts)
        .map(|(b, (areas, ids))| outgoing(&s, b, areas, ids))
        .collect();
    let resource = s.workflow.relay.resource_code();
    let body = cap::atom_feed(
        &format!("urn:ebs:{resource}:cap"),
        &s.name,
        now,
        "/api/alerts/cap/",
        &alerts,
    );
    (
        [(header::CONTENT_TYPE, "application/atom+xml; charset=utf-8")],
        body,
    )
        .into_response()
}

/// One broadcast held here, as a CAP 1.2 alert.
#[utoipa::path(get, path = "/api/alerts/cap/{id}",
    params(("id" = String, Path, description = "broadcast id (35 digits)")),
    responses((status = 200, description = "CAP 1.2 alert (application/cap+xml)"), (status = 404, body = crate::api::error::ErrorBody)))]
pub async fn one(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no broadcast {id:?} is held here"),
            "未找到该广播",
        )
    };
    let bid: protocol::BroadcastId = id.parse().map_err(|_| not_found())?;
    let b = s.workflow.relay.broadcasts.get(bid).ok_or_else(not_found)?;
    let (areas, ids) = parts(&s, &b);
    let body = outgoing(&s, &b, &areas, &ids).document();
    Ok((
        [(header::CONTENT_TYPE, "application/cap+xml; charset=utf-8")],
        body,
    )
        .into_response())
}
