//! The page handlers: each gathers what its page shows (from `view`, the
//! workflow or the stores) and renders its template. Pages only read;
//! every change goes through `/api` from the page's script.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use certs::AreaCode;
use serde::Deserialize;

use super::i18n::{catalog, Catalog, Lang};
use super::view::{self, TermState};
use super::Viewer;
use crate::accounts::Role;
use crate::api::{blocking, ApiError, ApiState};
use crate::drafts::{Draft, DraftState};
use crate::now_ms;

pub struct NavItem {
    pub href: &'static str,
    pub label: String,
    pub active: bool,
}

/// What every signed-in page shows around its content.
pub struct Chrome {
    pub t: &'static Catalog,
    pub lang: Lang,
    pub platform: String,
    pub tier_key: String,
    pub user: String,
    pub display: String,
    pub roles: String,
    pub csrf: String,
    pub nav: Vec<NavItem>,
    pub path: String,
    pub page: &'static str,
    pub version: &'static str,
    pub script_texts: String,
}

/// `value` as JSON that is safe inside a `<script type="application/json">`
/// element (no `<`, `>` or `&` that could end it).
pub fn json_in_script(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|_| "null".into())
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// The catalogue section the script uses.
pub fn script_texts(t: &Catalog) -> String {
    json_in_script(&t.section("js"))
}

const PAGES: [(&str, &str, &str, &[Role]); 10] = [
    ("overview", "/", "nav.overview", &[]),
    (
        "compose",
        "/compose",
        "nav.compose",
        &[Role::Drafter, Role::Clerk],
    ),
    ("review", "/review", "nav.review", &[]),
    ("programmes", "/programmes", "nav.programmes", &[]),
    ("from_above", "/from-above", "nav.from_above", &[]),
    ("terminals", "/terminals", "nav.terminals", &[]),
    ("security", "/security", "nav.security", &[]),
    (
        "audit",
        "/audit",
        "nav.audit",
        &[Role::Auditor, Role::Admin],
    ),
    ("accounts", "/accounts", "nav.accounts", &[Role::Admin]),
    ("certificates", "/certificates", "nav.certificates", &[]),
];

/// An account's roles by name, in the page's language.
fn roles_text(t: &Catalog, roles: &std::collections::BTreeSet<Role>) -> String {
    roles
        .iter()
        .map(|r| t.role(r).into_owned())
        .collect::<Vec<_>>()
        .join(&t.t("list.sep"))
}

pub fn chrome(s: &ApiState, v: &Viewer, page: &'static str) -> Chrome {
    let t = catalog(v.lang);
    let a = &v.caller.account;
    Chrome {
        t,
        lang: v.lang,
        platform: s.name.to_string(),
        tier_key: format!("tier.{}", s.workflow.relay.tier.name()),
        user: a.name.clone(),
        display: if a.display_name.is_empty() {
            a.name.clone()
        } else {
            a.display_name.clone()
        },
        roles: roles_text(t, &a.roles),
        csrf: v.csrf.clone(),
        nav: PAGES
            .iter()
            .filter(|p| p.3.is_empty() || v.has(p.3))
            // Alerts from above only where a gateway takes them.
            .filter(|p| p.0 != "from_above" || s.gateway.is_some())
            .map(|p| NavItem {
                href: p.1,
                label: t.t(p.2).into_owned(),
                active: p.0 == page,
            })
            .collect(),
        path: v.path.clone(),
        page,
        version: super::ASSET_VERSION.as_str(),
        script_texts: script_texts(t),
    }
}

pub fn render(t: impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => ApiError::internal(format!("rendering a page: {e}")).into_response(),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub t: &'static Catalog,
    /// No account exists yet: the first admin is made here with the
    /// one-time setup code.
    pub setup_open: bool,
    pub lang: Lang,
    pub platform: String,
    pub version: &'static str,
    pub script_texts: String,
}

