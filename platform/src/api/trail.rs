//! The audit trail over HTTP (auditors and admins): pages of entries and
//! the whole trail as JSON lines or CSV, for `platform audit verify`.

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::ApiError;
use super::{blocking, ApiState};
use crate::accounts::Role;
use crate::audit::Entry;

#[derive(Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// First entry (sequence number); absent: the newest entries.
    pub from: Option<u64>,
    /// At most this many (default 200, at most 5000).
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditRow {
    #[serde(flatten)]
    pub entry: Entry,
    /// The entry's time in Asia/Shanghai.
    pub time_china: String,
}

#[utoipa::path(get, path = "/api/audit", params(AuditQuery), responses((status = 200, body = [AuditRow])))]
pub async fn entries(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditRow>>, ApiError> {
    c.require(&[Role::Auditor, Role::Admin])?;
    let limit = q.limit.unwrap_or(200).min(5000);
    let wf = s.workflow.clone();
    let entries = blocking(move || match q.from {
        Some(from) => wf.audit.entries(from, limit),
        None => wf.audit.latest(limit),
    })
    .await?;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| AuditRow {
                time_china: e.local_time(),
                entry: e,
            })
            .collect(),
    ))
}

#[derive(Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// jsonl (default: exactly as stored, for `platform audit verify`) or csv.
    pub format: Option<String>,
}

#[utoipa::path(get, path = "/api/audit/export", params(ExportQuery),
    responses((status = 200, content_type = "application/x-ndjson", body = String), (status = 400, body = super::error::ErrorBody)))]
pub async fn export(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    c.require(&[Role::Auditor, Role::Admin])?;
    let csv = match q.format.as_deref() {
        None | Some("jsonl") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "format",
                format!("{other:?}: jsonl or csv"),
                "导出格式只能是 jsonl 或 csv",
            ))
        }
    };
    let wf = s.workflow.clone();
    let who = c.name().to_string();
    let body = blocking(move || {
        wf.audit.record(
            crate::audit::Record::new(&who, "audit.export", if csv { "csv" } else { "jsonl" }),
            (wf.now)(),
        )?;
        if csv {
            let entries = wf.audit.entries(0, usize::MAX)?;
            Ok::<_, crate::audit::AuditError>(crate::audit::to_csv(&entries).into_bytes())
        } else {
            let mut out = Vec::new();
            for line in wf.audit.raw() {
                out.extend_from_slice(&line?);
                out.push(b'\n');
            }
            Ok(out)
        }
    })
    .await?;
    let (ctype, name) = if csv {
        ("text/csv; charset=utf-8", "audit.csv")
    } else {
        ("application/x-ndjson", "audit.jsonl")
    };
    Ok((
        [
            (header::CONTENT_TYPE, ctype.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}
