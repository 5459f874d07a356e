//! OASIS CAP 1.2 in and out. In: an `alert` read with the hardened
//! parser, every element checked against the standard's rules (the
//! required ones, the closed lists, the date-time form, polygons and
//! circles), the first fault named by its path. Out: an `alert` for each
//! broadcast of the platform, and the Atom feed that carries the current
//! ones.

use base64::Engine;
use roxmltree::Node;

use crate::geo::{Point, Shape};
use crate::xml::{self, XmlError};

pub const NAMESPACE: &str = "urn:oasis:names:tc:emergency:cap:1.2";
/// Largest CAP document: its audio may travel inside (`derefUri`).
pub const MAX_CAP_BYTES: usize = 24 << 20;
/// Largest resource, decoded or fetched.
pub const MAX_RESOURCE_BYTES: usize = 16 << 20;
pub const MAX_INFOS: usize = 8;
pub const MAX_RESOURCES: usize = 4;
pub const MAX_AREAS: usize = 64;
pub const MAX_SHAPES: usize = 256;
pub const MAX_GEOCODES: usize = 1024;
pub const MAX_POINTS: usize = 2048;
pub const MAX_REFERENCES: usize = 64;
pub const MAX_SHORT: usize = 256;
pub const MAX_LONG: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Actual,
    Exercise,
    System,
    Test,
    Draft,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    Alert,
    Update,
    Cancel,
    Ack,
    Error,
}

