//! Server-Sent Events: the overview's and the terminals page's live parts,
//! rendered by the same templates as the page and sent when they change
//! (checked every second), and the review queue's arrivals and departures,
//! so a page never needs reloading. A stream ends when its session does.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};

use super::i18n::Lang;
use super::pages::{
    lines_digest, overview_live, terminal_delta, terminal_lines, terminals_live, TerminalLine,
    CANCEL_ROLES,
};
use super::Viewer;
use crate::api::ApiState;

/// How often the live parts are checked for changes.
pub const TICK: Duration = Duration::from_secs(1);
/// How often a stream checks that its session still holds.
pub const SESSION_CHECK: Duration = Duration::from_secs(15);

#[derive(Clone, Copy)]
enum Part {
    Overview {
        can_cancel: bool,
    },
    /// `shown`: the digest of the list the page was rendered with.
    Terminals {
        shown: Option<[u8; 32]>,
    },
    /// The drafts waiting for review that the viewer may see.
    Review,
}

impl Part {
    fn event(self) -> &'static str {
        match self {
            Part::Overview { .. } => "overview",
            Part::Terminals { .. } => "terminals",
            Part::Review => "review",
        }
    }
}

/// What one tick sends: nothing, the whole rendered part, or (terminals)
/// only the rows that changed.
enum Update {
    Same,
    Html(String),
    Delta(String),
}

/// The terminals list as last sent: rows by serial.
type Sent = std::collections::HashMap<String, TerminalLine>;

/// What a stream remembers of what it sent.
#[derive(Default)]
struct Memory {
    /// Digest of the last fragment sent.
    last: Option<[u8; 32]>,
    /// The terminals list as last sent.
    sent: Option<Sent>,
    /// The review queue's drafts as last sent.
    queue: Option<std::collections::BTreeSet<u64>>,
    /// The audit trail's length when the queue was last read, and when:
    /// every change of a draft is audited, so the draft store is read
    /// again only after a new entry (or every `QUEUE_RECHECK` anyway).
    queue_read: Option<(u64, std::time::Instant)>,
}

/// The review queue is read again at least this often.
pub const QUEUE_RECHECK: Duration = Duration::from_secs(10);

fn tick(
    s: &ApiState,
    lang: Lang,
    part: Part,
    viewer: &crate::accounts::Account,
    memory: &mut Memory,
) -> Update {
    let Memory {
        last,
        sent,
        queue,
        queue_read,
    } = memory;
    match part {
        Part::Review => {
            let entries = s.workflow.audit.len();
            if queue_read.is_some_and(|(n, at)| n == entries && at.elapsed() < QUEUE_RECHECK) {
                return Update::Same;
            }
            *queue_read = Some((entries, std::time::Instant::now()));
            let Ok(cards) = super::pages::review_queue(s, viewer, lang) else {
                return Update::Same;
            };
            let ids: std::collections::BTreeSet<u64> = cards.iter().map(|(id, _)| *id).collect();
            if queue.as_ref() == Some(&ids) {
                return Update::Same;
            }
            // The cards of drafts not sent before (all of them at first:
            // the page keeps those it has).
            let new: serde_json::Map<String, serde_json::Value> = cards
                .into_iter()
                .filter(|(id, _)| !queue.as_ref().is_some_and(|q| q.contains(id)))
                .map(|(id, html)| (id.to_string(), html.into()))
                .collect();
            *queue = Some(ids.clone());
            Update::Delta(serde_json::json!({ "ids": ids, "cards": new }).to_string())
        }
        Part::Overview { can_cancel } => {
            let Ok(html) = overview_live(s, lang, can_cancel) else {
                return Update::Same;
            };
            let digest = crate::accounts::sha256(html.as_bytes());
            if *last == Some(digest) {
                return Update::Same;
            }
            *last = Some(digest);
            Update::Html(html)
        }
        Part::Terminals { shown } => {
            let lines = terminal_lines(s);
            if sent.is_none() && shown == Some(lines_digest(&lines)) {
                // The page shows this already: from here on, changes only.
                *sent = Some(lines.into_iter().map(|l| (l.serial.clone(), l)).collect());
                return Update::Same;
            }
            let same_set = sent.as_ref().is_some_and(|m| {
                m.len() == lines.len() && lines.iter().all(|l| m.contains_key(&l.serial))
            });
            if !same_set {
                // New terminals (or the first tick): the whole part, map included.
                let Ok((html, _)) = terminals_live(s, lang) else {
                    return Update::Same;
                };
                *sent = Some(lines.into_iter().map(|l| (l.serial.clone(), l)).collect());
                return Update::Html(html);
            }
            let Some(m) = sent.as_mut() else {
                return Update::Same;
            };
            let t = super::i18n::catalog(lang);
            let mut changed = Vec::new();
            for l in lines {
                if m.get(&l.serial).map(TerminalLine::listed) != Some(l.listed()) {
                    changed.push(terminal_delta(&l, t));
                    m.insert(l.serial.clone(), l);
                }
            }
            if changed.is_empty() {
                return Update::Same;
            }
            let mut counts = std::collections::BTreeMap::new();
            for st in super::view::TermState::ALL {
                counts.insert(st.name(), m.values().filter(|l| l.state == st).count());
            }
            Update::Delta(serde_json::json!({ "rows": changed, "counts": counts }).to_string())
        }
    }
}

