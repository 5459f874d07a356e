//! Text to speech over HTTP: hear what typed text becomes before drafting
//! it (the console's preview). The answer is the audio as it would be
//! broadcast (ingested and decoded again), with what the voice read.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::ApiError;
use super::{blocking, ApiJson, ApiState};
use crate::accounts::Role;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpeakRequest {
    /// Chinese text, up to 8192 bytes: numbers, dates and times are read
    /// the Chinese way.
    pub text: String,
}

/// The speech of `text` as a WAV file; `X-Pinyin` says what was read.
#[utoipa::path(post, path = "/api/speech/preview", request_body = SpeakRequest,
    responses((status = 200, content_type = "audio/wav", body = Vec<u8>), (status = 400, body = super::error::ErrorBody)))]
pub async fn preview(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    ApiJson(req): ApiJson<SpeakRequest>,
) -> Result<Response, ApiError> {
    c.require(&[Role::Drafter, Role::Clerk])?;
    if req.text.len() > protocol::header::MAX_TEXT_BYTES {
        return Err(ApiError::invalid(
            "text",
            format!(
                "{} bytes; the limit is {} bytes",
                req.text.len(),
                protocol::header::MAX_TEXT_BYTES
            ),
            "正文过长",
        ));
    }
    let wf = s.workflow.clone();
    let (wav, pinyin) = blocking(move || wf.preview_speech(&req.text)).await?;
    // Pinyin is ASCII (letters, tone digits, commas, full stops).
    let pinyin: String = pinyin
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(4096)
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, "audio/wav".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (header::HeaderName::from_static("x-pinyin"), pinyin),
        ],
        wav,
    )
        .into_response())
}
