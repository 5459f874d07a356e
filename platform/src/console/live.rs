//! Server-Sent Events: the overview's and the terminals page's live parts,
//! rendered by the same templates as the page and sent when they change
//! (checked every second), so a page never needs reloading. A stream ends
//! when its session does.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};

use super::i18n::Lang;
use super::pages::{overview_live, terminals_live, CANCEL_ROLES};
use super::Viewer;
use crate::api::ApiState;

/// How often the live parts are checked for changes.
pub const TICK: Duration = Duration::from_secs(1);
/// How often a stream checks that its session still holds.
pub const SESSION_CHECK: Duration = Duration::from_secs(15);

#[derive(Clone, Copy)]
enum Part {
    Overview { can_cancel: bool },
    Terminals,
}

impl Part {
    fn event(self) -> &'static str {
        match self {
            Part::Overview { .. } => "overview",
            Part::Terminals => "terminals",
        }
    }

    fn render(self, s: &ApiState, lang: Lang) -> Option<String> {
        match self {
            Part::Overview { can_cancel } => overview_live(s, lang, can_cancel).ok(),
            Part::Terminals => terminals_live(s, lang).ok(),
        }
    }
}

struct Feed {
    s: ApiState,
    lang: Lang,
    part: Part,
    session: String,
    last: Option<[u8; 32]>,
    checked: tokio::time::Instant,
    first: bool,
}

fn feed(
    s: ApiState,
    v: Viewer,
    session: String,
    part: Part,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let f = Feed {
        s,
        lang: v.lang,
        part,
        session,
        last: None,
        checked: tokio::time::Instant::now(),
        first: true,
    };
    stream::unfold(f, |mut f| async move {
        loop {
            if !f.first {
                tokio::time::sleep(TICK).await;
            }
            f.first = false;
            if f.checked.elapsed() >= SESSION_CHECK {
                f.checked = tokio::time::Instant::now();
                let now = (f.s.workflow.now)();
                match f.s.workflow.accounts.by_session(&f.session, now) {
                    Ok(Some(_)) => {}
                    _ => return None,
                }
            }
            let (s, lang, part) = (f.s.clone(), f.lang, f.part);
            // Rendering reads the relay's book under its lock: off the
            // runtime's threads.
            let html = tokio::task::spawn_blocking(move || part.render(&s, lang))
                .await
                .ok()
                .flatten();
            let Some(html) = html else { continue };
            let digest = crate::accounts::sha256(html.as_bytes());
            if f.last == Some(digest) {
                continue;
            }
            f.last = Some(digest);
            let event = Event::default().event(part.event()).data(html);
            return Some((Ok(event), f));
        }
    })
}

fn sse(s: ApiState, v: Viewer, part: Part, headers: &axum::http::HeaderMap) -> Response {
    let Some(session) = crate::api::auth::session_cookie(headers) else {
        return super::pages::to_login();
    };
    Sse::new(feed(s, v, session, part))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

pub async fn overview(
    State(s): State<ApiState>,
    headers: axum::http::HeaderMap,
    v: Viewer,
) -> Response {
    let part = Part::Overview {
        can_cancel: v.has(CANCEL_ROLES),
    };
    sse(s, v, part, &headers)
}

pub async fn terminals(
    State(s): State<ApiState>,
    headers: axum::http::HeaderMap,
    v: Viewer,
) -> Response {
    sse(s, v, Part::Terminals, &headers)
}
