//! What the pages show, computed once from the relay's state: terminals
//! with their places and states, broadcasts with coverage per town and
//! village, the area tree, the map. Templates only lay these out.

use std::collections::{BTreeMap, HashMap};

use certs::AreaCode;

use super::i18n::Catalog;
use super::places::Places;
use crate::book::{Coverage, EventRow, TerminalRow};
use crate::relay::Relay;

impl std::fmt::Display for TermState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A terminal's state on the map and in the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermState {
    Playing,
    Online,
    Muted,
    Fault,
    Offline,
}

impl TermState {
    pub const ALL: [TermState; 5] = [
        TermState::Playing,
        TermState::Online,
        TermState::Muted,
        TermState::Fault,
        TermState::Offline,
    ];

    /// CSS class and filter value.
    pub fn name(self) -> &'static str {
        match self {
            TermState::Playing => "playing",
            TermState::Online => "online",
            TermState::Muted => "muted",
            TermState::Fault => "fault",
            TermState::Offline => "offline",
        }
    }

    pub fn label(self, t: &Catalog) -> String {
        t.tstate(self).into_owned()
    }

    fn of(row: Option<&TerminalRow>) -> TermState {
        match row {
            None => TermState::Offline,
            Some(r) if !r.online => TermState::Offline,
            Some(r) if !r.faults.is_empty() => TermState::Fault,
            Some(r) if r.playing.is_some() => TermState::Playing,
            Some(r) if r.muted => TermState::Muted,
            Some(_) => TermState::Online,
        }
    }
}

pub struct TerminalInfo {
    pub serial: u64,
    pub serial_hex: String,
    pub area: Option<AreaCode>,
    /// 蛟桥镇 › 前进村
    pub place: String,
    /// The site's name, or the serial.
    pub name: String,
    pub state: TermState,
    pub row: Option<TerminalRow>,
}

/// Every terminal known here: announced below (with its area) or heard
/// from (with its status), sorted by place then serial.
pub fn terminals(relay: &Relay, places: &Places, now_ms: i64) -> Vec<TerminalInfo> {
    let areas: HashMap<u64, AreaCode> = relay.members.terminals().into_iter().collect();
    let rows: HashMap<u64, TerminalRow> = relay
        .book()
        .terminals(now_ms, crate::api::OFFLINE_AFTER_MS)
        .into_iter()
        .filter_map(|r| u64::from_str_radix(&r.serial, 16).ok().map(|s| (s, r)))
        .collect();
    let mut serials: Vec<u64> = areas.keys().chain(rows.keys()).copied().collect();
    serials.sort_unstable();
    serials.dedup();
    let mut out: Vec<TerminalInfo> = serials
        .into_iter()
        .map(|serial| {
            let area = areas.get(&serial).copied();
            let row = rows.get(&serial).cloned();
            let serial_hex = format!("{serial:016x}");
            TerminalInfo {
                serial,
                name: places
                    .site(serial)
                    .map(|s| s.name.clone())
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| serial_hex.clone()),
                serial_hex,
                place: area.map_or_else(String::new, |a| places.path(a, &relay.scope)),
                area,
                state: TermState::of(row.as_ref()),
                row,
            }
        })
        .collect();
    out.sort_by_key(|a| (a.area, a.serial));
    out
}

/// Counts of one group (a town or a village) for one broadcast.
pub struct GroupRow {
    pub name: String,
    pub code: String,
    pub expected: u32,
    pub playing: u32,
    pub finished: u32,
    pub villages: Vec<GroupRow>,
}

pub struct BroadcastCard {
    pub id: String,
    pub title: String,
    pub drill: bool,
    /// emergency, daily, drill
    pub class: &'static str,
    pub severity: u8,
    /// active, pending, cancelled, ended
    pub state: &'static str,
    pub areas: String,
    pub area_codes: String,
    pub issued: String,
    pub ends: String,
    pub expected: u32,
    pub coverage: Coverage,
    pub towns: Vec<GroupRow>,
    /// The cancel confirmation, naming the broadcast.
    pub confirm: String,
}