/// A message another refers to: sender, identifier, sent (as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub sender: String,
    pub identifier: String,
    pub sent: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CapAlert {
    pub identifier: String,
    pub sender: String,
    pub sent_ms: i64,
    pub status: Status,
    pub msg_type: MsgType,
    pub references: Vec<Reference>,
    pub note: String,
    pub infos: Vec<Info>,
    /// An enveloped XML signature is present (not verified: see
    /// docs/gateways.md).
    pub signed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    pub language: String,
    pub categories: Vec<String>,
    pub event: String,
    pub urgency: String,
    pub severity: String,
    pub certainty: String,
    /// (valueName, value)
    pub event_codes: Vec<(String, String)>,
    pub effective_ms: Option<i64>,
    pub onset_ms: Option<i64>,
    pub expires_ms: Option<i64>,
    pub sender_name: String,
    pub headline: String,
    pub description: String,
    pub instruction: String,
    pub resources: Vec<Resource>,
    pub areas: Vec<Area>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub desc: String,
    pub mime: String,
    pub size: Option<u64>,
    pub uri: Option<String>,
    /// The resource itself, decoded from `derefUri`.
    pub data: Option<Vec<u8>>,
    /// SHA-1 of the resource, hex, as the sender gave it.
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Area {
    pub desc: String,
    pub shapes: Vec<Shape>,
    /// (valueName, value)
    pub geocodes: Vec<(String, String)>,
}

const CATEGORIES: [&str; 12] = [
    "Geo",
    "Met",
    "Safety",
    "Security",
    "Rescue",
    "Fire",
    "Health",
    "Env",
    "Transport",
    "Infra",
    "CBRNE",
    "Other",
];
const URGENCIES: [&str; 5] = ["Immediate", "Expected", "Future", "Past", "Unknown"];
const SEVERITIES: [&str; 5] = ["Extreme", "Severe", "Moderate", "Minor", "Unknown"];
const CERTAINTIES: [&str; 5] = ["Observed", "Likely", "Possible", "Unlikely", "Unknown"];

/// CAP's date-time: `YYYY-MM-DDThh:mm:ss` and an offset `±hh:mm`
/// (the standard forbids `Z`), as unix ms.
pub fn parse_datetime(s: &str, field: &str) -> Result<i64, XmlError> {
    let bad = |why: &str| {
        xml::invalid(
            field,
            format!("{s:?} is not a CAP date-time like 2026-12-07T20:00:00+08:00 ({why})"),
        )
    };
    let b = s.as_bytes();
    if b.len() != 25 {
        return Err(bad(if s.ends_with('Z') {
            "CAP forbids Z: write the offset, +00:00"
        } else {
            "wrong length"
        }));
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, XmlError> {
        let part = &s[r];
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().map_err(|_| bad("not a number"))
        } else {
            Err(bad("not a number"))
        }
    };
    let seps = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (22, b':'),
    ];
    if seps.iter().any(|(i, c)| b[*i] != *c) || !matches!(b[19], b'+' | b'-') {
        return Err(bad("separators"));
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let (oh, om) = (num(20..22)?, num(23..25)?);
    if h > 23 || mi > 59 || sec > 60 || oh > 14 || om > 59 {
        return Err(bad("out of range"));
    }
    let sign = if b[19] == b'-' { -1 } else { 1 };
    let offset = (sign * (oh * 60 + om)) as i16;
    let day = protocol::schedule::days_from_civil(y as i32, mo as u8, d as u8)
        .ok_or_else(|| bad("no such day"))?;
    Ok(protocol::schedule::at_second(
        day,
        (h * 3600 + mi * 60 + sec) as u32,
        offset,
    ))
}

/// Unix ms as a CAP date-time in China time (+08:00).
pub fn format_datetime(ms: i64) -> String {
    format!("{}+08:00", crate::ebd::china_civil(ms, 'T'))
}

fn one_of(value: String, allowed: &[&str], field: &str) -> Result<String, XmlError> {
    if allowed.contains(&value.as_str()) {
        Ok(value)
    } else {
        Err(xml::invalid(
            field,
            format!("{value:?} is not one of {}", allowed.join(", ")),
        ))
    }
}

/// CAP's identifier and sender: no spaces, commas or restricted characters.
fn token(value: String, field: &str) -> Result<String, XmlError> {
    if value
        .chars()
        .any(|c| c.is_whitespace() || c == ',' || c == '<' || c == '&')
    {
        return Err(xml::invalid(field, "must not hold spaces, commas, < or &"));
    }
    xml::bounded(value, MAX_SHORT, field)
}

fn short(node: Node<'_, '_>, name: &str, path: &str) -> Result<String, XmlError> {
    xml::bounded(
        xml::text(node, name).unwrap_or_default(),
        MAX_SHORT,
        &format!("{path}/{name}"),
    )
}

fn long(node: Node<'_, '_>, name: &str, path: &str) -> Result<String, XmlError> {
    xml::bounded(
        xml::text(node, name).unwrap_or_default(),
        MAX_LONG,
        &format!("{path}/{name}"),
    )
}

fn optional_time(node: Node<'_, '_>, name: &str, path: &str) -> Result<Option<i64>, XmlError> {
    xml::text(node, name)
        .map(|t| parse_datetime(&t, &format!("{path}/{name}")))
        .transpose()
}

fn pairs(
    node: Node<'_, '_>,
    name: &str,
    path: &str,
    max: usize,
) -> Result<Vec<(String, String)>, XmlError> {
    let mut out = Vec::new();
    for n in xml::children(node, name) {
        if out.len() >= max {
            return Err(xml::invalid(
                format!("{path}/{name}"),
                format!("more than {max}"),
            ));
        }
        let p = format!("{path}/{name}");
        out.push((
            xml::bounded(xml::required(n, "valueName", &p)?, MAX_SHORT, &p)?,
            xml::bounded(xml::required(n, "value", &p)?, MAX_SHORT, &p)?,
        ));
    }
    Ok(out)
}

fn point(pair: &str, field: &str) -> Result<Point, XmlError> {
    let bad = || xml::invalid(field, format!("{pair:?} is not a WGS 84 point \"lat,lon\""));
    let (lat, lon) = pair.split_once(',').ok_or_else(bad)?;
    let lat: f64 = lat.trim().parse().map_err(|_| bad())?;
    let lon: f64 = lon.trim().parse().map_err(|_| bad())?;
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(bad());
    }
    Ok(Point { lat, lon })
}

fn polygon(text: &str, field: &str) -> Result<Shape, XmlError> {
    let mut ring = Vec::new();
    for pair in text.split_whitespace() {
        if ring.len() >= MAX_POINTS {
            return Err(xml::invalid(
                field,
                format!("more than {MAX_POINTS} points"),
            ));
        }
        ring.push(point(pair, field)?);
    }
    if ring.len() < 4 {
        return Err(xml::invalid(
            field,
            "a polygon needs at least 4 points, the first repeated last",
        ));
    }
    if ring.first() != ring.last() {
        return Err(xml::invalid(field, "the last point must repeat the first"));
    }
    Ok(Shape::Polygon(ring))
}

