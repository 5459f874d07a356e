//! Live voice over a WebSocket: `GET /api/live` (upgrade), authenticated
//! like every call before anything is read (a browser session also gives
//! its CSRF token as `?csrf=`, since a WebSocket carries no custom header).
//!
//! 1. The client sends one text message: the broadcast's fields as JSON
//!    (those of a draft form: `areas`, `class`, `severity`, `title`, …),
//!    `format` (`pcm16`: little-endian 16-bit mono at 16 kHz, any whole
//!    number of samples per message; `opus`: one 20 ms 16 kHz mono Opus
//!    frame per message), and, when the policy asks for it, `approver`:
//!    `{"name", "password"}` of the approver present.
//! 2. The platform answers `{"state":"on_air","id":…}` (or an error naming
//!    the field, and closes), then takes binary messages.
//! 3. `{"end":true}`, a close, or 5 s without audio ends it with the
//!    signed end marker; the answer is `{"state":"ended",…}`.
//!
//! The audio is signed on a blocking thread of its own (behind a channel),
//! never on the socket's task.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;

use super::auth::Caller;
use super::error::ApiError;
use super::ApiState;
use crate::accounts::LoginRefused;
use crate::audit::{Outcome, Record};
use crate::drafts::DraftFields;
use crate::live::{LiveBroadcast, LiveSummary};

/// Largest WebSocket message: a second of PCM is 32 000 bytes.
pub const MAX_LIVE_MESSAGE: usize = 64 * 1024;
/// A source silent this long is ended.
pub const SOURCE_TIMEOUT: Duration = Duration::from_secs(5);
/// The open message must come within this.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
pub struct LiveQuery {
    csrf: Option<String>,
}

#[derive(Deserialize)]
struct Approver {
    name: String,
    password: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Pcm16,
    Opus,
}

/// `GET /api/live`: the upgrade, once the caller is known and allowed.
pub async fn upgrade(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<LiveQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if let Some(csrf) = &caller.csrf {
        use subtle::ConstantTimeEq;
        let given = q.csrf.unwrap_or_default();
        if !bool::from(given.as_bytes().ct_eq(csrf.as_bytes())) {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "csrf",
                "this session's CSRF token is missing or wrong (query parameter csrf)",
                "缺少或错误的 CSRF 令牌，请刷新页面后重试",
            ));
        }
    }
    caller.require(&[crate::accounts::Role::Drafter, crate::accounts::Role::Clerk])?;
    Ok(ws
        .max_message_size(MAX_LIVE_MESSAGE)
        .max_frame_size(MAX_LIVE_MESSAGE)
        .on_upgrade(move |socket| session(s, caller, socket)))
}

async fn send_json(socket: &mut WebSocket, v: serde_json::Value) {
    let _ = socket.send(WsMessage::Text(v.to_string().into())).await;
}

async fn refuse(socket: &mut WebSocket, e: ApiError) {
    send_json(socket, e.json()).await;
    let _ = socket.send(WsMessage::Close(None)).await;
}

async fn session(s: ApiState, caller: Caller, mut socket: WebSocket) {
    let open = match tokio::time::timeout(OPEN_TIMEOUT, socket.recv()).await {
        Ok(Some(Ok(WsMessage::Text(t)))) => t,
        _ => {
            refuse(
                &mut socket,
                ApiError::invalid(
                    "open",
                    "the first message must be the live broadcast's fields as JSON",
                    "实时喊话请求有误",
                ),
            )
            .await;
            return;
        }
    };
    let live = match open_live(&s, &caller, &open).await {
        Ok(l) => l,
        Err(e) => return refuse(&mut socket, e).await,
    };
    let (live, format) = live;
    let id = live.id();
    send_json(
        &mut socket,
        serde_json::json!({
            "state": "on_air",
            "id": id.to_string(),
            "playout_delay_ms": s.workflow.live_delay_ms,
        }),
    )
    .await;

    // The signing thread: audio in through a bounded channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(256);
    let signer = tokio::task::spawn_blocking(move || {
        let mut live = live;
        let mut failure = None;
        while let Some(msg) = rx.blocking_recv() {
            let r = match format {
                Format::Opus => live.push_opus(msg),
                Format::Pcm16 => {
                    let pcm: Vec<f32> = msg
                        .chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
                        .collect();
                    live.push_pcm(&pcm)
                }
            };
            if let Err(e) = r {
                failure = Some(e.to_string());
                break;
            }
        }
        (live.finish(), failure)
    });

    let mut why = "the speaker ended it";
    loop {
        let msg = match tokio::time::timeout(SOURCE_TIMEOUT, socket.recv()).await {
            Err(_) => {
                why = "no audio for 5 s";
                break;
            }
            Ok(None) | Ok(Some(Err(_))) => {
                why = "the connection was lost";
                break;
            }
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            WsMessage::Binary(b) => {
                if format == Format::Pcm16 && b.len() % 2 != 0 {
                    send_json(
                        &mut socket,
                        ApiError::invalid(
                            "audio",
                            "pcm16: a message holds whole 16-bit samples",
                            "实时喊话请求有误",
                        )
                        .json(),
                    )
                    .await;
                    why = "bad audio";
                    break;
                }
                if tx.send(b.to_vec()).await.is_err() {
                    why = "the audio could not be signed";
                    break;
                }
            }
            WsMessage::Text(t) if t.contains("\"end\"") => break,
            WsMessage::Close(_) => {
                why = "the connection was closed";
                break;
            }
            _ => {}
        }
    }
    drop(tx);
    let (summary, failure) = match signer.await {
        Ok((Ok(summary), failure)) => (summary, failure),
        Ok((Err(e), _)) => (LiveSummary::default(), Some(e.to_string())),
        Err(e) => (LiveSummary::default(), Some(e.to_string())),
    };
    let record = Record::new(caller.name(), "live.end", format!("broadcast {id}")).detail(format!(
        "{why}; {} frames in {} segments, {} dropped, {} gaps{}",
        summary.frames,
        summary.segments,
        summary.dropped,
        summary.gaps,
        failure
            .as_deref()
            .map(|f| format!("; {f}"))
            .unwrap_or_default()
    ));
    let record = if failure.is_some() {
        record.outcome(Outcome::Failed)
    } else {
        record
    };
    let wf = s.workflow.clone();
    let _ = tokio::task::spawn_blocking(move || wf.record(record)).await;
    send_json(
        &mut socket,
        serde_json::json!({
            "state": "ended",
            "id": id.to_string(),
            "why": why,
            "frames": summary.frames,
            "dropped": summary.dropped,
            "gaps": summary.gaps,
            "error": failure,
        }),
    )
    .await;
    let _ = socket.send(WsMessage::Close(None)).await;
}

