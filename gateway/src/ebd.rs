//! The data of an EBD package (GY/T 385 / GD/J 082), read only after its
//! signature verified: the envelope (id, type, source, destination, time)
//! and, for an EBM, the message: id, type (1 broadcast, 2 cancel with the
//! related EBM, 3–5 drills), sender, event type, severity, start and end,
//! title and text, language, areas, auxiliary audio. Every field is
//! checked against its rule and named when it fails. Also the EBDs this
//! side writes: EBDResponse and EBMStateResponse.

use roxmltree::Node;

use crate::xml::{self, XmlError};

/// Result codes of an EBDResponse, as the standard numbers them (the one
/// enum the verifier's refusals map to as well).
pub use protocol::ResultCode;

/// An EBD as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ebd {
    pub id: String,
    pub kind: String,
    /// The sending resource (its EBRID).
    pub src: String,
    pub dest: Option<String>,
    pub body: EbdBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EbdBody {
    Ebm(Ebm),
    ConnectionCheck,
    /// The sender asks how a message it sent stands.
    EbmStateRequest {
        ebm_id: String,
    },
    /// An answer: the result code and its words.
    Response {
        code: u8,
        desc: String,
    },
    /// How a message stands there, with its coverage (`ResBrdStat`:
    /// playing/finished/terminals).
    StateResponse {
        ebm_id: String,
        state: u8,
        desc: String,
        coverage: String,
    },
    /// A kind this gateway does not act on (answered "received").
    Other,
}

/// An emergency broadcast message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ebm {
    /// 35 digits: the issuing platform's resource code, date, sequence.
    pub id: String,
    /// 1 broadcast, 2 cancel, 3–5 drills.
    pub msg_type: u8,
    /// The message a cancel refers to.
    pub related: Option<String>,
    pub sender_name: String,
    pub sender_code: String,
    pub sent_ms: i64,
    /// 5 characters, e.g. 11B03.
    pub event_type: String,
    /// 0 unknown, 1 特别重大 … 4 一般.
    pub severity: u8,
    pub start_ms: i64,
    pub end_ms: i64,
    pub language: String,
    pub title: String,
    pub text: String,
    /// 12-digit area codes.
    pub areas: Vec<String>,
    pub audio: Vec<Auxiliary>,
}

/// A resource file the message names (its audio).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auxiliary {
    pub kind: String,
    /// The file's name in the package.
    pub name: String,
    pub size: Option<u64>,
    pub digest: Option<String>,
}

pub const MAX_TITLE: usize = 256;
pub const MAX_TEXT: usize = 8192;
pub const MAX_AREAS: usize = 512;
pub const MAX_AUDIO: usize = 4;

/// "yyyy-MM-dd HH:mm:ss" in China time (UTC+8), as unix ms.
pub fn parse_time(s: &str, field: &str) -> Result<i64, XmlError> {
    let bad = || xml::invalid(field, format!("{s:?} is not a time yyyy-MM-dd HH:mm:ss"));
    let s = s.trim().replace('T', " ");
    let (date, clock) = s.split_once(' ').ok_or_else(bad)?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = match (d.next(), d.next(), d.next(), d.next()) {
        (Some(Ok(y)), Some(Ok(m)), Some(Ok(day)), None) => (y, m, day),
        _ => return Err(bad()),
    };
    let mut c = clock.split(':').map(|p| p.parse::<i64>());
    let (h, mi, sec) = match (c.next(), c.next(), c.next(), c.next()) {
        (Some(Ok(h)), Some(Ok(mi)), Some(Ok(sec)), None) => (h, mi, sec),
        _ => return Err(bad()),
    };
    if !(2000..=2200).contains(&y)
        || !(0..24).contains(&h)
        || !(0..60).contains(&mi)
        || !(0..61).contains(&sec)
    {
        return Err(bad());
    }
    let day_n =
        protocol::schedule::days_from_civil(y as i32, m as u8, day as u8).ok_or_else(bad)?;
    Ok(protocol::schedule::at_second(
        day_n,
        (h * 3600 + mi * 60 + sec) as u32,
        protocol::schedule::CHINA_OFFSET_MINUTES,
    ))
}