fn circle(text: &str, field: &str) -> Result<Shape, XmlError> {
    let bad = || {
        xml::invalid(
            field,
            format!("{text:?} is not a circle \"lat,lon radius_km\""),
        )
    };
    let mut parts = text.split_whitespace();
    let (Some(centre), Some(radius), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let centre = point(centre, field)?;
    let radius_km: f64 = radius.parse().map_err(|_| bad())?;
    if !(0.0..=20_000.0).contains(&radius_km) {
        return Err(bad());
    }
    Ok(Shape::Circle { centre, radius_km })
}

impl CapAlert {
    /// Reads and checks a CAP 1.2 `alert`.
    pub fn parse(bytes: &[u8]) -> Result<CapAlert, XmlError> {
        if bytes.len() > MAX_CAP_BYTES {
            return Err(XmlError::TooLarge {
                what: "alert",
                len: bytes.len(),
                max: MAX_CAP_BYTES,
            });
        }
        let doc = xml::parse_up_to(bytes, "alert", MAX_CAP_BYTES)?;
        let root = doc.root_element();
        if root.tag_name().name() != "alert" {
            return Err(xml::invalid("alert", "the root element is not alert"));
        }
        match root.tag_name().namespace() {
            Some(NAMESPACE) => {}
            other => {
                return Err(xml::invalid(
                    "alert",
                    format!(
                        "namespace {:?} is not CAP 1.2 ({NAMESPACE})",
                        other.unwrap_or("")
                    ),
                ))
            }
        }
        let p = "alert";
        let identifier = token(xml::required(root, "identifier", p)?, "alert/identifier")?;
        let sender = token(xml::required(root, "sender", p)?, "alert/sender")?;
        let sent_ms = parse_datetime(&xml::required(root, "sent", p)?, "alert/sent")?;
        let status = match one_of(
            xml::required(root, "status", p)?,
            &["Actual", "Exercise", "System", "Test", "Draft"],
            "alert/status",
        )?
        .as_str()
        {
            "Actual" => Status::Actual,
            "Exercise" => Status::Exercise,
            "System" => Status::System,
            "Test" => Status::Test,
            _ => Status::Draft,
        };
        let msg_type = match one_of(
            xml::required(root, "msgType", p)?,
            &["Alert", "Update", "Cancel", "Ack", "Error"],
            "alert/msgType",
        )?
        .as_str()
        {
            "Alert" => MsgType::Alert,
            "Update" => MsgType::Update,
            "Cancel" => MsgType::Cancel,
            "Ack" => MsgType::Ack,
            _ => MsgType::Error,
        };
        let scope = one_of(
            xml::required(root, "scope", p)?,
            &["Public", "Restricted", "Private"],
            "alert/scope",
        )?;
        if scope == "Restricted" && xml::text(root, "restriction").is_none() {
            return Err(XmlError::Missing(
                "alert/restriction (scope is Restricted)".into(),
            ));
        }
        let mut references = Vec::new();
        if let Some(refs) = xml::text(root, "references") {
            for r in refs.split_whitespace() {
                if references.len() >= MAX_REFERENCES {
                    return Err(xml::invalid(
                        "alert/references",
                        format!("more than {MAX_REFERENCES}"),
                    ));
                }
                let mut parts = r.split(',');
                match (parts.next(), parts.next(), parts.next(), parts.next()) {
                    (Some(s), Some(i), Some(t), None) if !s.is_empty() && !i.is_empty() => {
                        parse_datetime(t, "alert/references")?;
                        references.push(Reference {
                            sender: s.into(),
                            identifier: i.into(),
                            sent: t.into(),
                        })
                    }
                    _ => {
                        return Err(xml::invalid(
                            "alert/references",
                            format!("{r:?} is not sender,identifier,sent"),
                        ))
                    }
                }
            }
        }
        if matches!(msg_type, MsgType::Update | MsgType::Cancel) && references.is_empty() {
            return Err(XmlError::Missing(
                "alert/references (an Update or Cancel names the alert it acts on)".into(),
            ));
        }
        let mut infos = Vec::new();
        for (i, node) in xml::children(root, "info").enumerate() {
            if i >= MAX_INFOS {
                return Err(xml::invalid("alert/info", format!("more than {MAX_INFOS}")));
            }
            infos.push(Info::parse(node, &format!("alert/info[{}]", i + 1))?);
        }
        Ok(CapAlert {
            identifier,
            sender,
            sent_ms,
            status,
            msg_type,
            references,
            note: long(root, "note", p)?,
            infos,
            signed: xml::child(root, "Signature").is_some(),
        })
    }

    /// The info block to act on: the first in Chinese, else the first.
    pub fn chosen_info(&self) -> Option<&Info> {
        self.infos
            .iter()
            .find(|i| i.language.to_ascii_lowercase().starts_with("zh"))
            .or(self.infos.first())
    }
}

impl Info {
    fn parse(node: Node<'_, '_>, p: &str) -> Result<Info, XmlError> {
        let mut categories = Vec::new();
        for c in xml::children(node, "category") {
            let value = c.text().unwrap_or("").trim().to_string();
            if categories.len() < CATEGORIES.len() {
                categories.push(one_of(value, &CATEGORIES, &format!("{p}/category"))?);
            }
        }
        if categories.is_empty() {
            return Err(XmlError::Missing(format!("{p}/category")));
        }
        let mut resources = Vec::new();
        for (i, r) in xml::children(node, "resource").enumerate() {
            if i >= MAX_RESOURCES {
                return Err(xml::invalid(
                    format!("{p}/resource"),
                    format!("more than {MAX_RESOURCES}"),
                ));
            }
            resources.push(Resource::parse(r, &format!("{p}/resource[{}]", i + 1))?);
        }
        let mut areas = Vec::new();
        let mut shapes = 0;
        let mut geocodes = 0;
        for (i, a) in xml::children(node, "area").enumerate() {
            if i >= MAX_AREAS {
                return Err(xml::invalid(
                    format!("{p}/area"),
                    format!("more than {MAX_AREAS}"),
                ));
            }
            let area = Area::parse(a, &format!("{p}/area[{}]", i + 1))?;
            shapes += area.shapes.len();
            geocodes += area.geocodes.len();
            if shapes > MAX_SHAPES || geocodes > MAX_GEOCODES {
                return Err(xml::invalid(
                    format!("{p}/area"),
                    format!("more than {MAX_SHAPES} shapes or {MAX_GEOCODES} geocodes"),
                ));
            }
            areas.push(area);
        }
        Ok(Info {
            language: xml::text(node, "language").unwrap_or_else(|| "en-US".into()),
            categories,
            event: xml::bounded(
                xml::required(node, "event", p)?,
                MAX_SHORT,
                &format!("{p}/event"),
            )?,
            urgency: one_of(
                xml::required(node, "urgency", p)?,
                &URGENCIES,
                &format!("{p}/urgency"),
            )?,
            severity: one_of(
                xml::required(node, "severity", p)?,
                &SEVERITIES,
                &format!("{p}/severity"),
            )?,
            certainty: one_of(
                xml::required(node, "certainty", p)?,
                &CERTAINTIES,
                &format!("{p}/certainty"),
            )?,
            event_codes: pairs(node, "eventCode", p, 64)?,
            effective_ms: optional_time(node, "effective", p)?,
            onset_ms: optional_time(node, "onset", p)?,
            expires_ms: optional_time(node, "expires", p)?,
            sender_name: short(node, "senderName", p)?,
            headline: short(node, "headline", p)?,
            description: long(node, "description", p)?,
            instruction: long(node, "instruction", p)?,
            resources,
            areas,
        })
    }

    /// Our severity (GY/T numbering: 1 特别重大 … 4 一般, 0 unknown).
    pub fn national_severity(&self) -> u8 {
        match self.severity.as_str() {
            "Extreme" => 1,
            "Severe" => 2,
            "Moderate" => 3,
            "Minor" => 4,
            _ => 0,
        }
    }

    /// The national event type (GB/T 35965, five characters) when an
    /// `eventCode` gives one.
    pub fn national_event_type(&self) -> Option<String> {
        self.event_codes.iter().find_map(|(name, value)| {
            let named = ["GB/T 35965", "GBT35965", "EventType", "EBS"]
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name.trim()));
            let well_formed = value.len() == 5
                && value
                    .bytes()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase());
            (named && well_formed).then(|| value.clone())
        })
    }
}

