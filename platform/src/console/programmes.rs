//! The programmes page (定时广播, R9, R20): a day's plan per village beside
//! what its terminals actually played, the programmes held here (own and
//! from above) with their timetables and withdrawal, and the quiet hours
//! in force, which an approver sets for this platform's areas.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use certs::AreaCode;
use serde::Deserialize;

use super::i18n::Catalog;
use super::pages::{chrome, render, Chrome};
use super::view;
use super::Viewer;
use crate::accounts::Role;
use crate::api::programmes::{day_of, day_plan, quiet_views, view as programme_view, PlayRow};
use crate::api::ApiState;
use crate::now_ms;

/// One play of the day as the page shows it.
pub struct PlanRow {
    pub time: String,
    pub title: String,
    pub duration: String,
    /// pending, done, partial, missed, withdrawn: the row's colour.
    pub state: &'static str,
    /// What the terminals did, in words.
    pub outcome: String,
}

pub struct VillagePlan {
    pub name: String,
    pub code: String,
    pub terminals: usize,
    pub rows: Vec<PlanRow>,
}

pub struct ProgrammeRow {
    pub id: String,
    pub title: String,
    pub schedule: String,
    pub duration: String,
    pub next: String,
    pub cached: usize,
    pub issuer: String,
    pub own: bool,
    pub withdrawn: bool,
    pub confirm: String,
}

pub struct QuietRow {
    pub signer: String,
    pub own: bool,
    pub areas: String,
    pub mode: String,
    pub windows: String,
}

#[derive(Template)]
#[template(path = "programmes.html")]
pub struct ProgrammesPage {
    pub c: Chrome,
    pub date: String,
    pub plan: Vec<VillagePlan>,
    pub programmes: Vec<ProgrammeRow>,
    pub quiet: Vec<QuietRow>,
    pub may_withdraw: bool,
    pub may_set_quiet: bool,
    pub tree: Vec<view::TreeRow>,
    /// This platform's own quiet hours now, to start the form from.
    pub own_mode: String,
    pub own_windows: String,
}

#[derive(Deserialize)]
pub struct DateQuery {
    pub date: Option<String>,
}

fn seconds(ms: i64) -> String {
    let s = ms / 1000;
    if s >= 60 {
        format!("{}:{:02}", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

/// What the terminals did with one play, in words and as a state.
fn outcome(t: &Catalog, r: &PlayRow, now: i64) -> (&'static str, String) {
    if r.withdrawn {
        return ("withdrawn", t.t("programmes.withdrawn").into_owned());
    }
    if r.at_ms > now {
        return ("pending", t.t("programmes.pending").into_owned());
    }
    let s = &r.summary;
    let mut parts = vec![t
        .t("programmes.finished")
        .replace("{n}", &s.finished.to_string())
        .replace("{of}", &r.terminals.to_string())];
    for (why, n) in &s.why {
        parts.push(format!("{} {n}", t.t(&format!("play_reason.{why}"))));
    }
    if s.postponed > 0 {
        parts.push(format!("{} {}", t.t("programmes.postponed"), s.postponed));
    }
    let silent = r.terminals.saturating_sub(s.reported as usize);
    if silent > 0 && r.at_ms + r.duration_ms < now {
        parts.push(format!("{} {silent}", t.t("programmes.no_report")));
    }
    let state = if r.terminals > 0 && s.finished as usize == r.terminals {
        "done"
    } else if s.started > 0 {
        "partial"
    } else if r.at_ms + r.duration_ms < now {
        "missed"
    } else {
        "pending"
    };
    (state, parts.join(&t.t("list.sep")))
}

pub async fn page(State(s): State<ApiState>, v: Viewer, Query(q): Query<DateQuery>) -> Response {
    let t = super::i18n::catalog(v.lang);
    let day = match day_of(q.date.as_deref()) {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let now = now_ms();
    let reach = s.workflow.reach(&v.caller.account);
    let plan = day_plan(&s, &reach, day, None);
    let plan = plan
        .areas
        .into_iter()
        .map(|a| VillagePlan {
            terminals: a.terminals,
            rows: a
                .plays
                .iter()
                .map(|r| {
                    let (state, outcome) = outcome(t, r, now);
                    PlanRow {
                        time: r.time.clone(),
                        title: r.title.clone(),
                        duration: seconds(r.duration_ms),
                        state,
                        outcome,
                    }
                })
                .collect(),
            name: a.name,
            code: a.area,
        })
        .collect();
    let programmes = s
        .workflow
        .relay
        .ahead
        .programmes()
        .iter()
        .filter(|p| certs::area::any_overlap(&p.signed.programme().targets, &reach))
        .map(|p| {
            let pv = programme_view(&s, p);
            ProgrammeRow {
                confirm: t
                    .t("programmes.confirm_withdraw")
                    .replace("{title}", &pv.title),
                schedule: match v.lang {
                    super::i18n::Lang::Zh => pv.schedule_zh.clone(),
                    super::i18n::Lang::En => pv.schedule_en.clone(),
                },
                duration: seconds(pv.duration_ms),
                next: pv
                    .next_play_ms
                    .map(crate::audit::china_time)
                    .unwrap_or_else(|| t.t("programmes.none_ahead").into_owned()),
                cached: pv.cached_terminals,
                issuer: if pv.own {
                    t.t("programmes.own").into_owned()
                } else {
                    p.signed.signer().body().name.clone()
                },
                own: pv.own,
                withdrawn: pv.withdrawn,
                id: pv.id,
                title: pv.title,
            }
        })
        .collect();
    let views = quiet_views(&s);
    let own = views.iter().find(|q| q.own);
    let quiet = views
        .iter()
        .map(|q| QuietRow {
            signer: q.signer_name.clone(),
            own: q.own,
            areas: q
                .areas
                .iter()
                .filter_map(|a| a.parse::<AreaCode>().ok())
                .map(|a| s.places.name(a))
                .collect::<Vec<_>>()
                .join(&t.t("list.sep")),
            mode: t.t(&format!("programmes.mode_{}", q.mode)).into_owned(),
            windows: if q.windows.is_empty() {
                t.t("programmes.no_windows").into_owned()
            } else {
                q.windows.join(&t.t("list.sep"))
            },
        })
        .collect();
    let terms = view::terminals(&s.workflow.relay, &s.places, now);
    render(ProgrammesPage {
        date: crate::timetable::format_date(day),
        plan,
        programmes,
        quiet,
        may_withdraw: v.has(&[Role::Approver, Role::Drafter, Role::Clerk]),
        may_set_quiet: v.has(&[Role::Approver]),
        tree: view::area_tree(&s.places, &terms, &reach),
        own_mode: own.map_or("hold".into(), |q| q.mode.clone()),
        own_windows: own.map_or("22:00-06:00".into(), |q| q.windows.join(", ")),
        c: chrome(&s, &v, "programmes"),
    })
}