impl BroadcastCard {
    pub fn cancellable(&self) -> bool {
        matches!(self.state, "active" | "pending")
    }
}

pub struct Summary {
    pub terminals: usize,
    pub by_state: Vec<(TermState, usize)>,
    pub offline: Vec<(String, String, String)>,
    pub refusals: u64,
    pub events: Vec<EventRow>,
}

/// Broadcasts that ended more than this long ago leave the overview.
pub const RECENT_MS: i64 = 30 * 60 * 1000;
/// Most broadcasts the overview lists.
pub const MAX_CARDS: usize = 50;

pub fn named_areas(places: &Places, codes: &[AreaCode], scope: &[AreaCode]) -> String {
    codes
        .iter()
        .map(|a| places.path(*a, scope))
        .collect::<Vec<_>>()
        .join("、")
}

/// The overview's broadcasts: live and pending first, then those ended or
/// cancelled in the last half hour; newest first within each.
pub fn broadcasts(
    relay: &Relay,
    places: &Places,
    terms: &[TerminalInfo],
    t: &Catalog,
    now_ms: i64,
) -> Vec<BroadcastCard> {
    let area_of: HashMap<u64, AreaCode> = terms
        .iter()
        .filter_map(|x| x.area.map(|a| (x.serial, a)))
        .collect();
    let mut all = relay.broadcasts.all();
    all.retain(|b| b.header.header().end_ms > now_ms - RECENT_MS);
    all.sort_by_key(|b| {
        let h = b.header.header();
        let live = !b.is_cancelled() && h.end_ms > now_ms;
        (!live, std::cmp::Reverse(h.issued_at_ms))
    });
    all.truncate(MAX_CARDS);
    let book = relay.book();
    let mut cards = Vec::new();
    for b in all {
        let h = b.header.header();
        let drill = h.msg_type.is_drill() || h.class == protocol::BroadcastClass::Drill;
        let state = if b.is_cancelled() {
            "cancelled"
        } else if h.end_ms <= now_ms {
            "ended"
        } else if h.start_ms > now_ms {
            "pending"
        } else {
            "active"
        };
        // Expected: every terminal in a target area.
        let mut villages: BTreeMap<AreaCode, (u32, Coverage)> = BTreeMap::new();
        for x in terms {
            if let Some(a) = x.area {
                if h.targets.iter().any(|t| t.covers(a)) {
                    villages.entry(a).or_default().0 += 1;
                }
            }
        }
        let by_village = book.coverage_by(b.id(), now_ms, h.end_ms, |s| area_of.get(&s).copied());
        let mut total = Coverage::default();
        for (area, c) in by_village {
            add(&mut total, &c);
            if let Some(a) = area {
                villages.entry(a).or_default().1 = c;
            }
        }
        let mut towns: BTreeMap<AreaCode, GroupRow> = BTreeMap::new();
        for (v, (expected, c)) in villages {
            let town = v.parent().unwrap_or(v);
            let row = towns.entry(town).or_insert_with(|| GroupRow {
                name: places.path(town, &relay.scope),
                code: town.to_string(),
                expected: 0,
                playing: 0,
                finished: 0,
                villages: Vec::new(),
            });
            row.expected += expected;
            row.playing += c.playing;
            row.finished += c.finished;
            row.villages.push(GroupRow {
                name: places.name(v),
                code: v.to_string(),
                expected,
                playing: c.playing,
                finished: c.finished,
                villages: Vec::new(),
            });
        }
        let towns: Vec<GroupRow> = towns.into_values().collect();
        let expected = towns.iter().map(|t| t.expected).sum();
        let areas = named_areas(places, &h.targets, &relay.scope);
        let confirm_key = if drill {
            "overview.confirm_cancel_drill"
        } else {
            "overview.confirm_cancel"
        };
        let confirm = t
            .t(confirm_key)
            .replace("{title}", &h.title)
            .replace("{areas}", &areas);
        cards.push(BroadcastCard {
            id: b.id().to_string(),
            title: h.title.clone(),
            drill,
            class: crate::api::drafts::class_name(h.class.code()),
            severity: h.severity.code(),
            state,
            area_codes: h
                .targets
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" "),
            areas,
            issued: crate::audit::china_time(h.issued_at_ms),
            ends: crate::audit::china_time(h.end_ms),
            expected,
            coverage: total,
            towns,
            confirm,
        });
    }
    cards
}