/// `geocode` value names read as area codes (6, 9 or 12 digits).
pub const AREA_CODE_NAMES: [&str; 5] = ["AreaCode", "GB/T 2260", "GB2260", "行政区划代码", "EBS"];

impl Area {
    fn parse(node: Node<'_, '_>, p: &str) -> Result<Area, XmlError> {
        let desc = xml::bounded(
            xml::required(node, "areaDesc", p)?,
            MAX_SHORT,
            &format!("{p}/areaDesc"),
        )?;
        let mut shapes = Vec::new();
        for poly in xml::children(node, "polygon") {
            shapes.push(polygon(poly.text().unwrap_or(""), &format!("{p}/polygon"))?);
            if shapes.len() > MAX_SHAPES {
                return Err(xml::invalid(
                    format!("{p}/polygon"),
                    format!("more than {MAX_SHAPES}"),
                ));
            }
        }
        for c in xml::children(node, "circle") {
            shapes.push(circle(c.text().unwrap_or(""), &format!("{p}/circle"))?);
            if shapes.len() > MAX_SHAPES {
                return Err(xml::invalid(
                    format!("{p}/circle"),
                    format!("more than {MAX_SHAPES}"),
                ));
            }
        }
        Ok(Area {
            desc,
            shapes,
            geocodes: pairs(node, "geocode", p, MAX_GEOCODES)?,
        })
    }