struct Feed {
    s: ApiState,
    lang: Lang,
    part: Part,
    session: String,
    viewer: crate::accounts::Account,
    memory: Memory,
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
        viewer: v.caller.account.clone(),
        memory: Memory::default(),
        checked: tokio::time::Instant::now(),
        first: true,
    };
    stream::unfold(f, |mut f| async move {
        loop {
            if !f.first {
                let mut stopping = f.s.stopping.clone();
                tokio::select! {
                    _ = tokio::time::sleep(TICK) => {}
                    _ = stopping.wait_for(|s| *s) => return None,
                }
            }
            if *f.s.stopping.borrow() {
                return None;
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
            let viewer = f.viewer.clone();
            let mut memory = std::mem::take(&mut f.memory);
            // Rendering reads the relay's book under its lock and the
            // draft store: off the runtime's threads.
            let done = tokio::task::spawn_blocking(move || {
                let u = tick(&s, lang, part, &viewer, &mut memory);
                (u, memory)
            })
            .await;
            let Ok((update, memory)) = done else {
                continue;
            };
            f.memory = memory;
            let event = match update {
                Update::Same => continue,
                Update::Html(html) => Event::default().event(part.event()).data(html),
                Update::Delta(json) if matches!(part, Part::Review) => {
                    Event::default().event(part.event()).data(json)
                }
                Update::Delta(json) => Event::default()
                    .event(format!("{}-delta", part.event()))
                    .data(json),
            };
            return Some((Ok(event), f));
        }
    })
}

fn sse(s: ApiState, v: Viewer, part: Part) -> Response {
    let session = v.session_id.clone();
    Sse::new(feed(s, v, session, part))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

pub async fn overview(State(s): State<ApiState>, v: Viewer) -> Response {
    let part = Part::Overview {
        can_cancel: v.has(CANCEL_ROLES),
    };
    sse(s, v, part)
}

#[derive(serde::Deserialize)]
pub struct TerminalsQuery {
    /// The digest of the list the page shows (hex).
    #[serde(default)]
    v: String,
}

pub async fn terminals(
    State(s): State<ApiState>,
    axum::extract::Query(q): axum::extract::Query<TerminalsQuery>,
    v: Viewer,
) -> Response {
    let shown = hex::decode(&q.v)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok());
    sse(s, v, Part::Terminals { shown })
}

pub async fn review(State(s): State<ApiState>, v: Viewer) -> Response {
    sse(s, v, Part::Review)
}
