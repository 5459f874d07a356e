//! The alerts-from-above page (上级预警, R13): who may send (each source,
//! its format and policy, whether its states are reported to it), every
//! alert taken (newest first) with what was done here, how it stands and
//! what the sender was told, and the packages refused lately and why.

use std::collections::HashMap;

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use protocol::control::PlayState;

use super::i18n::Catalog;
use super::pages::{chrome, render, Chrome};
use super::Viewer;
use crate::alerts::reports::Pending;
use crate::alerts::Gateway;
use crate::api::{blocking, ApiError, ApiState};
use crate::audit::{china_time, Outcome};

/// Most alerts the page lists; most refusals.
pub const ALERTS_SHOWN: usize = 200;
pub const REFUSALS_SHOWN: usize = 50;
/// Audit entries searched for refusals (the newest).
const AUDIT_SCAN: usize = 5000;

pub struct SourceRow {
    pub name: String,
    pub format: &'static str,
    pub at_once: String,
    /// Where states go unasked, or how the sender learns them.
    pub reports: String,
    /// Its certificate: serial and end, or that a bare key is configured.
    pub certificate: String,
    /// ok, expiring, expired, none: the cell's colour.
    pub certificate_class: &'static str,
}

pub struct AlertRow {
    pub received: String,
    pub source: String,
    pub format: String,
    pub original_id: String,
    pub title: String,
    pub severity: u8,
    pub drill: bool,
    /// The draft's state (in review, published, cancelled, rejected).
    pub done: &'static str,
    pub draft: u64,
    /// How it stands here (BrdState), in words, and its coverage.
    pub state: String,
    pub coverage: String,
    /// What the sender was told: the last state delivered, or failing.
    pub told: String,
    /// ok, failing, none: the cell's colour.
    pub told_class: &'static str,
}

pub struct RefusalRow {
    pub time: String,
    pub source: String,
    pub object: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "from_above.html")]
pub struct FromAbovePage {
    pub c: Chrome,
    pub configured: bool,
    pub sources: Vec<SourceRow>,
    pub alerts: Vec<AlertRow>,
    pub refusals: Vec<RefusalRow>,
}

/// BrdState in the page's words.
pub fn brd_state(t: &Catalog, s: PlayState) -> String {
    t.t(&format!("from_above.brd.{}", s.code())).into_owned()
}

/// A source's certificate in words, and how near its end is (`warn_s`
/// ahead of it counts as expiring).
fn certificate(
    t: &Catalog,
    s: &crate::alerts::Source,
    now_s: u64,
    warn_s: u64,
) -> (String, &'static str) {
    match (s.valid_s, s.format) {
        (Some((_, until)), _) => {
            let text = t
                .t("from_above.cert_until")
                .replace("{serial}", &s.cert_sn)
                .replace("{until}", &china_time(until as i64 * 1000));
            if now_s > until {
                (
                    format!("{text} · {}", t.t("from_above.cert_expired")),
                    "expired",
                )
            } else if until - now_s <= warn_s {
                let days = (until - now_s) / 86_400;
                (
                    format!(
                        "{text} · {}",
                        t.t("from_above.cert_expiring")
                            .replace("{days}", &days.to_string())
                    ),
                    "expiring",
                )
            } else {
                (text, "ok")
            }
        }
        (None, gateway::Format::Gyt) => (
            t.t("from_above.cert_bare_key")
                .replace("{serial}", &s.cert_sn),
            "none",
        ),
        (None, gateway::Format::Cap) => (t.t("from_above.cert_token").into_owned(), "none"),
    }
}

fn sources(t: &Catalog, g: &Gateway, warn_s: u64) -> Vec<SourceRow> {
    let now_s = (crate::now_ms() / 1000).max(0) as u64;
    g.sources
        .iter()
        .map(|s| {
            let (certificate, certificate_class) = certificate(t, s, now_s, warn_s);
            SourceRow {
                certificate,
                certificate_class,
                name: s.name.clone(),
                format: s.format.name(),
                at_once: {
                    let mut sev: Vec<String> = s
                        .relay_at_once
                        .iter()
                        .map(|v| t.sev(v).into_owned())
                        .collect();
                    if s.drills_at_once {
                        sev.push(t.t("from_above.drills_too").into_owned());
                    }
                    if sev.is_empty() {
                        t.t("from_above.all_reviewed").into_owned()
                    } else {
                        sev.join(&t.t("list.sep"))
                    }
                },
                reports: match (&s.report_to, s.format) {
                    (Some(to), _) => t
                        .t("from_above.reports_to")
                        .replace("{host}", &format!("{}:{}", to.host, to.port)),
                    (None, gateway::Format::Gyt) => t.t("from_above.reports_asked").into_owned(),
                    (None, gateway::Format::Cap) => t.t("from_above.reports_feed").into_owned(),
                },
            }
        })
        .collect()
}

