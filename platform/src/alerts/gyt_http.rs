//! The GY/T 384 interface: upper platforms POST EBD packages (a raw tar,
//! or a multipart form holding one, as vendors' implementations send
//! them) on a listener of its own. The sender is authenticated (its token
//! or its address) before a byte of the body is read; the package is then
//! verified before it is parsed (`gateway::gyt::receive`), and the answer
//! is an EBD package of ours, signed with the district's SM2 key: an
//! EBDResponse with the standard's result code, or an EBMStateResponse.

use std::sync::Arc;

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use gateway::ebd::{self, EbdBody, Envelope, ResultCode, StateReport};
use gateway::{Alert, Format};

use super::intake::{Authenticated, Done};
use super::{Gateway, Source};
use crate::audit::{Outcome, Record};

/// The most a request body may hold: a package and a form's framing.
pub const MAX_BODY_BYTES: usize = gateway::package::MAX_PACKAGE_BYTES + 64 * 1024;

/// The listener's routes: a POST to any path (vendors differ in theirs).
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/", post(receive))
        .route("/{*path}", post(receive))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            crate::api::BODY_IDLE_TIMEOUT,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            crate::api::REQUEST_TIMEOUT,
        ))
        .with_state(gateway)
}

fn plain(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.to_string(),
    )
        .into_response()
}

async fn receive(State(g): State<Arc<Gateway>>, req: Request) -> Response {
    let Some(source) = g.source_of(Format::Gyt, &req) else {
        crate::api::discard_body(req.into_body()).await;
        let mut refusal = plain(
            StatusCode::UNAUTHORIZED,
            "unauthenticated: no configured source has this token or address",
        );
        refusal.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return refusal;
    };
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let body = if multipart {
        read_multipart(req).await
    } else {
        axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map(|b| b.to_vec())
            .map_err(|_| format!("the body is over {MAX_BODY_BYTES} bytes, or broke off"))
    };
    let g2 = g.clone();
    let answer = tokio::task::spawn_blocking(move || match body {
        Ok(bytes) => handle(&g2, &source, &bytes),
        Err(e) => refuse(
            &g2,
            &source,
            ResultCode::ParseFailure,
            &format!("package: {e}"),
            None,
            None,
        ),
    })
    .await;
    match answer {
        Ok(package) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-tar")],
            package,
        )
            .into_response(),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The first file of a multipart form (a package), bounded.
async fn read_multipart(req: Request) -> Result<Vec<u8>, String> {
    let mut form = Multipart::from_request(req, &())
        .await
        .map_err(|e| format!("malformed multipart form: {}", e.body_text()))?;
    while let Some(mut field) = form
        .next_field()
        .await
        .map_err(|e| format!("malformed multipart form: {}", e.body_text()))?
    {
        if field.file_name().is_none() {
            continue;
        }
        let mut out = Vec::new();
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| format!("malformed multipart form: {}", e.body_text()))?
        {
            if out.len() + chunk.len() > gateway::package::MAX_PACKAGE_BYTES {
                return Err(format!(
                    "over {} bytes; the limit is {}",
                    out.len() + chunk.len(),
                    gateway::package::MAX_PACKAGE_BYTES
                ));
            }
            out.extend_from_slice(&chunk);
        }
        return Ok(out);
    }
    Err("the form holds no file".into())
}

impl Gateway {
    /// A fresh id for an EBD of ours: our resource code and a sequence.
    pub(super) fn next_ebd_id(&self) -> String {
        let seq = self
            .workflow
            .relay
            .store()
            .db()
            .generate_id()
            .unwrap_or_else(|_| crate::now_ms() as u64);
        format!("{}{:016}", self.resource_code, seq % 10u64.pow(16))
    }

    /// Our EBD `xml` of id `id`, packed with its SM2 signature.
    pub(super) fn pack(&self, id: &str, xml: &str) -> Vec<u8> {
        gateway::gyt::signed_package(id, xml, &self.key, &ebd::format_time(crate::now_ms()), &[])
    }

    fn response(&self, to: &str, related: Option<&str>, code: ResultCode, desc: &str) -> Vec<u8> {
        self.counters.count(code);
        let id = self.next_ebd_id();
        let xml = ebd::response(
            &Envelope {
                id: &id,
                src: &self.resource_code,
                dest: to,
                time_ms: crate::now_ms(),
                related,
            },
            code,
            desc,
        );
        self.pack(&id, &xml)
    }
}

