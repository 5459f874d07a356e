//! The demo's upper platform: the city's emergency broadcast platform,
//! as GY/T 384/385 has it, sending the district signed EBD packages and
//! taking the district's state reports on an interface of its own. Its
//! SM2 key and the district's are made here; the district's `[gateway]`
//! takes the city's at once for severities I–II and reviews the rest.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use gateway::ebd::{Auxiliary, Ebd, EbdBody, Ebm, Envelope};
use gateway::{SmKey, TrustStore};
use platform::alerts::{GatewayConfig, SourceConfig};

/// The city's resource code (EBRID): its EBM ids begin with it.
pub const CITY_EBRID: &str = "13601000000000101010101";
pub const CITY_NAME: &str = "南昌市应急广播平台";

/// The city and what the district needs to know of it.
pub struct City {
    pub key: SmKey,
    /// Verifies the district's answers.
    pub district: gateway::TrustStore,
    /// Where the district reports the state of the city's messages.
    pub interface: Arc<Interface>,
    seq: std::sync::atomic::AtomicU32,
}

/// A state report the city's interface took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    pub ebm_id: String,
    /// BrdState: 1 waiting, 2 playing, 3 done, 4 failed, 5 cancelled.
    pub state: u8,
    /// ResBrdStat: playing/finished/terminals that have it.
    pub coverage: String,
}

/// The city's GY/T interface as the district's state reports find it:
/// down (503) for its first `down` posts, then it verifies each report
/// with the district's key and answers with an EBDResponse signed by the
/// city, code 1.
#[derive(Default)]
pub struct Interface {
    pub down: AtomicU32,
    /// The district's public key and the city's key, once known.
    keys: OnceLock<(TrustStore, SmKey)>,
    pub heard: Mutex<Vec<Heard>>,
    pub posts: AtomicU32,
}

impl Interface {
    /// Serves it on loopback; its URL.
    pub async fn serve() -> anyhow::Result<(String, Arc<Interface>)> {
        let me = Arc::new(Interface::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/ebd", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/ebd", axum::routing::post(take_report))
            .with_state(me.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((url, me))
    }

    /// From now on, reports signed by `district` are taken and answered
    /// with `city`'s key; false if it had keys already.
    pub fn trust(&self, district: TrustStore, city: SmKey) -> bool {
        self.keys.set((district, city)).is_ok()
    }

    /// The states reported for `ebm_id`, in order.
    pub fn states_of(&self, ebm_id: &str) -> Vec<u8> {
        self.heard()
            .iter()
            .filter(|h| h.ebm_id == ebm_id)
            .map(|h| h.state)
            .collect()
    }

    pub fn heard(&self) -> Vec<Heard> {
        self.heard.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

async fn take_report(
    axum::extract::State(c): axum::extract::State<Arc<Interface>>,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, Vec<u8>) {
    let n = c.posts.fetch_add(1, Ordering::SeqCst);
    if n < c.down.load(Ordering::SeqCst) {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, vec![]);
    }
    let Some((district, city)) = c.keys.get() else {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, vec![]);
    };
    let Ok(v) = gateway::gyt::receive(&body, district) else {
        return (axum::http::StatusCode::BAD_REQUEST, vec![]);
    };
    if let EbdBody::StateResponse {
        ebm_id,
        state,
        coverage,
        ..
    } = &v.ebd.body
    {
        if let Ok(mut h) = c.heard.lock() {
            h.push(Heard {
                ebm_id: ebm_id.clone(),
                state: *state,
                coverage: coverage.clone(),
            });
        }
    }
    let now = certs::time::unix_now_ms();
    let id = format!("{CITY_EBRID}{:016}", 900_000 + u64::from(n));
    let xml = gateway::ebd::response(
        &Envelope {
            id: &id,
            src: CITY_EBRID,
            dest: &v.ebd.src,
            time_ms: now,
            related: Some(&v.ebd.id),
        },
        gateway::ResultCode::Verified,
        "已接收",
    );
    let answer =
        gateway::gyt::signed_package(&id, &xml, city, &gateway::ebd::format_time(now), &[]);
    (axum::http::StatusCode::OK, answer)
}

impl City {
    /// Makes the keys, a certificate authority and the certificates it
    /// issues the city and the district (valid a year; into `dir` with the
    /// district's key), serves the city's interface, and writes the
    /// district's `[gateway]` table: the GY/T listener on loopback, the
    /// city a source known by its address and its CA-issued certificate,
    /// whose messages' states are reported to its interface.
    pub async fn start(dir: &Path) -> anyhow::Result<(City, GatewayConfig)> {
        Self::start_with(dir, std::time::Duration::from_secs(365 * 86_400)).await
    }

    /// As [`City::start`], the city's certificate valid for `valid` from
    /// now (and the minute before: a test lets it run out).
    pub async fn start_with(
        dir: &Path,
        valid: std::time::Duration,
    ) -> anyhow::Result<(City, GatewayConfig)> {
        let key = SmKey::generate("3601000001");
        let district = SmKey::generate("3601210001");
        let key_file = dir.join("district.sm2");
        std::fs::write(&key_file, district.secret_hex())?;
        let ca = crate::sm2_ca::Ca::new("CN=EBS CA,O=Emergency Broadcast (test)")?;
        let now = std::time::SystemTime::now();
        let files = [
            ("ca.pem", ca.pem.clone()),
            (
                "city.pem",
                ca.certify(
                    &key,
                    &format!("CN={CITY_EBRID}"),
                    0x36_0100_0001,
                    now - std::time::Duration::from_secs(60),
                    valid + std::time::Duration::from_secs(60),
                )?,
            ),
            (
                "district.pem",
                ca.certify(
                    &district,
                    "CN=district",
                    0x36_0121_0001,
                    now - std::time::Duration::from_secs(3600),
                    std::time::Duration::from_secs(365 * 86_400),
                )?,
            ),
        ];
        for (name, pem) in &files {
            std::fs::write(dir.join(name), pem)?;
        }
        let (url, interface) = Interface::serve().await?;
        let config = GatewayConfig {
            listen: Some("127.0.0.1:0".parse()?),
            plain_http: false,
            sm2_key: key_file,
            sm2_cert_sn: String::new(),
            sm2_certificate: Some(dir.join("district.pem")),
            fetch_hosts: vec![],
            ca_certificates: vec![dir.join("ca.pem")],
            sources: vec![SourceConfig {
                name: CITY_NAME.into(),
                format: "gyt".into(),
                certificate: Some(dir.join("city.pem")),
                cert_sn: String::new(),
                public_key: String::new(),
                token_sha256: String::new(),
                addresses: vec!["127.0.0.1".parse()?],
                relay_at_once: vec![1, 2],
                drills_at_once: false,
                report_url: url,
            }],
        };
        let trust = gateway::TrustStore::new(vec![gateway::Sender::new(
            "district",
            &district.cert_sn,
            &district.public_hex(),
        )?]);
        interface.trust(
            trust.clone(),
            SmKey::from_hex(&key.cert_sn, &key.secret_hex())
                .map_err(|e| anyhow::anyhow!("the city's key: {e}"))?,
        );
        Ok((
            City {
                key,
                district: trust,
                interface,
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