/// One alert's row (blocking: the store and the relay's book).
fn alert_row(
    t: &Catalog,
    g: &Gateway,
    d: &crate::drafts::Draft,
    owed: &HashMap<String, Pending>,
) -> Option<AlertRow> {
    let a = d.alert.as_ref()?;
    let source = g.sources.iter().find(|s| s.name == a.source);
    let (state, coverage) = match source.map(|s| g.state_of(s, &a.id)) {
        Some(Ok((s, _, [have, playing, finished]))) => (
            brd_state(t, s),
            if d.broadcast_id().is_some() {
                t.t("from_above.coverage_of")
                    .replace("{have}", &have.to_string())
                    .replace("{playing}", &playing.to_string())
                    .replace("{finished}", &finished.to_string())
            } else {
                String::new()
            },
        ),
        _ => (String::new(), String::new()),
    };
    let reporting = source.is_some_and(|s| s.report_to.is_some());
    let (told, told_class) = match owed.get(&Pending::key_of(&a.source, &a.id)) {
        Some(p) if p.failures > 0 => (
            t.t("from_above.told_failing")
                .replace("{n}", &p.failures.to_string())
                .replace("{next}", &china_time(p.next_try_ms)),
            "failing",
        ),
        Some(Pending {
            delivered: Some(dl),
            ..
        }) => (
            t.t("from_above.told")
                .replace(
                    "{state}",
                    &PlayState::from_code(dl.state)
                        .map(|s| brd_state(t, s))
                        .unwrap_or_default(),
                )
                .replace("{at}", &china_time(dl.at_ms)),
            "ok",
        ),
        Some(_) => (t.t("from_above.told_pending").into_owned(), "none"),
        None if reporting && !d.state.editable() => (t.t("from_above.told_all").into_owned(), "ok"),
        None if reporting => (t.t("from_above.told_pending").into_owned(), "none"),
        None => (t.t("from_above.told_on_request").into_owned(), "none"),
    };
    Some(AlertRow {
        received: china_time(d.created_ms),
        source: a.source.clone(),
        format: a.format.clone(),
        original_id: a.id.clone(),
        title: d.title.clone(),
        severity: d.severity,
        drill: d.is_drill(),
        done: d.state.name(),
        draft: d.id,
        state,
        coverage,
        told,
        told_class,
    })
}

pub async fn page(State(s): State<ApiState>, v: Viewer) -> Response {
    let c = chrome(&s, &v, "from_above");
    let Some(g) = s.gateway.clone() else {
        return render(FromAbovePage {
            c,
            configured: false,
            sources: vec![],
            alerts: vec![],
            refusals: vec![],
        });
    };
    let t = c.t;
    let warn_s = s.expiry_warning.as_secs();
    let gathered = blocking(move || -> Result<_, ApiError> {
        let owed: HashMap<String, Pending> =
            g.owed.all().into_iter().map(|p| (p.key(), p)).collect();
        let alerts = g
            .workflow
            .drafts
            .alert_drafts(ALERTS_SHOWN)?
            .iter()
            .filter_map(|d| alert_row(t, &g, d, &owed))
            .collect::<Vec<_>>();
        let refusals = g
            .workflow
            .audit
            .latest(AUDIT_SCAN)?
            .iter()
            .rev()
            .filter(|e| e.action == "alert.receive" && e.outcome == Outcome::Refused)
            .take(REFUSALS_SHOWN)
            .map(|e| RefusalRow {
                time: e.local_time(),
                source: e
                    .actor
                    .strip_prefix("gateway:")
                    .unwrap_or(&e.actor)
                    .to_string(),
                object: e.object.clone(),
                detail: e.detail.clone(),
            })
            .collect::<Vec<_>>();
        Ok((sources(t, &g, warn_s), alerts, refusals))
    })
    .await;
    match gathered {
        Ok((sources, alerts, refusals)) => render(FromAbovePage {
            c,
            configured: true,
            sources,
            alerts,
            refusals,
        }),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::i18n::{catalog, Lang};

    #[test]
    fn a_sources_certificate_shows_its_end_and_warns_before_it() {
        let certs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/tests/certs");
        let config: crate::alerts::GatewayConfig = toml::from_str(&format!(
            r#"
            sm2_key = "/nonexistent"
            sm2_cert_sn = "D1"
            ca_certificates = [{ca:?}]
            [[sources]]
            name = "市平台"
            format = "gyt"
            certificate = {city:?}
            addresses = ["127.0.0.1"]
            relay_at_once = [1]
            [[sources]]
            name = "气象台"
            format = "cap"
            token_sha256 = "{token}"
            relay_at_once = [1]
            "#,
            ca = certs.join("ca.pem"),
            city = certs.join("city.pem"),
            token = "ab".repeat(32),
        ))
        .unwrap();
        let (sources, _) = config.sources().unwrap();
        let t = catalog(Lang::Zh);
        let (_, until) = sources[0].valid_s.unwrap();
        let month = 30 * 86_400;
        let (text, class) = certificate(t, &sources[0], until - 2 * month, month);
        assert_eq!(class, "ok");
        assert!(text.starts_with("3601000001，有效期至 "), "{text}");
        let (text, class) = certificate(t, &sources[0], until - 10 * 86_400, month);
        assert_eq!(class, "expiring");
        assert!(text.ends_with("10 天后到期"), "{text}");
        let (text, class) = certificate(t, &sources[0], until + 1, month);
        assert_eq!(class, "expired");
        assert!(text.contains("已过期"), "{text}");
        assert_eq!(certificate(t, &sources[1], until, month).1, "none");
    }
}