    /// The area codes its geocodes give, 12 digits (shorter ones padded).
    pub fn area_codes(&self) -> Vec<String> {
        self.geocodes
            .iter()
            .filter(|(name, _)| {
                AREA_CODE_NAMES
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(name.trim()))
            })
            .filter(|(_, v)| matches!(v.len(), 6 | 9 | 12) && v.bytes().all(|b| b.is_ascii_digit()))
            .map(|(_, v)| format!("{v:0<12}"))
            .collect()
    }
}

impl Resource {
    fn parse(node: Node<'_, '_>, p: &str) -> Result<Resource, XmlError> {
        let data = match xml::child(node, "derefUri") {
            Some(n) => {
                let text: String = n
                    .text()
                    .unwrap_or("")
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect();
                if text.len() > MAX_RESOURCE_BYTES / 3 * 4 + 4 {
                    return Err(xml::invalid(
                        format!("{p}/derefUri"),
                        format!("the resource is over {MAX_RESOURCE_BYTES} bytes"),
                    ));
                }
                Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .map_err(|_| xml::invalid(format!("{p}/derefUri"), "not base64"))?,
                )
            }
            None => None,
        };
        let size = xml::text(node, "size")
            .map(|s| {
                s.parse::<u64>().map_err(|_| {
                    xml::invalid(format!("{p}/size"), format!("{s:?} is not a byte count"))
                })
            })
            .transpose()?;
        let digest = xml::text(node, "digest");
        if let Some(d) = &digest {
            if d.len() != 40 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(xml::invalid(
                    format!("{p}/digest"),
                    "not a SHA-1 digest (40 hex digits)",
                ));
            }
        }
        let r = Resource {
            desc: xml::bounded(
                xml::required(node, "resourceDesc", p)?,
                MAX_SHORT,
                &format!("{p}/resourceDesc"),
            )?,
            mime: xml::bounded(
                xml::required(node, "mimeType", p)?,
                MAX_SHORT,
                &format!("{p}/mimeType"),
            )?,
            size,
            uri: xml::text(node, "uri")
                .map(|u| xml::bounded(u, 2048, &format!("{p}/uri")))
                .transpose()?,
            data,
            digest,
        };
        if let Some(data) = &r.data {
            r.check(data, p)?;
        }
        Ok(r)
    }

    /// Checks fetched or decoded bytes against the size and digest the
    /// alert gave.
    pub fn check(&self, data: &[u8], p: &str) -> Result<(), XmlError> {
        if data.len() > MAX_RESOURCE_BYTES {
            return Err(xml::invalid(
                format!("{p}/resource"),
                format!("{} bytes; the limit is {MAX_RESOURCE_BYTES}", data.len()),
            ));
        }
        if let Some(d) = &self.digest {
            use sha1::Digest;
            if !hex::encode(sha1::Sha1::digest(data)).eq_ignore_ascii_case(d) {
                return Err(xml::invalid(
                    format!("{p}/digest"),
                    "does not match the resource",
                ));
            }
        }
        Ok(())
    }

    pub fn is_audio(&self) -> bool {
        self.mime.to_ascii_lowercase().starts_with("audio/")
    }
}