/// Unix ms in China time: "yyyy-MM-dd`sep`HH:mm:ss" (the standard's
/// form with a space; CAP's with `T`, the offset added by the caller).
pub fn china_civil(ms: i64, sep: char) -> String {
    let off = protocol::schedule::CHINA_OFFSET_MINUTES;
    let day = protocol::schedule::local_day(ms, off);
    let secs = (ms - protocol::schedule::at_second(day, 0, off)) / 1000;
    let (y, m, d) = protocol::schedule::civil_from_days(day);
    format!(
        "{y:04}-{m:02}-{d:02}{sep}{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Unix ms as "yyyy-MM-dd HH:mm:ss" China time.
pub fn format_time(ms: i64) -> String {
    china_civil(ms, ' ')
}

fn digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

impl Ebd {
    /// Reads verified EBD bytes.
    pub fn parse(bytes: &[u8]) -> Result<Ebd, XmlError> {
        let doc = xml::parse(bytes, "EBD")?;
        let root = doc.root_element();
        if root.tag_name().name() != "EBD" {
            return Err(xml::invalid("EBD", "the root element is not EBD"));
        }
        let id = xml::bounded(xml::required(root, "EBDID", "EBD")?, 64, "EBD/EBDID")?;
        let kind = xml::required(root, "EBDType", "EBD")?;
        let src_node =
            xml::child(root, "SRC").ok_or_else(|| XmlError::Missing("EBD/SRC".into()))?;
        let src = xml::bounded(
            xml::required(src_node, "EBRID", "EBD/SRC")?,
            64,
            "EBD/SRC/EBRID",
        )?;
        let dest = xml::child(root, "DEST").and_then(|d| xml::text(d, "EBRID"));
        let body = match kind.as_str() {
            "EBM" => {
                let ebm =
                    xml::child(root, "EBM").ok_or_else(|| XmlError::Missing("EBD/EBM".into()))?;
                EbdBody::Ebm(Ebm::parse(ebm)?)
            }
            "ConnectionCheck" => EbdBody::ConnectionCheck,
            "EBMStateRequest" => {
                let r = xml::child(root, "EBMStateRequest")
                    .and_then(|r| xml::child(r, "EBM"))
                    .ok_or_else(|| XmlError::Missing("EBD/EBMStateRequest/EBM".into()))?;
                EbdBody::EbmStateRequest {
                    ebm_id: xml::required(r, "EBMID", "EBD/EBMStateRequest/EBM")?,
                }
            }
            "EBDResponse" => {
                let r = xml::child(root, "EBDResponse")
                    .ok_or_else(|| XmlError::Missing("EBD/EBDResponse".into()))?;
                let code = xml::required(r, "ResultCode", "EBD/EBDResponse")?;
                EbdBody::Response {
                    code: code.parse().ok().filter(|c| *c <= 5).ok_or_else(|| {
                        xml::invalid(
                            "EBD/EBDResponse/ResultCode",
                            format!("{code:?} is not 0 to 5"),
                        )
                    })?,
                    desc: xml::text(r, "ResultDesc").unwrap_or_default(),
                }
            }
            "EBMStateResponse" => {
                let p = "EBD/EBMStateResponse";
                let r = xml::child(root, "EBMStateResponse")
                    .ok_or_else(|| XmlError::Missing(p.into()))?;
                let ebm =
                    xml::child(r, "EBM").ok_or_else(|| XmlError::Missing(format!("{p}/EBM")))?;
                let state = xml::required(r, "BrdState", p)?;
                EbdBody::StateResponse {
                    ebm_id: xml::required(ebm, "EBMID", &format!("{p}/EBM"))?,
                    state: state.parse().ok().filter(|c| *c <= 5).ok_or_else(|| {
                        xml::invalid(format!("{p}/BrdState"), format!("{state:?} is not 0 to 5"))
                    })?,
                    desc: xml::text(r, "BrdStateDesc").unwrap_or_default(),
                    coverage: xml::child(r, "Coverage")
                        .and_then(|c| xml::text(c, "ResBrdStat"))
                        .unwrap_or_default(),
                }
            }
            _ => EbdBody::Other,
        };
        Ok(Ebd {
            id,
            kind,
            src,
            dest,
            body,
        })
    }
}

impl Ebm {
    fn parse(node: Node<'_, '_>) -> Result<Ebm, XmlError> {
        let p = "EBD/EBM";
        let id = xml::required(node, "EBMID", p)?;
        if !digits(&id, 35) {
            return Err(xml::invalid(
                "EBD/EBM/EBMID",
                format!("{id:?} is not 35 digits"),
            ));
        }
        let basic = xml::child(node, "MsgBasicInfo")
            .ok_or_else(|| XmlError::Missing(format!("{p}/MsgBasicInfo")))?;
        let b = "EBD/EBM/MsgBasicInfo";
        let msg_type: u8 = match xml::required(basic, "MsgType", b)?.as_str() {
            t @ ("1" | "2" | "3" | "4" | "5") => t.parse().unwrap_or(1),
            other => {
                return Err(xml::invalid(
                    format!("{b}/MsgType"),
                    format!("{other:?} is not 1 to 5"),
                ))
            }
        };
        let related = xml::child(node, "RelatedEBM").and_then(|r| xml::text(r, "EBMID"));
        if msg_type == 2 && related.is_none() {
            return Err(XmlError::Missing(format!(
                "{p}/RelatedEBM/EBMID (a cancel names what it cancels)"
            )));
        }
        if let Some(r) = &related {
            if !digits(r, 35) {
                return Err(xml::invalid(
                    "EBD/EBM/RelatedEBM/EBMID",
                    format!("{r:?} is not 35 digits"),
                ));
            }
        }
        let severity: u8 = match xml::text(basic, "Severity").as_deref() {
            None => 0,
            Some(s @ ("0" | "1" | "2" | "3" | "4")) => s.parse().unwrap_or(0),
            Some(other) => {
                return Err(xml::invalid(
                    format!("{b}/Severity"),
                    format!("{other:?} is not 0 to 4"),
                ))
            }
        };
        let event_type = xml::text(basic, "EventType").unwrap_or_else(|| "10000".into());
        if event_type.len() != 5
            || !event_type
                .bytes()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        {
            return Err(xml::invalid(
                format!("{b}/EventType"),
                format!("{event_type:?} is not 5 characters 0-9 A-Z"),
            ));
        }
        let sent_ms = parse_time(
            &xml::text(basic, "SendTime")
                .or_else(|| xml::text(basic, "SentTime"))
                .ok_or_else(|| XmlError::Missing(format!("{b}/SendTime")))?,
            &format!("{b}/SendTime"),
        )?;
        let start_ms = parse_time(
            &xml::required(basic, "StartTime", b)?,
            &format!("{b}/StartTime"),
        )?;
        let end_ms = parse_time(
            &xml::required(basic, "EndTime", b)?,
            &format!("{b}/EndTime"),
        )?;
        if end_ms <= start_ms {
            return Err(xml::invalid(format!("{b}/EndTime"), "not after StartTime"));
        }
        let content = xml::child(node, "MsgContent");
        let c = "EBD/EBM/MsgContent";
        let get = |name: &str| content.and_then(|n| xml::text(n, name)).unwrap_or_default();
        let title = xml::bounded(get("MsgTitle"), MAX_TITLE, &format!("{c}/MsgTitle"))?;
        let text = xml::bounded(get("MsgDesc"), MAX_TEXT, &format!("{c}/MsgDesc"))?;
        if msg_type != 2 && title.is_empty() {
            return Err(XmlError::Missing(format!("{c}/MsgTitle")));
        }
        let mut areas = Vec::new();
        for a in get("AreaCode")
            .split([',', '，', ' ', ';'])
            .filter(|a| !a.is_empty())
        {
            // Area codes of 6, 9 or 12 digits; the shorter padded with zeros.
            if !matches!(a.len(), 6 | 9 | 12) || !a.bytes().all(|b| b.is_ascii_digit()) {
                return Err(xml::invalid(
                    format!("{c}/AreaCode"),
                    format!("{a:?} is not an area code"),
                ));
            }
            let padded = format!("{a:0<12}");
            if !areas.contains(&padded) {
                areas.push(padded);
            }
        }
        if msg_type != 2 && areas.is_empty() {
            return Err(XmlError::Missing(format!("{c}/AreaCode")));
        }
        if areas.len() > MAX_AREAS {
            return Err(xml::invalid(
                format!("{c}/AreaCode"),
                format!("more than {MAX_AREAS} areas"),
            ));
        }
        let mut audio = Vec::new();
        if let Some(content) = content {
            for aux in xml::children(content, "Auxiliary") {
                if audio.len() >= MAX_AUDIO {
                    return Err(xml::invalid(
                        format!("{c}/Auxiliary"),
                        format!("more than {MAX_AUDIO}"),
                    ));
                }
                let name = xml::required(aux, "AuxiliaryDesc", &format!("{c}/Auxiliary"))?;
                audio.push(Auxiliary {
                    kind: xml::text(aux, "AuxiliaryType").unwrap_or_default(),
                    name,
                    size: xml::text(aux, "Size").and_then(|s| s.parse().ok()),
                    digest: xml::text(aux, "Digest"),
                });
            }
        }
        Ok(Ebm {
            id,
            msg_type,
            related,
            sender_name: xml::bounded(
                xml::text(basic, "SenderName").unwrap_or_default(),
                256,
                &format!("{b}/SenderName"),
            )?,
            sender_code: xml::bounded(
                xml::text(basic, "SenderCode").unwrap_or_default(),
                64,
                &format!("{b}/SenderCode"),
            )?,
            sent_ms,
            event_type,
            severity,
            start_ms,
            end_ms,
            language: get("LanguageCode"),
            title,
            text,
            areas,
            audio,
        })
    }
}

/// The envelope of an EBD this side writes.
pub struct Envelope<'a> {
    pub id: &'a str,
    pub src: &'a str,
    pub dest: &'a str,
    pub time_ms: i64,
    /// The EBD answered.
    pub related: Option<&'a str>,
}

fn envelope(e: &Envelope<'_>, kind: &str, body: &str) -> String {
    let related = e
        .related
        .map(|r| format!("<RelatedEBD><EBDID>{}</EBDID></RelatedEBD>", xml::escape(r)))
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<EBD><EBDVersion>1.0</EBDVersion>\
         <EBDID>{}</EBDID><EBDType>{kind}</EBDType>\
         <SRC><EBRID>{}</EBRID></SRC><DEST><EBRID>{}</EBRID></DEST>\
         <EBDTime>{}</EBDTime>{related}{body}</EBD>\n",
        xml::escape(e.id),
        xml::escape(e.src),
        xml::escape(e.dest),
        format_time(e.time_ms),
    )
}