pub async fn login(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    let lang = super::lang_of(&headers);
    let t = catalog(lang);
    let setup_open = s.setup.lock().map(|g| g.is_some()).unwrap_or(false);
    render(LoginPage {
        t,
        setup_open,
        lang,
        platform: s.name.to_string(),
        version: super::ASSET_VERSION.as_str(),
        script_texts: script_texts(t),
    })
}

/// The overview's live part (also sent over SSE).
#[derive(Template)]
#[template(path = "overview_live.html")]
pub struct OverviewLive {
    pub t: &'static Catalog,
    pub s: view::Summary,
    pub cards: Vec<view::BroadcastCard>,
    pub can_cancel: bool,
}

pub fn overview_live(s: &ApiState, lang: Lang, can_cancel: bool) -> Result<String, ApiError> {
    let t = catalog(lang);
    let relay = &s.workflow.relay;
    let now = now_ms();
    let terms = view::terminals(relay, &s.places, now);
    OverviewLive {
        t,
        cards: view::broadcasts(relay, &s.places, &terms, t, now),
        s: view::summary(relay, &terms),
        can_cancel,
    }
    .render()
    .map_err(|e| ApiError::internal(format!("rendering the overview: {e}")))
}

pub const CANCEL_ROLES: &[Role] = &[Role::Approver, Role::Drafter, Role::Clerk];

#[derive(Template)]
#[template(path = "overview.html")]
pub struct OverviewPage {
    pub c: Chrome,
    pub live: String,
}

pub async fn overview(State(s): State<ApiState>, v: Viewer) -> Response {
    let live = match overview_live(&s, v.lang, v.has(CANCEL_ROLES)) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    render(OverviewPage {
        c: chrome(&s, &v, "overview"),
        live,
    })
}

/// A template of the compose page: fills the form's fields.
#[derive(serde::Serialize)]
pub struct ComposeTemplate {
    pub label: String,
    pub class: &'static str,
    pub severity: u8,
    pub event_type: &'static str,
    pub title: String,
    pub text: String,
    pub valid_minutes: u32,
}

/// Common alerts (the catalogue holds their wording), the all-clear and a
/// drill: (catalogue key, class, severity, event type, minutes).
const TEMPLATES: [(&str, &str, u8, &str, u32); 6] = [
    ("flood", "emergency", 2, "11A01", 120),
    ("typhoon", "emergency", 2, "11B01", 240),
    ("rainstorm", "emergency", 3, "11B03", 120),
    ("chemical", "emergency", 1, "12B01", 120),
    ("all_clear", "emergency", 4, "10000", 30),
    ("drill", "drill", 4, "10000", 30),
];

/// Event types offered (GB/T 35965.1 codes in common use; 10000 is
/// "other"). Names come from the catalogue.
const EVENT_TYPES: [&str; 14] = [
    "10000", "11A01", "11A02", "11B01", "11B03", "11B04", "11B06", "11B09", "11B14", "11B15",
    "11B17", "11D01", "12B01", "13A01",
];