/// What a CAP alert written here says: one broadcast of the platform.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub identifier: &'a str,
    pub sender: &'a str,
    pub sender_name: &'a str,
    pub sent_ms: i64,
    pub drill: bool,
    /// The alert it cancels: (identifier, sent_ms).
    pub cancels: Option<(&'a str, i64)>,
    pub event_type: &'a str,
    pub event: &'a str,
    /// GY/T numbering.
    pub severity: u8,
    pub start_ms: i64,
    pub end_ms: i64,
    pub headline: &'a str,
    pub description: &'a str,
    /// (12-digit code, name)
    pub areas: &'a [(String, String)],
}

/// The CAP category of a national event type (GB/T 35965's classes).
pub fn category_of(event_type: &str) -> &'static str {
    match event_type.get(..3).unwrap_or("") {
        "11A" | "11B" | "11E" => "Met",
        "11C" | "11D" => "Geo",
        "11F" => "Env",
        "11G" => "Fire",
        p if p.starts_with("12") => "Safety",
        p if p.starts_with("13") => "Health",
        p if p.starts_with("14") => "Security",
        _ => "Other",
    }
}

fn cap_severity(national: u8) -> &'static str {
    match national {
        1 => "Extreme",
        2 => "Severe",
        3 => "Moderate",
        4 => "Minor",
        _ => "Unknown",
    }
}

/// CAP's identifier and sender alphabet: what is not allowed becomes `_`.
pub fn cap_token(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_whitespace() || c == ',' || c == '<' || c == '&' {
                '_'
            } else {
                c
            }
        })
        .collect()
}

impl Outgoing<'_> {
    /// The `alert` element (no XML declaration: it is embedded in feeds
    /// too), valid against the CAP 1.2 schema.
    pub fn element(&self) -> String {
        let e = xml::escape;
        let sender = cap_token(self.sender);
        let (msg_type, references) = match self.cancels {
            Some((id, sent)) => (
                "Cancel",
                format!(
                    "<references>{},{},{}</references>",
                    e(&sender),
                    e(&cap_token(id)),
                    format_datetime(sent)
                ),
            ),
            None => ("Alert", String::new()),
        };
        let mut areas = String::new();
        if !self.areas.is_empty() {
            let names: Vec<&str> = self.areas.iter().map(|(_, n)| n.as_str()).collect();
            areas.push_str(&format!(
                "<area><areaDesc>{}</areaDesc>",
                e(&names.join("、"))
            ));
            for (code, _) in self.areas {
                areas.push_str(&format!(
                    "<geocode><valueName>AreaCode</valueName><value>{}</value></geocode>",
                    e(code)
                ));
            }
            areas.push_str("</area>");
        }
        format!(
            "<alert xmlns=\"{NAMESPACE}\">\
             <identifier>{}</identifier><sender>{}</sender><sent>{}</sent>\
             <status>{}</status><msgType>{msg_type}</msgType><scope>Public</scope>{references}\
             <info><language>zh-CN</language><category>{}</category><event>{}</event>\
             <urgency>{}</urgency><severity>{}</severity><certainty>{}</certainty>\
             <eventCode><valueName>GB/T 35965</valueName><value>{}</value></eventCode>\
             <effective>{}</effective><onset>{}</onset><expires>{}</expires>\
             <senderName>{}</senderName><headline>{}</headline><description>{}</description>\
             {areas}</info></alert>",
            e(&cap_token(self.identifier)),
            e(&sender),
            format_datetime(self.sent_ms),
            if self.drill { "Exercise" } else { "Actual" },
            category_of(self.event_type),
            e(if self.event.is_empty() {
                self.headline
            } else {
                self.event
            }),
            if self.cancels.is_some() {
                "Past"
            } else {
                "Immediate"
            },
            cap_severity(self.severity),
            if self.drill { "Unknown" } else { "Observed" },
            e(self.event_type),
            format_datetime(self.sent_ms),
            format_datetime(self.start_ms),
            format_datetime(self.end_ms),
            e(self.sender_name),
            e(self.headline),
            e(self.description),
        )
    }

    /// A CAP document of its own.
    pub fn document(&self) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}\n",
            self.element()
        )
    }
}