/// Checks the open message and the approver present, then opens.
async fn open_live(
    s: &ApiState,
    caller: &Caller,
    open: &str,
) -> Result<(LiveBroadcast, Format), ApiError> {
    let v: serde_json::Value = serde_json::from_str(open).map_err(|e| {
        ApiError::invalid(
            "open",
            format!("the open message is not JSON: {e}"),
            "实时喊话请求有误",
        )
    })?;
    let obj = v.as_object().ok_or_else(|| {
        ApiError::invalid(
            "open",
            "the open message must be a JSON object",
            "实时喊话请求有误",
        )
    })?;
    let format = match obj.get("format").and_then(|f| f.as_str()) {
        Some("pcm16") | None => Format::Pcm16,
        Some("opus") => Format::Opus,
        Some(other) => {
            return Err(ApiError::invalid(
                "format",
                format!("format {other:?}: pcm16 or opus"),
                "实时喊话请求有误",
            ))
        }
    };
    let fields: HashMap<String, String> = obj
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "format" | "approver"))
        .filter_map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => return None,
            };
            Some((k.clone(), s))
        })
        .collect();
    let reach = s.workflow.reach(&caller.account);
    let get = |k: &str| fields.get(k).cloned();
    let fields = DraftFields::parse(&get, &reach, (s.workflow.now)())?;
    let approver = match obj.get("approver") {
        None | Some(serde_json::Value::Null) => None,
        Some(a) => {
            let a: Approver = serde_json::from_value(a.clone()).map_err(|e| {
                ApiError::invalid(
                    "approver",
                    format!("approver: {{\"name\", \"password\"}} expected: {e}"),
                    "实时喊话请求有误",
                )
            })?;
            Some(check_approver(s, a).await?)
        }
    };
    let missing = approver.is_none() && s.workflow.policy.live_needs_approver(fields.class);
    let wf = s.workflow.clone();
    let by = caller.account.clone();
    let live = super::blocking(move || wf.open_live(&by, &fields, approver.as_ref()))
        .await
        .map_err(|e| {
            if missing {
                let mut e = e.field("approver");
                e.body.message_zh = "此类实时喊话须有审核人在场：请输入审核人的账户和密码".into();
                e
            } else {
                e
            }
        })?;
    Ok((live, format))
}

/// The approver present proves it with their password (a failure counts
/// towards their lock-out and is audited, like a login).
async fn check_approver(s: &ApiState, a: Approver) -> Result<crate::accounts::Account, ApiError> {
    match super::people::check_password(s, a.name.clone(), a.password).await? {
        Ok(account) => Ok(account),
        Err(refused) => {
            let tried: String = a.name.chars().take(64).collect();
            let r = Record::new(&tried, "login.failed", format!("account {tried}"))
                .outcome(Outcome::Refused)
                .detail("as the approver present for a live broadcast".to_string());
            let wf = s.workflow.clone();
            let _ = tokio::task::spawn_blocking(move || wf.record(r)).await;
            Err(match refused {
                LoginRefused::WrongCredentials => ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    "approver_refused",
                    "the approver present: wrong name or password",
                    "在场审核人的用户名或密码错误",
                ),
                LoginRefused::Locked { .. } => ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    "approver_refused",
                    "the approver present: that account is locked",
                    "在场审核人的账户已锁定",
                ),
            }
            .field("approver"))
        }
    }
}
