//! The HTTP API (axum): people log in (sessions) or use per-account
//! tokens; every request is authenticated before its body is read; bodies,
//! headers, time and connections are bounded; every error is JSON. The
//! OpenAPI document at `/api/openapi.json` is generated from the handlers.

pub mod auth;
pub mod drafts;
pub mod error;
pub mod live;
pub mod openapi;
pub mod ops;
pub mod people;
pub mod programmes;
pub mod speech;
pub mod tls;
pub mod trail;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{FromRequest, Request};
use axum::middleware;
use axum::routing::{delete, get, patch, post};
use axum::Router;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

pub use error::ApiError;
pub use ops::OFFLINE_AFTER_MS;

use crate::workflow::Workflow;

/// Bodies of JSON endpoints.
pub const JSON_BODY_LIMIT: usize = 64 * 1024;
/// Bodies of the revocation endpoint (a PEM list).
pub const REVOCATION_BODY_LIMIT: usize = 256 * 1024;
/// Headers must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A body that sends nothing for this long is dropped.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// No request takes longer than this (a large upload included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// Password hashes computed at once (Argon2id takes 19 MiB each).
pub const MAX_HASHING: usize = 4;
/// Largest header block.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

#[derive(Clone)]
pub struct ApiState {
    pub workflow: Arc<Workflow>,
    pub name: Arc<String>,
    pub expiry_warning: Duration,
    pub max_upload_bytes: u64,
    pub hashing: Arc<Semaphore>,
    /// SHA-256 of the one-time setup code, while no account exists.
    pub setup: Arc<Mutex<Option<[u8; 32]>>>,
    pub auth_failures: Arc<AtomicU64>,
    /// Served over HTTPS: cookies are Secure, answers carry HSTS.
    pub secure_cookies: bool,
    /// Names and map places of areas and terminals (the console's).
    pub places: Arc<crate::console::places::Places>,
    /// The console certificate's fingerprint, when served over HTTPS.
    pub tls_fingerprint: Option<String>,
    /// Turns true when the platform stops: live streams end, so the
    /// orderly shutdown need not wait for them.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Alerts from above (`[gateway]`), when configured.
    pub gateway: Option<Arc<crate::alerts::Gateway>>,
}

/// Runs store, hashing and signing work off the runtime's threads.
pub async fn blocking<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Into::into),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// The most of a refused request's body read (and thrown away, never
/// looked at) before the refusal is sent, and for how long.
pub const DISCARD_MAX_BYTES: usize = 1 << 20;
pub const DISCARD_MAX_TIME: Duration = Duration::from_secs(2);

/// Reads and drops what a request refused before its body (no
/// credentials) has sent, up to [`DISCARD_MAX_BYTES`] and
/// [`DISCARD_MAX_TIME`]: a client still sending its body when the refusal
/// comes would otherwise see the connection reset, not the 401 that says
/// why. Nothing is parsed or kept; the connection closes after the answer.
pub async fn discard_body(body: axum::body::Body) {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut seen = 0usize;
    let _ = tokio::time::timeout(DISCARD_MAX_TIME, async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > DISCARD_MAX_BYTES {
                break;
            }
        }
    })
    .await;
}

impl From<crate::audit::AuditError> for ApiError {
    fn from(e: crate::audit::AuditError) -> Self {
        ApiError::internal(e.to_string())
    }
}

impl From<crate::drafts::DraftStoreError> for ApiError {
    fn from(e: crate::drafts::DraftStoreError) -> Self {
        crate::workflow::WorkflowError::from(e).into()
    }
}

/// `Json` whose rejection is the API's JSON error, naming what is wrong.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(r) => Err(match r.status() {
                axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                    r.status(),
                    "too_large",
                    format!(
                        "the body is too large: the limit is {} kB",
                        JSON_BODY_LIMIT / 1024
                    ),
                    format!("请求体过大：上限 {} kB", JSON_BODY_LIMIT / 1024),
                ),
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
                    r.status(),
                    "unsupported_media_type",
                    "expected a JSON body (Content-Type: application/json)",
                    "请求体应为 JSON（Content-Type: application/json）",
                ),
                status => ApiError::new(
                    status,
                    "invalid",
                    r.body_text(),
                    "请求格式错误（应为 JSON）",
                ),
            }),
        }
    }
}

/// A JSON body that may be left empty (then `T::default()`).
pub fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid",
            format!("the body is not the JSON expected: {e}"),
            "请求格式错误（应为 JSON）",
        )
    })
}