/// An Atom feed (RFC 4287) of `alerts`, each entry carrying its CAP alert
/// inline and a link to it alone (`link_base` + identifier).
pub fn atom_feed(
    feed_id: &str,
    title: &str,
    updated_ms: i64,
    link_base: &str,
    alerts: &[Outgoing<'_>],
) -> String {
    let e = xml::escape;
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\
         <id>{}</id><title>{}</title><updated>{}</updated><author><name>{}</name></author>",
        e(feed_id),
        e(title),
        format_datetime(updated_ms),
        e(title)
    );
    for a in alerts {
        out.push_str(&format!(
            "<entry><id>{}</id><title>{}</title><updated>{}</updated>\
             <link rel=\"alternate\" type=\"application/cap+xml\" href=\"{}{}\"/>\
             <content type=\"application/cap+xml\">{}</content></entry>",
            e(&format!("{feed_id}:{}", a.identifier)),
            e(a.headline),
            format_datetime(a.sent_ms),
            e(link_base),
            e(&cap_token(a.identifier)),
            a.element()
        ));
    }
    out.push_str("</feed>\n");
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const ALERT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>CN-METEO-20261207-0001</identifier>
  <sender>qxt@jx.cma.cn</sender>
  <sent>2026-12-07T20:00:00+08:00</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <language>en-US</language><category>Met</category><event>Rainstorm</event>
    <urgency>Immediate</urgency><severity>Severe</severity><certainty>Likely</certainty>
    <headline>Rainstorm orange warning</headline>
  </info>
  <info>
    <language>zh-CN</language><category>Met</category><event>暴雨</event>
    <urgency>Immediate</urgency><severity>Severe</severity><certainty>Likely</certainty>
    <eventCode><valueName>GB/T 35965</valueName><value>11B03</value></eventCode>
    <onset>2026-12-07T20:05:00+08:00</onset><expires>2026-12-07T23:00:00+08:00</expires>
    <senderName>江西省气象台</senderName>
    <headline>暴雨橙色预警</headline>
    <description>预计未来3小时降雨量将达50毫米以上。</description>
    <instruction>请远离河道，转移到安全地带。</instruction>
    <area>
      <areaDesc>经开区东部</areaDesc>
      <polygon>28.0,115.0 28.0,116.0 29.0,116.0 29.0,115.0 28.0,115.0</polygon>
      <circle>28.68,115.86 5</circle>
      <geocode><valueName>GB/T 2260</valueName><value>360121</value></geocode>
      <geocode><valueName>SAME</valueName><value>006113</value></geocode>
    </area>
  </info>
</alert>"#;

    #[test]
    fn an_alert_is_read_with_its_chinese_info() {
        let a = CapAlert::parse(ALERT.as_bytes()).unwrap();
        assert_eq!(a.identifier, "CN-METEO-20261207-0001");
        assert_eq!(a.status, Status::Actual);
        assert_eq!(a.msg_type, MsgType::Alert);
        let i = a.chosen_info().unwrap();
        assert_eq!(i.headline, "暴雨橙色预警");
        assert_eq!(i.national_severity(), 2);
        assert_eq!(i.national_event_type().as_deref(), Some("11B03"));
        assert_eq!(i.areas[0].area_codes(), ["360121000000"]);
        assert_eq!(i.areas[0].shapes.len(), 2);
        assert_eq!(
            i.expires_ms.unwrap() - i.onset_ms.unwrap(),
            (2 * 3600 + 55 * 60) * 1000
        );
        assert_eq!(format_datetime(a.sent_ms), "2026-12-07T20:00:00+08:00");
    }

    #[test]
    fn each_fault_is_named() {
        let bad = |from: &str, to: &str| {
            let doc = ALERT.replacen(from, to, 1);
            CapAlert::parse(doc.as_bytes()).unwrap_err().to_string()
        };
        assert!(bad("<status>Actual", "<status>Real").contains("alert/status"));
        assert!(bad("<msgType>Alert", "<msgType>Cancel").contains("alert/references"));
        assert!(bad("20:00:00+08:00</sent>", "20:00:00Z</sent>").contains("forbids Z"));
        assert!(bad("<sender>qxt@jx.cma.cn", "<sender>qxt jx").contains("alert/sender"));
        assert!(bad("<identifier>CN-METEO-20261207-0001</identifier>", "")
            .contains("alert/identifier: missing"));
        assert!(bad(
            "<severity>Severe</severity><certainty>Likely</certainty>\n    <eventCode>",
            "<severity>Awful</severity><certainty>Likely</certainty>\n    <eventCode>"
        )
        .contains("alert/info[2]/severity"));
        assert!(bad(" 28.0,115.0</polygon>", "</polygon>").contains("polygon"));
        assert!(bad("28.68,115.86 5", "28.68,915.86 5").contains("circle"));
        assert!(bad("cap:1.2", "cap:1.1").contains("not CAP 1.2"));
        assert!(bad(
            "<category>Met</category><event>暴雨",
            "<category>Weather</category><event>暴雨"
        )
        .contains("category"));
    }

    #[test]
    fn resources_are_checked_against_their_digest() {
        use sha1::Digest;
        let audio = b"ID3 not really an mp3";
        let good = hex::encode(sha1::Sha1::digest(audio));
        let with = |digest: &str| {
            ALERT.replace(
                "<area>",
                &format!(
                    "<resource><resourceDesc>audio</resourceDesc><mimeType>audio/mpeg</mimeType>\
                     <derefUri>{}</derefUri><digest>{digest}</digest></resource><area>",
                    base64::engine::general_purpose::STANDARD.encode(audio)
                ),
            )
        };
        let a = CapAlert::parse(with(&good).as_bytes()).unwrap();
        let r = &a.chosen_info().unwrap().resources[0];
        assert_eq!(r.data.as_deref(), Some(&audio[..]));
        assert!(r.is_audio());
        let e = CapAlert::parse(with(&"0".repeat(40)).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("digest"), "{e}");
    }

    #[test]
    fn what_is_written_reads_back() {
        let areas = [("360121102201".to_string(), "前进村".to_string())];
        let out = Outgoing {
            identifier: "36012100000003140101012026120700001",
            sender: "经开区 应急广播平台",
            sender_name: "经开区应急广播平台",
            sent_ms: 1_796_644_800_000,
            drill: true,
            cancels: None,
            event_type: "11B03",
            event: "暴雨",
            severity: 2,
            start_ms: 1_796_644_800_000,
            end_ms: 1_796_648_400_000,
            headline: "暴雨<橙色>预警",
            description: "请注意 & 防范",
            areas: &areas,
        };
        let back = CapAlert::parse(out.document().as_bytes()).unwrap();
        assert_eq!(back.status, Status::Exercise);
        assert_eq!(back.sender, "经开区_应急广播平台");
        let i = back.chosen_info().unwrap();
        assert_eq!(i.headline, "暴雨<橙色>预警");
        assert_eq!(i.areas[0].area_codes(), ["360121102201"]);
        assert_eq!(i.expires_ms, Some(1_796_648_400_000));
        let cancel = Outgoing {
            cancels: Some(("x1", 1_796_644_800_000)),
            ..out
        };
        let back = CapAlert::parse(cancel.document().as_bytes()).unwrap();
        assert_eq!(back.msg_type, MsgType::Cancel);
        assert_eq!(back.references[0].identifier, "x1");
        let feed = atom_feed("urn:ebs:feed", "经开区", 0, "/api/alerts/cap/", &[cancel]);
        assert!(crate::xml::parse(feed.as_bytes(), "feed").is_ok());
    }
}
