//! The web console: pages rendered on the server (askama, compile-time
//! templates), a small script and style sheet embedded in the binary, live
//! figures over Server-Sent Events. Every change a page makes goes through
//! the JSON API with the session's CSRF token; the pages only read.

pub mod from_above;
pub mod i18n;
pub mod live;
pub mod pages;
pub mod places;
pub mod programmes;
pub mod view;

use std::sync::LazyLock;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::accounts::Role;
use crate::api::auth::{self, Caller};
use crate::api::ApiState;
use i18n::Lang;

pub const LANG_COOKIE: &str = "ebs_lang";

/// The pages' policy: scripts, styles, media and connections from this
/// origin only, nothing inline, never framed.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; media-src 'self' blob:; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

const SCRIPT: &str = include_str!("../../console/assets/console.js");
const STYLE: &str = include_str!("../../console/assets/console.css");

/// A short hash of the assets: their URLs change when they do.
pub static ASSET_VERSION: LazyLock<String> = LazyLock::new(|| {
    let h = crate::accounts::sha256(format!("{SCRIPT}{STYLE}").as_bytes());
    hex::encode(&h[..6])
});

/// The language the browser chose (cookie), Chinese by default.
pub fn lang_of(headers: &HeaderMap) -> Lang {
    auth::cookie(headers, LANG_COOKIE)
        .and_then(|v| Lang::from_tag(&v))
        .unwrap_or(Lang::Zh)
}

/// The person looking at a page: signed in with a browser session (the
/// pages never take a bearer token), or sent to the login page.
pub struct Viewer {
    pub caller: Caller,
    /// The session's id (from its cookie): live streams check it again.
    pub session_id: String,
    pub csrf: String,
    pub lang: Lang,
    pub path: String,
}

impl Viewer {
    pub fn has(&self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.caller.account.has(*r))
    }
}

impl FromRequestParts<ApiState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &ApiState) -> Result<Self, Response> {
        let lang = lang_of(&parts.headers);
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let to_login = || Redirect::to("/login").into_response();
        let Some(id) = auth::session_cookie(&parts.headers) else {
            return Err(to_login());
        };
        let found = s
            .workflow
            .accounts
            .by_session(&id, (s.workflow.now)())
            .map_err(|e| crate::api::ApiError::from(e).into_response())?;
        match found {
            Some(a) if a.csrf.is_some() => Ok(Viewer {
                session_id: id,
                csrf: a.csrf.clone().unwrap_or_default(),
                caller: Caller {
                    account: a.account,
                    session: a.session,
                    csrf: a.csrf,
                },
                lang,
                path,
            }),
            _ => Err(to_login()),
        }
    }
}

pub fn router() -> Router<ApiState> {
    use tower_http::set_header::SetResponseHeaderLayer as Set;
    // Pages and assets go gzipped to browsers that ask (the terminals page
    // of a full district is 360 kB of HTML); the live streams are not
    // compressed, so each event leaves at once.
    let pages = Router::new()
        .route("/", get(pages::overview))
        .route("/login", get(pages::login))
        .route("/compose", get(pages::compose))
        .route("/review", get(pages::review))
        .route("/programmes", get(programmes::page))
        .route("/from-above", get(from_above::page))
        .route("/terminals", get(pages::terminals))
        .route("/terminals/{serial}", get(pages::terminal))
        .route("/security", get(pages::security))
        .route("/audit", get(pages::audit))
        .route("/accounts", get(pages::accounts))
        .route("/certificates", get(pages::certificates))
        .route("/assets/console.js", get(script))
        .route("/assets/console.css", get(style))
        .layer(tower_http::compression::CompressionLayer::new().gzip(true));
    Router::new()
        .merge(pages)
        .route("/console/live/overview", get(live::overview))
        .route("/console/live/terminals", get(live::terminals))
        .route("/console/live/review", get(live::review))
        .route("/lang", get(switch_lang))
        .layer(Set::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_CSP),
        ))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The URL carries the version: a changed asset has a new URL.
            (header::CACHE_CONTROL, "public, max-age=86400, immutable"),
        ],
        body,
    )
        .into_response()
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

#[derive(Deserialize)]
pub struct LangQuery {
    to: String,
    #[serde(default)]
    back: String,
}

/// Sets the language cookie and goes back to the page (same site only).
async fn switch_lang(State(s): State<ApiState>, Query(q): Query<LangQuery>) -> Response {
    let Some(lang) = Lang::from_tag(&q.to) else {
        return (StatusCode::BAD_REQUEST, "to: zh-CN or en").into_response();
    };
    // A path of this site, in visible ASCII (a header value; what the
    // pages link is percent-encoded), else the overview.
    let local = q.back.starts_with('/')
        && !q.back.starts_with("//")
        && q.back
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && b != b'\\');
    let back = if local { q.back.as_str() } else { "/" };
    let secure = if s.secure_cookies { "; Secure" } else { "" };
    let cookie = format!(
        "{LANG_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Strict{secure}",
        lang.tag()
    );
    let mut r = Redirect::to(back).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}