/// An EBD holding the EBM `m` (what a platform sends down; the tests and
/// the demo play the upper platform with it). Its Auxiliary entries give
/// each file's SM3 `digest` when known, which binds the audio to the
/// signature.
pub fn ebm_document(e: &Envelope<'_>, m: &Ebm) -> String {
    let x = xml::escape;
    let related = m
        .related
        .as_ref()
        .map(|r| format!("<RelatedEBM><EBMID>{}</EBMID></RelatedEBM>", x(r)))
        .unwrap_or_default();
    let mut aux = String::new();
    for a in &m.audio {
        aux.push_str(&format!(
            "<Auxiliary><AuxiliaryType>{}</AuxiliaryType><AuxiliaryDesc>{}</AuxiliaryDesc>{}{}</Auxiliary>",
            x(&a.kind),
            x(&a.name),
            a.size.map(|n| format!("<Size>{n}</Size>")).unwrap_or_default(),
            a.digest.as_ref().map(|d| format!("<Digest>{}</Digest>", x(d))).unwrap_or_default(),
        ));
    }
    envelope(
        e,
        "EBM",
        &format!(
            "<EBM><EBMVersion>1.0</EBMVersion><EBMID>{}</EBMID>{related}\
             <MsgBasicInfo><MsgType>{}</MsgType><SenderName>{}</SenderName><SenderCode>{}</SenderCode>\
             <SendTime>{}</SendTime><EventType>{}</EventType><Severity>{}</Severity>\
             <StartTime>{}</StartTime><EndTime>{}</EndTime></MsgBasicInfo>\
             <MsgContent><LanguageCode>{}</LanguageCode><MsgTitle>{}</MsgTitle><MsgDesc>{}</MsgDesc>\
             <AreaCode>{}</AreaCode>{aux}</MsgContent></EBM>",
            x(&m.id),
            m.msg_type,
            x(&m.sender_name),
            x(&m.sender_code),
            format_time(m.sent_ms),
            x(&m.event_type),
            m.severity,
            format_time(m.start_ms),
            format_time(m.end_ms),
            x(&m.language),
            x(&m.title),
            x(&m.text),
            x(&m.areas.join(",")),
        ),
    )
}