pub fn router(state: ApiState) -> Router {
    use axum::extract::DefaultBodyLimit;
    use axum::http::{header, HeaderValue};
    use tower_http::set_header::SetResponseHeaderLayer as Set;
    let uploads = DefaultBodyLimit::disable;
    let public = Router::new()
        .route("/api/health", get(ops::health))
        .route("/api/openapi.json", get(openapi::document))
        .route("/api/login", post(people::login))
        .route("/api/setup", post(people::setup))
        // A CAP source authenticates with its own token, before the body.
        .route(
            "/api/alerts/cap",
            post(crate::alerts::cap_http::ingest).layer(uploads()),
        );
    let signed_in = Router::new()
        .route("/api/session", get(people::session))
        .route("/api/session/password", post(people::change_password))
        .route("/api/logout", post(people::logout))
        .route("/api/accounts", get(people::list).post(people::create))
        .route(
            "/api/accounts/{name}",
            patch(people::update).delete(people::remove),
        )
        .route("/api/accounts/{name}/tokens", post(people::add_token))
        .route(
            "/api/accounts/{name}/tokens/{id}",
            delete(people::revoke_token),
        )
        .route(
            "/api/drafts",
            get(drafts::list).post(drafts::create).layer(uploads()),
        )
        .route(
            "/api/drafts/{id}",
            get(drafts::get).put(drafts::edit).layer(uploads()),
        )
        .route("/api/drafts/{id}/audio", get(drafts::audio))
        .route("/api/drafts/{id}/submit", post(drafts::submit))
        .route("/api/drafts/{id}/approve", post(drafts::approve))
        .route("/api/drafts/{id}/reject", post(drafts::reject))
        .route("/api/drafts/{id}/withdraw", post(drafts::withdraw))
        .route(
            "/api/broadcasts",
            get(ops::list).post(drafts::issue).layer(uploads()),
        )
        .route("/api/programmes", get(programmes::list))
        .route("/api/programmes/{id}/withdraw", post(programmes::withdraw))
        .route("/api/programmes/{id}/revise", post(programmes::revise))
        .route("/api/plan", get(programmes::plan))
        .route("/api/speech/preview", post(speech::preview))
        .route(
            "/api/quiet-hours",
            get(programmes::quiet).put(programmes::set_quiet),
        )
        .route("/api/broadcasts/{id}/cancel", post(ops::cancel))
        .route("/api/broadcasts/{id}/silence", post(ops::silence))
        .route("/api/status", get(ops::status))
        .route("/api/terminals", get(ops::terminals))
        .route("/api/commands", post(ops::command))
        .route("/api/live", get(live::upgrade))
        .route("/api/security-events", get(ops::security_events))
        .route(
            "/api/revocations",
            get(ops::revocations)
                .post(ops::revoke)
                .layer(DefaultBodyLimit::max(REVOCATION_BODY_LIMIT)),
        )
        .route("/api/alerts/feed", get(crate::alerts::cap_http::feed))
        .route("/api/alerts/cap/{id}", get(crate::alerts::cap_http::one))
        .route("/api/audit", get(trail::entries))
        .route("/api/audit/export", get(trail::export))
        .route("/metrics", get(ops::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    let hsts = state.secure_cookies.then(|| {
        Set::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        )
    });
    public
        .merge(signed_in)
        .merge(crate::console::router())
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            BODY_IDLE_TIMEOUT,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(middleware::from_fn(error::json_errors))
        // On every answer: nothing is sniffed, framed, cached or sent
        // elsewhere as a referrer; no script or resource loads from anywhere.
        .layer(Set::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        // The console's pages set their own (scripts and styles from here).
        .layer(Set::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ))
        .layer(Set::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(Set::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(tower::util::option_layer(hsts))
        .with_state(state)
}

/// One HTTP/1.1 connection (upgradeable: live voice is a WebSocket), bounded
/// as `serve` says, until it ends or `stop` turns true (then it finishes
/// what it is answering).
async fn serve_connection<I, S>(io: I, service: S, mut stop: tokio::sync::watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES.max(8192));
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves: HTTP/1.1 (over
/// TLS when `tls` is given), at most `MAX_CONNECTIONS` at once, the TLS
/// handshake and headers each within `HEADER_TIMEOUT`, headers of at most
/// `MAX_HEADER_BYTES`; then lets the requests in hand finish (up to 10 s).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    use hyper_util::rt::TokioIo;
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Connections (upgradeable: live voice is a WebSocket) are told to
    // finish when `stop` turns true, and waited for through `conns`.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!("HTTP accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(auth::ClientAddr(peer));
                let mut app = app.clone();
                async move {
                    use tower::Service;
                    app.call(req.map(axum::body::Body::new)).await
                }
            });
        let stopping = stop.clone();
        let acceptor = acceptor.clone();
        conns.spawn(async move {
            match acceptor {
                None => serve_connection(TokioIo::new(stream), service, stopping).await,
                Some(acceptor) => {
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    serve_connection(TokioIo::new(tls), service, stopping).await
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while conns.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        tracing::warn!("HTTP requests still running after 10 s at shutdown: dropped");
        conns.abort_all();
    }
}
