//! The demo's upper platform: the city's emergency broadcast platform,
//! as GY/T 384/385 has it, sending the district signed EBD packages. Its
//! SM2 key and the district's are made here; the district's `[gateway]`
//! takes the city's at once for severities I–II and reviews the rest.

use std::path::Path;

use gateway::ebd::{Auxiliary, Ebd, EbdBody, Ebm, Envelope};
use gateway::SmKey;
use platform::alerts::{GatewayConfig, SourceConfig};

/// The city's resource code (EBRID): its EBM ids begin with it.
pub const CITY_EBRID: &str = "13601000000000101010101";
pub const CITY_NAME: &str = "南昌市应急广播平台";

/// The city and what the district needs to know of it.
pub struct City {
    pub key: SmKey,
    /// Verifies the district's answers.
    pub district: gateway::TrustStore,
    seq: std::sync::atomic::AtomicU32,
}

impl City {
    /// Makes both keys (the district's into `dir`) and the district's
    /// `[gateway]` table: the GY/T listener on loopback, the city a source
    /// known by its address.
    pub fn new(dir: &Path) -> anyhow::Result<(City, GatewayConfig)> {
        let key = SmKey::generate("3601000001");
        let district = SmKey::generate("3601210001");
        let key_file = dir.join("district.sm2");
        std::fs::write(&key_file, district.secret_hex())?;
        let config = GatewayConfig {
            listen: Some("127.0.0.1:0".parse()?),
            plain_http: false,
            sm2_key: key_file,
            sm2_cert_sn: district.cert_sn.clone(),
            fetch_hosts: vec![],
            sources: vec![SourceConfig {
                name: CITY_NAME.into(),
                format: "gyt".into(),
                cert_sn: key.cert_sn.clone(),
                public_key: key.public_hex(),
                token_sha256: String::new(),
                addresses: vec!["127.0.0.1".parse()?],
                relay_at_once: vec![1, 2],
                drills_at_once: false,
                report_url: String::new(),
            }],
        };
        let trust = gateway::TrustStore::new(vec![gateway::Sender::new(
            "district",
            &district.cert_sn,
            &district.public_hex(),
        )?]);
        Ok((
            City {
                key,
                district: trust,
                seq: 1.into(),
            },
            config,
        ))
    }

    /// Sends an EBM for `areas` with `audio` (its SM3 digest in the signed
    /// message) to the GY/T listener at `gateway`; the EBMID and the
    /// district's answer (its result code and words), verified.
    pub async fn send(
        &self,
        gateway: std::net::SocketAddr,
        severity: u8,
        title: &str,
        text: &str,
        areas: &[String],
        audio: &Path,
    ) -> anyhow::Result<(String, u8, String)> {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = certs::time::unix_now_ms();
        let (y, m, d) = protocol::schedule::civil_from_days(protocol::schedule::local_day(
            now,
            protocol::schedule::CHINA_OFFSET_MINUTES,
        ));
        let ebm_id = format!("{CITY_EBRID}{y:04}{m:02}{d:02}{seq:04}");
        let ebd_id = format!("{CITY_EBRID}{seq:016}");
        let bytes = std::fs::read(audio)?;
        let ext = audio.extension().and_then(|e| e.to_str()).unwrap_or("wav");
        let file = format!("EBDR_{ebd_id}_1.{ext}");
        let msg = CityMessage {
            id: ebm_id.clone(),
            msg_type: 1,
            related: None,
            severity,
            title,
            text,
            areas: areas.to_vec(),
            audio: Some((&file, &bytes, true)),
        };
        let xml = msg.document(&ebd_id, now);
        let body = gateway::gyt::signed_package(
            &ebd_id,
            &xml,
            &self.key,
            &gateway::ebd::format_time(now),
            &[(&file, &bytes)],
        );
        let answer = reqwest::Client::new()
            .post(format!("http://{gateway}/"))
            .header("content-type", "application/x-tar")
            .body(body)
            .send()
            .await?
            .bytes()
            .await?;
        let verified = gateway::gyt::receive(&answer, &self.district)
            .map_err(|r| anyhow::anyhow!("the district's answer does not verify: {}", r.reason))?;
        match verified.ebd {
            Ebd {
                body: EbdBody::Response { code, desc },
                ..
            } => Ok((ebm_id, code, desc)),
            other => anyhow::bail!("the district answered {}", other.kind),
        }
    }
}

/// An EBM of the city's, with what the demo and the tests vary.
pub struct CityMessage<'a> {
    pub id: String,
    /// 1 broadcast, 2 cancel (with `related`), 3–5 drills.
    pub msg_type: u8,
    pub related: Option<String>,
    pub severity: u8,
    pub title: &'a str,
    pub text: &'a str,
    pub areas: Vec<String>,
    /// (file name, bytes, whether the message gives its SM3 digest)
    pub audio: Option<(&'a str, &'a [u8], bool)>,
}

impl CityMessage<'_> {
    /// The EBD `ebd_id` holding it, sent at `now`, valid for an hour.
    pub fn document(&self, ebd_id: &str, now: i64) -> String {
        let ebm = Ebm {
            id: self.id.clone(),
            msg_type: self.msg_type,
            related: self.related.clone(),
            sender_name: CITY_NAME.into(),
            sender_code: CITY_EBRID.into(),
            sent_ms: now,
            event_type: "11B03".into(),
            severity: self.severity,
            start_ms: now - 1000,
            end_ms: now + 3_600_000,
            language: "zho".into(),
            title: self.title.into(),
            text: self.text.into(),
            areas: self.areas.clone(),
            audio: self
                .audio
                .iter()
                .map(|(name, bytes, digest)| Auxiliary {
                    kind: "2".into(),
                    name: name.to_string(),
                    size: Some(bytes.len() as u64),
                    digest: digest.then(|| gateway::sm::sm3_hex(bytes)),
                })
                .collect(),
        };
        let envelope = Envelope {
            id: ebd_id,
            src: CITY_EBRID,
            dest: "",
            time_ms: now,
            related: None,
        };
        gateway::ebd::ebm_document(&envelope, &ebm)
    }
}