/// An EBMStateRequest: how does message `ebm_id` stand?
pub fn state_request(e: &Envelope<'_>, ebm_id: &str) -> String {
    envelope(
        e,
        "EBMStateRequest",
        &format!(
            "<EBMStateRequest><EBM><EBMID>{}</EBMID></EBM></EBMStateRequest>",
            xml::escape(ebm_id)
        ),
    )
}

/// An EBDResponse answering `e.related` with `code`.
pub fn response(e: &Envelope<'_>, code: ResultCode, desc: &str) -> String {
    envelope(
        e,
        "EBDResponse",
        &format!(
            "<EBDResponse><ResultCode>{}</ResultCode><ResultDesc>{}</ResultDesc></EBDResponse>",
            code.code(),
            xml::escape(desc)
        ),
    )
}

/// Where a message stands here, with its coverage.
pub struct StateReport<'a> {
    pub ebm_id: &'a str,
    /// BrdState: the broadcast states as the standard numbers them.
    pub state: protocol::control::PlayState,
    pub desc: &'a str,
    pub terminals: u32,
    pub playing: u32,
    pub finished: u32,
}

/// An EBMStateResponse.
pub fn state_response(e: &Envelope<'_>, s: &StateReport<'_>) -> String {
    let rate = if s.terminals == 0 {
        0.0
    } else {
        (s.playing + s.finished) as f64 / s.terminals as f64
    };
    envelope(
        e,
        "EBMStateResponse",
        &format!(
            "<EBMStateResponse><RptTime>{}</RptTime><EBM><EBMID>{}</EBMID></EBM>\
             <BrdState>{}</BrdState><BrdStateDesc>{}</BrdStateDesc>\
             <Coverage><CoverageRate>{rate:.4}</CoverageRate>\
             <ResBrdStat>{}/{}/{}</ResBrdStat></Coverage></EBMStateResponse>",
            format_time(e.time_ms),
            xml::escape(s.ebm_id),
            s.state.code(),
            xml::escape(s.desc),
            s.playing,
            s.finished,
            s.terminals
        ),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const EBM: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<EBD><EBDVersion>1.0</EBDVersion><EBDID>01</EBDID><EBDType>EBM</EBDType>
<SRC><EBRID>13601000000000101010101</EBRID></SRC><DEST><EBRID>23601210000000101010101</EBRID></DEST>
<EBDTime>2026-12-07 12:00:00</EBDTime>
<EBM><EBMVersion>1.0</EBMVersion><EBMID>13601000000000101010101202612070001</EBMID>
<MsgBasicInfo><MsgType>1</MsgType><SenderName>南昌市应急广播平台</SenderName><SenderCode>13601000000000101010101</SenderCode>
<SendTime>2026-12-07 12:00:00</SendTime><EventType>11B03</EventType><Severity>2</Severity>
<StartTime>2026-12-07 12:00:00</StartTime><EndTime>2026-12-07 13:00:00</EndTime></MsgBasicInfo>
<MsgContent><LanguageCode>zho</LanguageCode><MsgTitle>暴雨橙色预警</MsgTitle><MsgDesc>请注意防范。</MsgDesc>
<AreaCode>360121,360121102201</AreaCode>
<Auxiliary><AuxiliaryType>2</AuxiliaryType><AuxiliaryDesc>EBDR_01_1.mp3</AuxiliaryDesc><Size>1024</Size></Auxiliary>
</MsgContent></EBM></EBD>"#;

    #[test]
    fn an_ebm_is_read_field_by_field() {
        let e = Ebd::parse(EBM.as_bytes()).unwrap();
        assert_eq!((e.id.as_str(), e.kind.as_str()), ("01", "EBM"));
        let EbdBody::Ebm(m) = e.body else { panic!() };
        assert_eq!(m.msg_type, 1);
        assert_eq!(m.severity, 2);
        assert_eq!(m.event_type, "11B03");
        assert_eq!(m.areas, ["360121000000", "360121102201"]);
        assert_eq!(m.end_ms - m.start_ms, 3_600_000);
        assert_eq!(format_time(m.start_ms), "2026-12-07 12:00:00");
        assert_eq!(m.audio[0].name, "EBDR_01_1.mp3");
        assert_eq!(m.sender_name, "南昌市应急广播平台");
    }

    #[test]
    fn an_ebm_written_reads_back_the_same() {
        let EbdBody::Ebm(m) = Ebd::parse(EBM.as_bytes()).unwrap().body else {
            panic!()
        };
        let e = Envelope {
            id: "02",
            src: "S",
            dest: "D",
            time_ms: m.sent_ms,
            related: None,
        };
        let back = Ebd::parse(ebm_document(&e, &m).as_bytes()).unwrap();
        assert_eq!(back.body, EbdBody::Ebm(m));
        let ask = Ebd::parse(state_request(&e, "x1").as_bytes()).unwrap();
        assert_eq!(
            ask.body,
            EbdBody::EbmStateRequest {
                ebm_id: "x1".into()
            }
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        let bad = |from: &str, to: &str| {
            Ebd::parse(EBM.replace(from, to).as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(bad("<MsgType>1", "<MsgType>9").contains("MsgType"));
        assert!(bad("<Severity>2", "<Severity>7").contains("Severity"));
        assert!(bad("13:00:00</EndTime>", "11:00:00</EndTime>").contains("EndTime"));
        assert!(bad("360121,", "36012X,").contains("AreaCode"));
        assert!(bad("<MsgTitle>暴雨橙色预警</MsgTitle>", "").contains("MsgTitle"));
        assert!(bad("202612070001</EBMID>", "2026</EBMID>").contains("EBMID"));
        assert!(bad("<MsgType>1", "<MsgType>2").contains("RelatedEBM"));
        assert!(bad("12:00:00</StartTime>", "25:00:00</StartTime>").contains("StartTime"));
    }

    #[test]
    fn a_response_says_its_code() {
        let e = Envelope {
            id: "9",
            src: "A",
            dest: "B<",
            time_ms: 0,
            related: Some("01"),
        };
        let r = response(&e, ResultCode::SignatureFailed, "签名验证失败");
        assert!(r.contains("<ResultCode>4</ResultCode>") && r.contains("B&lt;"));
        let parsed = Ebd::parse(r.as_bytes()).unwrap();
        assert_eq!(parsed.kind, "EBDResponse");
        assert_eq!(
            parsed.body,
            EbdBody::Response {
                code: 4,
                desc: "签名验证失败".into()
            }
        );
        let s = state_response(
            &e,
            &StateReport {
                ebm_id: "13601000000000101010101202612070001",
                state: protocol::control::PlayState::Playing,
                desc: "播出中",
                terminals: 4,
                playing: 3,
                finished: 0,
            },
        );
        match Ebd::parse(s.as_bytes()).unwrap().body {
            EbdBody::StateResponse {
                state, coverage, ..
            } => {
                assert_eq!((state, coverage.as_str()), (2, "3/0/4"))
            }
            other => panic!("{other:?}"),
        }
    }
}
