//! One shape for an alert from above, whichever format it came in: what
//! the platform acts on. An EBM and a CAP `alert` both map here without
//! losing what the platform needs, the original identifiers kept.

use crate::cap::{self, CapAlert};
use crate::ebd::Ebm;
use crate::geo::Shape;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// GY/T 384/385 (EBD packages holding EBM messages).
    Gyt,
    /// OASIS CAP 1.2.
    Cap,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Gyt => "GY/T 385",
            Format::Cap => "CAP 1.2",
        }
    }

    /// As configured (`format = "gyt"` or `"cap"`).
    pub fn key(self) -> &'static str {
        match self {
            Format::Gyt => "gyt",
            Format::Cap => "cap",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A new alert.
    Alert,
    /// Replaces the alerts it refers to.
    Update,
    /// Stops the alerts it refers to.
    Cancel,
}

/// Where an alert's audio comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Audio {
    /// In hand: a package's file or a CAP `derefUri`.
    Inline { name: String, bytes: Vec<u8> },
    /// A CAP `uri`, fetched only from a configured host.
    Remote {
        uri: String,
        resource: cap::Resource,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub format: Format,
    /// The original identifier: the EBMID, or the CAP identifier.
    pub id: String,
    /// The sender's code (EBM SenderCode, CAP sender).
    pub sender: String,
    pub sender_name: String,
    pub action: Action,
    /// The original identifiers an update or cancel acts on.
    pub refers_to: Vec<String>,
    /// An exercise or test (GY/T message types 3–5, CAP Exercise/Test):
    /// issued and shown as a drill.
    pub drill: bool,
    /// GY/T numbering: 0 unknown, 1 特别重大 … 4 一般.
    pub severity: u8,
    /// GB/T 35965 event type, five characters.
    pub event_type: String,
    /// The event as the sender named it.
    pub event: String,
    pub title: String,
    pub text: String,
    pub language: String,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    /// 12-digit area codes.
    pub area_codes: Vec<String>,
    /// CAP polygons and circles, matched against village coordinates.
    pub shapes: Vec<Shape>,
    pub audio: Option<Audio>,
}

impl Alert {
    /// An EBM with its audio file (from the package, if it names one).
    pub fn from_ebm(m: &Ebm, audio: Option<(String, Vec<u8>)>) -> Alert {
        Alert {
            format: Format::Gyt,
            id: m.id.clone(),
            sender: m.sender_code.clone(),
            sender_name: m.sender_name.clone(),
            action: if m.msg_type == 2 {
                Action::Cancel
            } else {
                Action::Alert
            },
            refers_to: m.related.iter().cloned().collect(),
            drill: matches!(m.msg_type, 3..=5),
            severity: m.severity,
            event_type: m.event_type.clone(),
            event: String::new(),
            title: m.title.clone(),
            text: m.text.clone(),
            language: m.language.clone(),
            start_ms: Some(m.start_ms),
            end_ms: Some(m.end_ms),
            area_codes: m.areas.clone(),
            shapes: Vec::new(),
            audio: audio.map(|(name, bytes)| Audio::Inline { name, bytes }),
        }
    }

    /// A CAP alert: its Chinese info block (else its first), the text its
    /// description and instruction, the areas its geocodes and shapes,
    /// the audio its first audio resource. None for kinds not acted on
    /// (System, Draft, Ack, Error): the caller answers why.
    pub fn from_cap(a: &CapAlert) -> Result<Alert, &'static str> {
        match a.status {
            cap::Status::System => {
                return Err("status System: a message between systems, not an alert")
            }
            cap::Status::Draft => return Err("status Draft: not to be acted on"),
            _ => {}
        }
        let action = match a.msg_type {
            cap::MsgType::Alert => Action::Alert,
            cap::MsgType::Update => Action::Update,
            cap::MsgType::Cancel => Action::Cancel,
            cap::MsgType::Ack | cap::MsgType::Error => {
                return Err("msgType Ack or Error: an answer, not an alert")
            }
        };
        let info = a.chosen_info();
        if info.is_none() && action != Action::Cancel {
            return Err("no info block: nothing to broadcast");
        }
        let text = info
            .map(|i| {
                [i.description.trim(), i.instruction.trim()]
                    .into_iter()
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        let audio = info
            .and_then(|i| i.resources.iter().find(|r| r.is_audio()))
            .map(|r| match &r.data {
                Some(bytes) => Audio::Inline {
                    name: r.desc.clone(),
                    bytes: bytes.clone(),
                },
                None => Audio::Remote {
                    uri: r.uri.clone().unwrap_or_default(),
                    resource: r.clone(),
                },
            });
        let mut area_codes: Vec<String> = Vec::new();
        let mut shapes = Vec::new();
        for area in info.map(|i| i.areas.as_slice()).unwrap_or_default() {
            for c in area.area_codes() {
                if !area_codes.contains(&c) {
                    area_codes.push(c);
                }
            }
            shapes.extend(area.shapes.iter().cloned());
        }
        Ok(Alert {
            format: Format::Cap,
            id: a.identifier.clone(),
            sender: a.sender.clone(),
            sender_name: info.map(|i| i.sender_name.clone()).unwrap_or_default(),
            action,
            refers_to: a.references.iter().map(|r| r.identifier.clone()).collect(),
            drill: matches!(a.status, cap::Status::Exercise | cap::Status::Test),
            severity: info.map_or(0, cap::Info::national_severity),
            event_type: info
                .and_then(cap::Info::national_event_type)
                .unwrap_or_else(|| "10000".into()),
            event: info.map(|i| i.event.clone()).unwrap_or_default(),
            title: info
                .map(|i| {
                    if i.headline.is_empty() {
                        i.event.clone()
                    } else {
                        i.headline.clone()
                    }
                })
                .unwrap_or_default(),
            text,
            language: info.map(|i| i.language.clone()).unwrap_or_default(),
            start_ms: info.and_then(|i| i.onset_ms.or(i.effective_ms)),
            end_ms: info.and_then(|i| i.expires_ms),
            area_codes,
            shapes,
            audio,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_alert_maps_without_loss() {
        let a = CapAlert::parse(cap::tests::ALERT.as_bytes()).unwrap();
        let alert = Alert::from_cap(&a).unwrap();
        assert_eq!(alert.title, "暴雨橙色预警");
        assert!(alert.text.contains("50毫米") && alert.text.contains("远离河道"));
        assert_eq!((alert.severity, alert.event_type.as_str()), (2, "11B03"));
        assert_eq!(alert.area_codes, ["360121000000"]);
        assert_eq!(alert.shapes.len(), 2);
        assert!(!alert.drill);
        assert_eq!(alert.sender_name, "江西省气象台");
        let exercise = cap::tests::ALERT.replace("<status>Actual", "<status>Exercise");
        let drill = Alert::from_cap(&CapAlert::parse(exercise.as_bytes()).unwrap()).unwrap();
        assert!(drill.drill);
        let system = cap::tests::ALERT.replace("<status>Actual", "<status>System");
        assert!(Alert::from_cap(&CapAlert::parse(system.as_bytes()).unwrap()).is_err());
    }
}
