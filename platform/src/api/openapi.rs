//! The OpenAPI 3 document, generated from the handlers' annotations
//! (utoipa), served at `/api/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{drafts, error, ops, people, programmes, speech, trail};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "应急广播播控平台 API (emergency broadcast platform)",
        description = "Every endpoint but health, login, setup, the CAP intake (a source's own token) and this document needs a session cookie (with X-CSRF-Token on changes) or a bearer token. Errors are JSON: {error, message, message_zh, field}."
    ),
    paths(
        ops::health, people::login, people::setup, people::logout, people::session,
        people::change_password, people::list, people::create, people::update, people::remove,
        people::add_token, people::revoke_token,
        drafts::list, drafts::create, drafts::get, drafts::edit, drafts::audio, drafts::submit,
        drafts::approve, drafts::reject, drafts::withdraw, drafts::issue,
        ops::list, ops::cancel, ops::silence, ops::status, ops::terminals, ops::command, ops::security_events,
        ops::revocations, ops::revoke, ops::metrics,
        trail::entries, trail::export,
        programmes::list, programmes::withdraw, programmes::revise, programmes::plan,
        programmes::quiet, programmes::set_quiet, speech::preview,
        crate::alerts::cap_http::ingest, crate::alerts::cap_http::feed, crate::alerts::cap_http::one,
    ),
    components(schemas(error::ErrorBody, crate::alerts::cap_http::CapAnswer)),
    modifiers(&Security),
    security(("bearer" = []), ("session" = []))
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        c.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                super::auth::SESSION_COOKIE,
            ))),
        );
    }
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