fn add(total: &mut Coverage, c: &Coverage) {
    total.received += c.received;
    total.playing += c.playing;
    total.finished += c.finished;
    total.cut_at_end += c.cut_at_end;
    total.muted += c.muted;
    total.preempted += c.preempted;
    total.cancelled += c.cancelled;
    total.silenced += c.silenced;
    total.held += c.held;
    total.skipped += c.skipped;
    total.lost += c.lost;
    total.refused += c.refused;
    for (k, v) in &c.refused_by_reason {
        *total.refused_by_reason.entry(k.clone()).or_default() += v;
    }
}

/// Most offline terminals and security events the overview names.
pub const OVERVIEW_LIST: usize = 8;

pub fn summary(relay: &Relay, terms: &[TerminalInfo]) -> Summary {
    let by_state = TermState::ALL
        .iter()
        .map(|s| (*s, terms.iter().filter(|x| x.state == *s).count()))
        .collect();
    let offline = terms
        .iter()
        .filter(|x| x.state == TermState::Offline)
        .take(OVERVIEW_LIST)
        .map(|x| {
            (
                x.name.clone(),
                x.place.clone(),
                x.row
                    .as_ref()
                    .map(|r| crate::audit::china_time(r.last_seen_ms))
                    .unwrap_or_default(),
            )
        })
        .collect();
    let book = relay.book();
    let mut events = book.events();
    events.truncate(OVERVIEW_LIST);
    Summary {
        terminals: terms.len(),
        by_state,
        offline,
        refusals: book.refusals.values().sum(),
        events,
    }
}

/// One row of the area tree (compose): depth 0 is the platform's scope.
pub struct TreeRow {
    pub code: String,
    pub name: String,
    pub depth: usize,
    pub terminals: usize,
    pub parent: String,
}

/// The areas the caller may address, as a tree: the scope, then every
/// town and village below it that is named or has terminals.
pub fn area_tree(places: &Places, terms: &[TerminalInfo], reach: &[AreaCode]) -> Vec<TreeRow> {
    let mut known: std::collections::BTreeSet<AreaCode> = places.named().collect();
    for x in terms {
        if let Some(mut a) = x.area {
            known.insert(a);
            while let Some(up) = a.parent() {
                known.insert(up);
                a = up;
            }
        }
    }
    let mut rows = Vec::new();
    for top in reach {
        known.insert(*top);
    }
    for code in known {
        let Some(top) = reach.iter().find(|t| t.covers(code)) else {
            continue;
        };
        let depth = level(code) - level(*top);
        let terminals = terms
            .iter()
            .filter(|x| x.area.is_some_and(|a| code.covers(a)))
            .count();
        rows.push(TreeRow {
            code: code.to_string(),
            name: if depth == 0 {
                places.path(code, &[])
            } else {
                places.name(code)
            },
            depth,
            terminals,
            parent: if depth == 0 {
                String::new()
            } else {
                code.parent().map(|p| p.to_string()).unwrap_or_default()
            },
        });
    }
    rows
}

fn level(a: AreaCode) -> usize {
    a.level() as usize
}

/// A point of the terminal map, in the SVG's own units.
pub struct MapDot {
    pub x: f64,
    pub y: f64,
    pub serial: String,
    pub state: &'static str,
    pub title: String,
}