#[derive(Template)]
#[template(path = "compose.html")]
pub struct ComposePage {
    pub c: Chrome,
    pub may_draft: bool,
    pub tree: Vec<view::TreeRow>,
    pub templates: Vec<ComposeTemplate>,
    pub templates_json: String,
    pub event_types: Vec<(&'static str, String)>,
    pub max_upload_mb: u64,
    /// Days of the week for a weekly programme: (1 = Monday, its name).
    pub weekdays: Vec<(u8, String)>,
    /// Today in China (YYYY-MM-DD): a programme's first date by default.
    pub today: String,
}

pub async fn compose(State(s): State<ApiState>, v: Viewer) -> Response {
    let t = catalog(v.lang);
    let relay = &s.workflow.relay;
    let terms = view::terminals(relay, &s.places, now_ms());
    let reach = s.workflow.reach(&v.caller.account);
    let templates: Vec<ComposeTemplate> = TEMPLATES
        .iter()
        .map(
            |(k, class, severity, event_type, minutes)| ComposeTemplate {
                label: t.t(&format!("templates.{k}.label")).into_owned(),
                class,
                severity: *severity,
                event_type,
                title: t.t(&format!("templates.{k}.title")).into_owned(),
                text: t.t(&format!("templates.{k}.text")).into_owned(),
                valid_minutes: *minutes,
            },
        )
        .collect();
    let templates_json = json_in_script(&templates);
    render(ComposePage {
        may_draft: v.has(&[Role::Drafter, Role::Clerk]),
        tree: view::area_tree(&s.places, &terms, &reach),
        templates,
        templates_json,
        event_types: EVENT_TYPES
            .iter()
            .map(|e| (*e, t.t(&format!("event.{e}")).into_owned()))
            .collect(),
        max_upload_mb: s.max_upload_bytes / (1024 * 1024),
        weekdays: (1..=7u8)
            .map(|d| (d, t.t(&format!("compose.wd{d}")).into_owned()))
            .collect(),
        today: crate::timetable::format_date(protocol::schedule::local_day(
            now_ms(),
            protocol::schedule::CHINA_OFFSET_MINUTES,
        )),
        c: chrome(&s, &v, "compose"),
    })
}

pub struct DraftCard {
    pub id: u64,
    pub title: String,
    pub text: String,
    pub class: &'static str,
    pub drill: bool,
    pub severity: u8,
    pub state: &'static str,
    pub event_type: String,
    pub valid_minutes: i64,
    pub areas: String,
    pub area_codes: String,
    pub created_by: String,
    pub created: String,
    pub origin: String,
    pub approvals: usize,
    pub needed: u8,
    pub duration: String,
    pub own: bool,
    /// A real emergency whose approval may put it on air: the approver
    /// types a confirmation.
    pub live_emergency: bool,
    pub confirm: String,
    pub rejection: String,
}

fn draft_card(s: &ApiState, t: &Catalog, d: &Draft, me: &str) -> DraftCard {
    let targets: Vec<AreaCode> = d
        .targets
        .iter()
        .filter_map(|a| AreaCode::from_u64(*a).ok())
        .collect();
    let class = crate::api::drafts::class_name(d.class);
    let drill = d.is_drill();
    let areas = view::named_areas(&s.places, &targets, &s.workflow.relay.scope);
    let key = if drill {
        "review.confirm_drill"
    } else {
        "review.confirm_live"
    };
    DraftCard {
        id: d.id,
        title: d.title.clone(),
        text: d.text.clone(),
        class,
        drill,
        severity: d.severity,
        state: d.state.name(),
        event_type: t.event(&d.event_type),
        valid_minutes: d.valid_minutes,
        area_codes: d.target_codes().join(" "),
        confirm: t
            .t(key)
            .replace("{title}", &d.title)
            .replace("{areas}", &areas),
        areas,
        created_by: d.created_by.clone(),
        created: crate::audit::china_time(d.created_ms),
        origin: match (&d.origin, &d.alert) {
            (Some(o), _) => format!(
                "{} ({}) · {}",
                o.platform_name, o.platform_serial, o.account
            ),
            (None, Some(a)) => format!(
                "{} · {} {} · {} · {}",
                a.format, a.source, a.sender_name, a.id, a.verified
            ),
            (None, None) => String::new(),
        },
        approvals: d.approvals.len(),
        needed: d.approvals_needed,
        duration: format!("{:.1} s", d.audio.duration_ms as f64 / 1000.0),
        own: d.authors.contains(me),
        live_emergency: class == "emergency" && !drill,
        rejection: d
            .rejection
            .as_ref()
            .map(|r| format!("{}: {}", r.by, r.comment))
            .unwrap_or_default(),
    }
}

/// What a draft card needs around it when rendered on its own.
pub struct CardChrome {
    pub t: &'static Catalog,
}

#[derive(Template)]
#[template(path = "review_card.html")]
pub struct ReviewCard {
    pub c: CardChrome,
    pub d: DraftCard,
    pub may_approve: bool,
}

/// The review queue's cards as `account` sees them: (draft id, HTML).
/// Blocking (the draft store).
pub fn review_queue(
    s: &ApiState,
    account: &crate::accounts::Account,
    lang: Lang,
) -> Result<Vec<(u64, String)>, ApiError> {
    let t = catalog(lang);
    let drafts = s
        .workflow
        .list(account, Some(DraftState::Submitted), QUEUE_MAX)?;
    let may_approve = account.has(Role::Approver);
    drafts
        .iter()
        .map(|d| {
            let html = ReviewCard {
                c: CardChrome { t },
                d: draft_card(s, t, d, &account.name),
                may_approve,
            }
            .render()
            .map_err(|e| ApiError::internal(format!("rendering a draft: {e}")))?;
            Ok((d.id, html))
        })
        .collect()
}

/// Most drafts the review page lists.
pub const QUEUE_MAX: usize = 500;

#[derive(Template)]
#[template(path = "review.html")]
pub struct ReviewPage {
    pub c: Chrome,
    pub queue: Vec<DraftCard>,
    pub mine: Vec<DraftCard>,
    pub may_approve: bool,
}

pub async fn review(State(s): State<ApiState>, v: Viewer) -> Response {
    let wf = s.workflow.clone();
    let account = v.caller.account.clone();
    let drafts = match blocking(move || wf.list(&account, None, QUEUE_MAX)).await {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let t = catalog(v.lang);
    let me = v.caller.account.name.clone();
    let queue = drafts
        .iter()
        .filter(|d| d.state == DraftState::Submitted)
        .map(|d| draft_card(&s, t, d, &me))
        .collect();
    let mine = drafts
        .iter()
        .filter(|d| d.authors.contains(&me) && d.state != DraftState::Submitted)
        .take(50)
        .map(|d| draft_card(&s, t, d, &me))
        .collect();
    render(ReviewPage {
        queue,
        mine,
        may_approve: v.has(&[Role::Approver]),
        c: chrome(&s, &v, "review"),
    })
}

#[derive(Clone)]
pub struct TerminalLine {
    pub serial: String,
    pub name: String,
    pub place: String,
    pub area: String,
    pub state: TermState,
    pub volume: String,
    pub muted: bool,
    pub last_seen: String,
    /// The last heartbeat, shown only while offline (the live list then
    /// changes only when a terminal's state does).
    pub offline_since: String,
    pub faults: String,
    pub playing: String,
    pub software: String,
    /// How far the terminal's own clock is from the tree's and how well it
    /// knows ("+1500.0 ms ± 0.3 ms"); empty until it measured.
    pub clock: String,
    /// Audio frames since the terminal started.
    pub audio: crate::book::AudioRow,
    pub refusals: u64,
    /// Refusals by reason name.
    pub refusals_by: Vec<(String, u32)>,
}

impl TerminalLine {
    /// What the terminals list shows of it (its counters are on its own
    /// page): the live stream sends a row again only when this changes.
    pub fn listed(&self) -> (&str, &str, &str, TermState, &str, &str, &str) {
        (
            &self.serial,
            &self.name,
            &self.place,
            self.state,
            &self.volume,
            &self.offline_since,
            &self.faults,
        )
    }
}

/// A terminal's clock against the tree's: its own error (local − tree),
/// in ms, with the estimate's standard error.
fn clock_text(c: crate::book::ClockRow) -> String {
    format!(
        "{:+.1} ms ± {:.1} ms",
        -c.offset_us as f64 / 1000.0,
        c.uncertainty_us as f64 / 1000.0
    )
}

fn terminal_line(x: &view::TerminalInfo) -> TerminalLine {
    let r = x.row.as_ref();
    TerminalLine {
        serial: x.serial_hex.clone(),
        name: x.name.clone(),
        place: x.place.clone(),
        area: x.area.map(|a| a.to_string()).unwrap_or_default(),
        state: x.state,
        volume: r.map(|r| r.volume.to_string()).unwrap_or_default(),
        muted: r.is_some_and(|r| r.muted),
        last_seen: r
            .map(|r| crate::audit::china_time(r.last_seen_ms))
            .unwrap_or_default(),
        offline_since: match (x.state, r) {
            (TermState::Offline, Some(r)) => crate::audit::china_time(r.last_seen_ms),
            _ => String::new(),
        },
        faults: r.map(|r| r.faults.join("; ")).unwrap_or_default(),
        playing: r.and_then(|r| r.playing.clone()).unwrap_or_default(),
        software: r.map(|r| r.software.clone()).unwrap_or_default(),
        clock: r.and_then(|r| r.clock).map(clock_text).unwrap_or_default(),
        audio: r.map(|r| r.audio).unwrap_or_default(),
        refusals: r.map_or(0, |r| r.refusals),
        refusals_by: r
            .map(|r| {
                r.refusals_by_reason
                    .iter()
                    .map(|(k, n)| (k.clone(), *n))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The terminals page's live part (also sent over SSE).
#[derive(Template)]
#[template(path = "terminals_live.html")]
pub struct TerminalsLive {
    pub t: &'static Catalog,
    pub map: view::Map,
    pub rows: Vec<TerminalLine>,
    pub counts: Vec<(TermState, usize)>,
}

/// What the terminals page's live stream compares: each terminal's line
/// as the list shows it.
pub fn terminal_lines(s: &ApiState) -> Vec<TerminalLine> {
    view::terminals(&s.workflow.relay, &s.places, now_ms())
        .iter()
        .map(terminal_line)
        .collect()
}

/// One changed row of the terminals list, for the page's script:
/// [serial, state, state label, volume, offline since, faults].
pub fn terminal_delta(x: &TerminalLine, t: &Catalog) -> [String; 6] {
    [
        x.serial.clone(),
        x.state.name().to_string(),
        t.tstate(x.state).into_owned(),
        x.volume.clone(),
        x.offline_since.clone(),
        x.faults.clone(),
    ]
}

/// A digest of the list as shown: the page passes it to its live stream,
/// which then starts with changes only instead of the whole part again.
pub fn lines_digest(lines: &[TerminalLine]) -> [u8; 32] {
    let mut text = String::new();
    for l in lines {
        let (serial, name, place, state, volume, since, faults) = l.listed();
        text.push_str(&format!(
            "{serial}\t{name}\t{place}\t{}\t{volume}\t{since}\t{faults}\n",
            state.name()
        ));
    }
    crate::accounts::sha256(text.as_bytes())
}

/// The terminals page's live part, and the digest of its list.
pub fn terminals_live(s: &ApiState, lang: Lang) -> Result<(String, [u8; 32]), ApiError> {
    let t = catalog(lang);
    let terms = view::terminals(&s.workflow.relay, &s.places, now_ms());
    let rows: Vec<TerminalLine> = terms.iter().map(terminal_line).collect();
    let digest = lines_digest(&rows);
    let html = TerminalsLive {
        t,
        map: view::map(&s.places, &terms),
        counts: TermState::ALL
            .iter()
            .map(|st| (*st, terms.iter().filter(|x| x.state == *st).count()))
            .collect(),
        rows,
    }
    .render()
    .map_err(|e| ApiError::internal(format!("rendering the terminals: {e}")))?;
    Ok((html, digest))
}

#[derive(Template)]
#[template(path = "terminals.html")]
pub struct TerminalsPage {
    pub c: Chrome,
    pub live: String,
    /// The list's digest, for the live stream.
    pub version: String,
    pub states: [TermState; 5],
    pub state_filter: String,
}

#[derive(Deserialize)]
pub struct TerminalsQuery {
    #[serde(default)]
    state: String,
}

pub async fn terminals(
    State(s): State<ApiState>,
    v: Viewer,
    Query(q): Query<TerminalsQuery>,
) -> Response {
    let (live, digest) = match terminals_live(&s, v.lang) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    render(TerminalsPage {
        c: chrome(&s, &v, "terminals"),
        live,
        version: hex::encode(digest),
        states: TermState::ALL,
        state_filter: q.state,
    })
}

#[derive(Template)]
#[template(path = "terminal.html")]
pub struct TerminalPage {
    pub c: Chrome,
    pub x: TerminalLine,
    pub may_command: bool,
}

pub async fn terminal(
    State(s): State<ApiState>,
    v: Viewer,
    Path(serial): Path<String>,
) -> Response {
    let terms = view::terminals(&s.workflow.relay, &s.places, now_ms());
    let Some(x) = terms
        .iter()
        .find(|x| x.serial_hex == serial.to_ascii_lowercase())
    else {
        return (
            StatusCode::NOT_FOUND,
            Html(format!(
                "<!doctype html><meta charset=utf-8><p>{}</p><p><a href=\"/terminals\">←</a></p>",
                catalog(v.lang).t("terminals.not_found")
            )),
        )
            .into_response();
    };
    render(TerminalPage {
        x: terminal_line(x),
        may_command: v.has(&[Role::Maintainer]),
        c: chrome(&s, &v, "terminals"),
    })
}

#[derive(Template)]
#[template(path = "security.html")]
pub struct SecurityPage {
    pub c: Chrome,
    pub by_reason: Vec<(String, u64)>,
    pub by_reporter: Vec<(String, u64)>,
    /// (last, reason, reporter, broadcast, offender, count)
    pub events: Vec<(String, String, String, String, String, u32)>,
}

pub async fn security(State(s): State<ApiState>, v: Viewer) -> Response {
    let (by_reason, events) = {
        let book = s.workflow.relay.book();
        let r: Vec<(String, u64)> = book
            .refusals
            .iter()
            .map(|(r, n)| (r.name().to_string(), *n))
            .collect();
        (r, book.events())
    };
    let mut by_reporter: BTreeMap<String, u64> = BTreeMap::new();
    for e in &events {
        *by_reporter
            .entry(format!("{} {}", e.reporter_tier, e.reporter))
            .or_default() += e.count as u64;
    }
    render(SecurityPage {
        by_reason,
        by_reporter: by_reporter.into_iter().collect(),
        events: events
            .iter()
            .take(200)
            .map(|e| {
                (
                    crate::audit::china_time(e.last_ms),
                    e.reason.to_string(),
                    format!("{} {}", e.reporter_tier, e.reporter),
                    e.broadcast.clone().unwrap_or_default(),
                    e.offender.clone().unwrap_or_default(),
                    e.count,
                )
            })
            .collect(),
        c: chrome(&s, &v, "security"),
    })
}

pub struct AuditLine {
    pub seq: u64,
    pub time: String,
    pub actor: String,
    pub action: String,
    pub object: String,
    pub outcome: &'static str,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub c: Chrome,
    pub may_read: bool,
    pub rows: Vec<AuditLine>,
    pub scanned: usize,
    pub actor: String,
    pub action: String,
    pub text: String,
}

#[derive(Deserialize, Default)]
pub struct AuditFilter {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    text: String,
}

/// Entries the audit page searches (the newest); the export has them all.
pub const AUDIT_PAGE_SCAN: usize = 5000;
pub const AUDIT_PAGE_ROWS: usize = 500;

pub async fn audit(State(s): State<ApiState>, v: Viewer, Query(f): Query<AuditFilter>) -> Response {
    let may_read = v.has(&[Role::Auditor, Role::Admin]);
    let mut rows = Vec::new();
    let mut scanned = 0;
    if may_read {
        let wf = s.workflow.clone();
        let entries = match blocking(move || wf.audit.latest(AUDIT_PAGE_SCAN)).await {
            Ok(e) => e,
            Err(e) => return e.into_response(),
        };
        scanned = entries.len();
        let has = |field: &str, want: &str| want.is_empty() || field.contains(want);
        for e in entries.iter().rev() {
            if has(&e.actor, &f.actor)
                && has(&e.action, &f.action)
                && (has(&e.object, &f.text) || has(&e.detail, &f.text))
            {
                rows.push(AuditLine {
                    seq: e.seq,
                    time: e.local_time(),
                    actor: e.actor.clone(),
                    action: e.action.clone(),
                    object: e.object.clone(),
                    outcome: e.outcome.name(),
                    detail: e.detail.clone(),
                });
                if rows.len() == AUDIT_PAGE_ROWS {
                    break;
                }
            }
        }
    }
    render(AuditPage {
        may_read,
        rows,
        scanned,
        actor: f.actor,
        action: f.action,
        text: f.text,
        c: chrome(&s, &v, "audit"),
    })
}

pub struct AccountLine {
    pub name: String,
    pub display: String,
    pub roles: String,
    pub areas: String,
    pub locked: bool,
    pub confirm: String,
}

#[derive(Template)]
#[template(path = "accounts.html")]
pub struct AccountsPage {
    pub c: Chrome,
    pub may_admin: bool,
    pub accounts: Vec<AccountLine>,
    pub roles: Vec<&'static str>,
}

pub async fn accounts(State(s): State<ApiState>, v: Viewer) -> Response {
    let may_admin = v.has(&[Role::Admin]);
    let t = catalog(v.lang);
    let mut lines = Vec::new();
    if may_admin {
        let wf = s.workflow.clone();
        let list = match blocking(move || wf.accounts.list()).await {
            Ok(l) => l,
            Err(e) => return e.into_response(),
        };
        let now = (s.workflow.now)();
        for a in list {
            lines.push(AccountLine {
                confirm: t.t("accounts.confirm_remove").replace("{name}", &a.name),
                name: a.name.clone(),
                display: a.display_name.clone(),
                roles: roles_text(t, &a.roles),
                areas: if a.areas.is_empty() {
                    t.t("accounts.all_areas").into_owned()
                } else {
                    view::named_areas(&s.places, &a.areas, &s.workflow.relay.scope)
                },
                locked: a.locked_until_ms.is_some_and(|u| u > now),
            });
        }
    }
    render(AccountsPage {
        may_admin,
        accounts: lines,
        roles: Role::ALL.iter().map(|r| r.name()).collect(),
        c: chrome(&s, &v, "accounts"),
    })
}

pub struct ChainLine {
    pub tier: String,
    pub serial: String,
    pub not_after: String,
    pub days_left: i64,
    pub warn: bool,
}

#[derive(Template)]
#[template(path = "certificates.html")]
pub struct CertificatesPage {
    pub c: Chrome,
    pub chain: Vec<ChainLine>,
    pub lists: Vec<(String, u64, String)>,
    pub tls: String,
    pub may_revoke: bool,
}

pub async fn certificates(State(s): State<ApiState>, v: Viewer) -> Response {
    let relay = &s.workflow.relay;
    let t = catalog(v.lang);
    let chain = crate::expiry::chain_expiry(relay, certs::time::unix_now(), s.expiry_warning)
        .into_iter()
        .map(|c| ChainLine {
            tier: format!("{} {}", t.t(&format!("tier.{}", c.tier)), c.name),
            serial: c.serial,
            not_after: c.not_after_local,
            days_left: c.seconds_left / 86_400,
            warn: c.warning,
        })
        .collect();
    let lists = relay
        .revocations
        .lists()
        .iter()
        .map(|l| {
            (
                format!("{:016x}", l.signer_serial),
                l.number,
                l.revoked
                    .iter()
                    .map(|s| format!("{s:016x}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        })
        .collect();
    render(CertificatesPage {
        chain,
        lists,
        tls: s.tls_fingerprint.as_deref().unwrap_or_default().to_string(),
        may_revoke: v.has(&[Role::Maintainer]),
        c: chrome(&s, &v, "certificates"),
    })
}