/// Refuses a package: recorded, counted, answered with `code`.
fn refuse(
    g: &Gateway,
    source: &Source,
    code: ResultCode,
    reason: &str,
    ebd_id: Option<&str>,
    cert_sn: Option<&str>,
) -> Vec<u8> {
    tracing::warn!(source = %source.name, code = code.code(), "GY/T package refused: {reason}");
    let r = Record::new(
        &source.actor(),
        "alert.receive",
        format!("EBD {}", ebd_id.unwrap_or("(unread)")),
    )
    .outcome(Outcome::Refused)
    .detail(format!(
        "result code {}: {reason}{}",
        code.code(),
        cert_sn
            .map(|c| format!("; certificate {c}"))
            .unwrap_or_default()
    ));
    if let Err(e) = g.workflow.record(r) {
        tracing::error!("recording a refused package: {e}");
    }
    g.response(&source.name, ebd_id, code, reason)
}

/// A package from an authenticated source: verified, then acted on.
pub fn handle(g: &Gateway, source: &Source, bytes: &[u8]) -> Vec<u8> {
    let v = match gateway::gyt::receive(bytes, &g.trust) {
        Ok(v) => v,
        Err(r) => {
            return refuse(
                g,
                source,
                r.code,
                &r.reason,
                r.ebd_id.as_deref(),
                r.cert_sn.as_deref(),
            )
        }
    };
    if v.cert_sn != source.cert_sn {
        return refuse(
            g,
            source,
            ResultCode::SignatureFailed,
            &format!(
                "signed with certificate {} ({}), but posted as {}",
                v.cert_sn, v.sender, source.name
            ),
            Some(&v.ebd.id),
            Some(&v.cert_sn),
        );
    }
    let now_s = ((g.workflow.now)() / 1000).max(0) as u64;
    if let Err((from, until)) = source.certificate_valid_at(now_s) {
        return refuse(
            g,
            source,
            ResultCode::SignatureFailed,
            &format!(
                "certificate {} is valid from {} to {}, not now",
                v.cert_sn,
                crate::audit::china_time(from as i64 * 1000),
                crate::audit::china_time(until as i64 * 1000)
            ),
            Some(&v.ebd.id),
            Some(&v.cert_sn),
        );
    }
    let to = v.ebd.src.clone();
    let related = v.ebd.id.clone();
    match v.ebd.body {
        EbdBody::Ebm(m) => {
            let audio_covered = v.audio.as_ref().is_some_and(|a| a.signed);
            let alert = Alert::from_ebm(&m, v.audio.map(|a| (a.name, a.bytes)));
            let auth = Authenticated {
                how: format!(
                    "SM2 signature verified (certificate {}, EBD {})",
                    v.cert_sn, related
                ),
                audio_covered,
            };
            match g.take(source, alert, &auth) {
                Ok(t) => {
                    if matches!(t.done, Done::Relayed | Done::Review) {
                        g.owe_reports(source, &m.id, &to);
                    }
                    g.response(&to, Some(&related), ResultCode::Verified, &t.done.zh())
                }
                Err(e) => g.response(&to, Some(&related), e.code(), &e.to_string()),
            }
        }
        EbdBody::ConnectionCheck => {
            // Verified like any other; not recorded (they come every
            // minute), only counted.
            g.response(&to, Some(&related), ResultCode::Verified, "连接正常")
        }
        EbdBody::EbmStateRequest { ebm_id } => match g.state_of(source, &ebm_id) {
            Ok((state, desc, [terminals, playing, finished])) => {
                g.counters.count(ResultCode::Verified);
                let id = g.next_ebd_id();
                let xml = ebd::state_response(
                    &Envelope {
                        id: &id,
                        src: &g.resource_code,
                        dest: &to,
                        time_ms: crate::now_ms(),
                        related: Some(&related),
                    },
                    &StateReport {
                        ebm_id: &ebm_id,
                        state,
                        desc: &desc,
                        terminals,
                        playing,
                        finished,
                    },
                );
                g.pack(&id, &xml)
            }
            Err(e) => g.response(&to, Some(&related), e.code(), &e.to_string()),
        },
        EbdBody::Other | EbdBody::Response { .. } | EbdBody::StateResponse { .. } => {
            let r = Record::new(&source.actor(), "alert.receive", format!("EBD {related}"))
                .detail(format!("{}: verified; not acted on here", v.ebd.kind));
            if let Err(e) = g.workflow.record(r) {
                tracing::error!("recording a package: {e}");
            }
            g.response(&to, Some(&related), ResultCode::Received, "已接收")
        }
    }
}