pub struct MapLabel {
    pub x: f64,
    pub y: f64,
    pub name: String,
    pub code: String,
}

pub struct Map {
    pub width: f64,
    pub height: f64,
    pub dots: Vec<MapDot>,
    pub labels: Vec<MapLabel>,
}

const MAP_W: f64 = 1000.0;
const MAP_H: f64 = 640.0;
const MARGIN: f64 = 40.0;

/// The district drawn from configured coordinates: villages where
/// `[[areas]]` puts them (on a grid by town when none are given),
/// terminals at their `[[sites]]` or in a ring around their village.
pub fn map(places: &Places, terms: &[TerminalInfo]) -> Map {
    let mut villages: Vec<AreaCode> = terms.iter().filter_map(|x| x.area).collect();
    villages.sort_unstable();
    villages.dedup();
    // Where each village is, in degrees (or grid units).
    let mut spot: HashMap<AreaCode, (f64, f64)> = HashMap::new();
    let gridded: Vec<AreaCode> = villages
        .iter()
        .copied()
        .filter(|v| places.point(*v).is_none())
        .collect();
    for v in &villages {
        if let Some(p) = places.point(*v) {
            spot.insert(*v, p);
        }
    }
    if !gridded.is_empty() {
        let cols = (gridded.len() as f64).sqrt().ceil().max(1.0) as usize;
        for (i, v) in gridded.iter().enumerate() {
            // Flip y: latitude grows upwards, the grid's rows downwards.
            spot.insert(*v, ((i % cols) as f64, -((i / cols) as f64)));
        }
    }
    let mut pts: Vec<(f64, f64)> = spot.values().copied().collect();
    pts.extend(
        terms
            .iter()
            .filter_map(|x| places.site(x.serial).map(|s| (s.lon, s.lat))),
    );
    let (min_x, max_x) = bounds(pts.iter().map(|p| p.0));
    let (min_y, max_y) = bounds(pts.iter().map(|p| p.1));
    let sx = (MAP_W - 2.0 * MARGIN) / (max_x - min_x).max(1e-9);
    let sy = (MAP_H - 2.0 * MARGIN) / (max_y - min_y).max(1e-9);
    let s = sx.min(sy);
    let project = |(x, y): (f64, f64)| (MARGIN + (x - min_x) * s, MAP_H - MARGIN - (y - min_y) * s);
    let mut labels = Vec::new();
    for v in &villages {
        let (x, y) = project(spot[v]);
        labels.push(MapLabel {
            x,
            y: y + 26.0,
            name: places.name(*v),
            code: v.to_string(),
        });
    }
    let mut ring: HashMap<AreaCode, (usize, usize)> = HashMap::new();
    for x in terms {
        if let Some(a) = x.area {
            ring.entry(a).or_default().1 += 1;
        }
    }
    let mut dots = Vec::new();
    for x in terms {
        let (px, py) = if let Some(site) = places.site(x.serial) {
            project((site.lon, site.lat))
        } else if let Some(a) = x.area {
            let (cx, cy) = project(spot[&a]);
            let e = ring.entry(a).or_default();
            let angle = e.0 as f64 / e.1.max(1) as f64 * std::f64::consts::TAU;
            e.0 += 1;
            let r = 6.0 + (e.1 as f64).sqrt() * 2.0;
            (cx + r * angle.cos(), cy + r * angle.sin())
        } else {
            continue;
        };
        dots.push(MapDot {
            x: (px * 10.0).round() / 10.0,
            y: (py * 10.0).round() / 10.0,
            serial: x.serial_hex.clone(),
            state: x.state.name(),
            title: format!("{} · {}", x.name, x.place),
        });
    }
    Map {
        width: MAP_W,
        height: MAP_H,
        dots,
        labels,
    }
}

fn bounds(it: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in it {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        (0.0, 1.0)
    } else if hi - lo < 1e-9 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}
