//! Who is calling: a browser session (cookie `ebs_session`, HttpOnly,
//! SameSite=Strict) or a per-account API token (`Authorization: Bearer`).
//! Checked before any body is read. A session's state-changing requests
//! must carry its CSRF token in `X-CSRF-Token`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use super::ApiState;
use crate::accounts::{Account, Role};

pub const SESSION_COOKIE: &str = "ebs_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The authenticated caller, put in the request's extensions.
#[derive(Clone, Debug)]
pub struct Caller {
    pub account: Account,
    /// The session (hash of its id), if the caller came with one.
    pub session: Option<[u8; 32]>,
    /// The session's CSRF token (None for a bearer token).
    pub csrf: Option<String>,
}

impl Caller {
    pub fn name(&self) -> &str {
        &self.account.name
    }

    /// Refuses unless the caller holds one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.iter().any(|r| self.account.has(*r)) {
            return Ok(());
        }
        let names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
        Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            format!("this needs the role {}", names.join(" or ")),
            format!("此操作需要角色：{}", names.join(" 或 ")),
        ))
    }
}

/// The client's address (the audit trail's "from where").
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub std::net::SocketAddr);

pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE)
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    for v in headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(';') {
            if let Some((k, val)) = part.trim().split_once('=') {
                if k == name {
                    return Some(val.to_string());
                }
            }
        }
    }
    None
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn changes_state(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Middleware: finds the caller or answers 401 (403 for a missing CSRF
/// token) before the handler, and so before any body, is read.
pub async fn authenticate(
    State(s): State<ApiState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let now = (s.workflow.now)();
    let accounts = &s.workflow.accounts;
    let found = if let Some(token) = bearer(req.headers()) {
        accounts.by_token(token, now)?
    } else if let Some(id) = session_cookie(req.headers()) {
        accounts.by_session(&id, now)?
    } else {
        None
    };
    let Some(auth) = found else {
        s.auth_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(ApiError::unauthorized());
    };
    if let Some(csrf) = &auth.csrf {
        if changes_state(req.method()) {
            let given = req
                .headers()
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            use subtle::ConstantTimeEq;
            if !bool::from(given.as_bytes().ct_eq(csrf.as_bytes())) {
                return Err(ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    "csrf",
                    "this session's CSRF token is missing or wrong (header X-CSRF-Token)",
                    "缺少或错误的 CSRF 令牌，请刷新页面后重试",
                ));
            }
        }
    }
    req.extensions_mut().insert(Caller {
        account: auth.account,
        session: auth.session,
        csrf: auth.csrf,
    });
    Ok(next.run(req).await)
}
