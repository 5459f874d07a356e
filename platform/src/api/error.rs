//! Every error the API answers with: a status and a JSON body
//! `{error, message, message_zh, field?}` (a stable code, then English and
//! Chinese for people). Errors from axum's own extractors and layers (plain
//! text) are turned into the same JSON by `json_errors`.

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::accounts::AccountError;
use crate::drafts::FieldError;
use crate::issue::IssueError;
use crate::workflow::WorkflowError;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code: `unauthorized`, `forbidden`, `csrf`, `invalid`,
    /// `too_large`, `not_found`, `conflict`, `locked`, `unavailable`, `internal`, ...
    pub error: &'static str,
    pub message: String,
    pub message_zh: String,
    /// The request field at fault, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        error: &'static str,
        message: impl Into<String>,
        message_zh: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error,
                message: message.into(),
                message_zh: message_zh.into(),
                field: None,
            },
        }
    }

    /// The body with its status, for answers outside HTTP (a WebSocket).
    pub fn json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.body).unwrap_or_default();
        v["status"] = self.status.as_u16().into();
        v
    }

    pub fn field(mut self, field: &'static str) -> Self {
        self.body.field = Some(field);
        self
    }

    pub fn invalid(field: &'static str, message: impl Into<String>, zh: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", message, zh).field(field)
    }

    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "log in, or send a valid API token (Authorization: Bearer ebs1....)",
            "请先登录，或提供有效的 API 令牌",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            message,
            "无权执行此操作",
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            message,
            "服务器内部错误",
        )
    }

    pub fn too_large(field: &'static str, limit_mb: u64) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("{field}: too large, the limit is {limit_mb} MB"),
            format!("文件过大：上限 {limit_mb} MB"),
        )
        .field(field)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::invalid(e.field, e.to_string(), e.message_zh)
    }
}

impl From<IssueError> for ApiError {
    fn from(e: IssueError) -> Self {
        use IssueError::*;
        let msg = e.to_string();
        match e {
            Store(_) => ApiError::internal(msg),
            IdsExhausted { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                msg,
                "今日播发编号已用完，零点后恢复",
            ),
            OutsideScope(..) | NoTargets => {
                ApiError::invalid("areas", msg, "区域不在本平台管辖范围内")
            }
            LongerThanValidity { .. } => {
                ApiError::invalid("valid_minutes", msg, "音频长于有效时长，请延长有效时长")
            }
            SilentEmergency => ApiError::invalid("audio", msg, "音频无声：应急广播必须有声音"),
            Audio(_) => ApiError::invalid("audio", msg, "音频文件无法使用"),
            NoSuchBroadcast(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", msg, "本平台没有该广播")
            }
            AlreadyCancelled(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", msg, "该广播已撤销")
            }
            Invalid(ref m) if m.starts_with("audio") => {
                ApiError::invalid("audio", msg, "音频文件无法使用")
            }
            Invalid(_) | Refused(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid", msg, "请求无效")
            }
        }
    }
}

impl From<WorkflowError> for ApiError {
    fn from(e: WorkflowError) -> Self {
        let msg = e.to_string();
        match e {
            WorkflowError::Forbidden(_) => ApiError::forbidden(msg),
            WorkflowError::OwnDraft(_) => ApiError::new(
                StatusCode::FORBIDDEN,
                "own_draft",
                msg,
                "不能审核自己拟写或修改的稿件，须由另一名审核人审核",
            ),
            WorkflowError::ApprovedAlready(_) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                msg,
                "您已审核过该稿件，还需另一名审核人",
            ),
            WorkflowError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", msg, "未找到")
            }
            WorkflowError::WrongState { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                msg,
                "稿件当前状态不允许此操作",
            ),
            WorkflowError::Field(f) => f.into(),
            WorkflowError::Issue(i) => i.into(),
            WorkflowError::Store(_) => ApiError::internal(msg),
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        let msg = e.to_string();
        match e {
            AccountError::Invalid { field, .. } => ApiError::invalid(field, msg, "账户信息无效"),
            AccountError::Exists(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", msg, "账户名已存在")
            }
            AccountError::NoSuchAccount(_) | AccountError::NoSuchToken(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", msg, "未找到")
            }
            AccountError::LastAdmin => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                msg,
                "不能删除、锁定最后一名管理员或取消其管理员角色",
            ),
            AccountError::Store(_) | AccountError::Hash(_) => ApiError::internal(msg),
        }
    }
}

/// Turns any error response that is not JSON (axum's extractor
/// rejections, 404 and 405, a timeout, a body over its limit) into the
/// API's JSON error.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let (error, zh) = match status {
        StatusCode::NOT_FOUND => ("not_found", "未找到"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "不支持此请求方法"),
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", "请求体过大"),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "请求超时"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "请求格式不受支持"),
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => ("invalid", "请求无效"),
        s if s.is_server_error() => ("internal", "服务器内部错误"),
        _ => ("invalid", "请求无效"),
    };
    let message = match (status, text.trim()) {
        (StatusCode::NOT_FOUND, "") => "no such endpoint".to_string(),
        (StatusCode::METHOD_NOT_ALLOWED, "") => "method not allowed here".to_string(),
        (StatusCode::REQUEST_TIMEOUT, "") => "the request took too long".to_string(),
        (StatusCode::PAYLOAD_TOO_LARGE, _) => {
            "the request body is larger than this endpoint accepts".to_string()
        }
        (_, "") => status.canonical_reason().unwrap_or("error").to_string(),
        (_, t) => t.to_string(),
    };
    let mut res = (
        status,
        Json(ErrorBody {
            error,
            message,
            message_zh: zh.into(),
            field: None,
        }),
    )
        .into_response();
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            res.headers_mut().insert(k.clone(), v.clone());
        }
    }
    res
}
