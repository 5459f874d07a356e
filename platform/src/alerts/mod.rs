//! Alerts from above (R13): the `[gateway]` configuration (who may send,
//! with which key, and the policy per source and severity), the state the
//! two doors share, and the doors themselves: the GY/T 384 listener
//! (`gyt_http`) and the CAP endpoint and feed of the API (`cap_http`).
//! What an alert does here (`intake`) is one procedure for both formats.

pub mod cap_http;
pub mod fetch;
pub mod gyt_http;
pub mod intake;
pub mod outbound;
pub mod reports;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use gateway::cert::SmCertificate;
use gateway::{Format, ResultCode, SmKey, TrustStore};
use serde::{Deserialize, Serialize};

use crate::console::places::Places;
use crate::workflow::Workflow;

/// Most sources a gateway may name.
pub const MAX_SOURCES: usize = 64;

/// `[gateway]`: alerts from the city, province and national platforms
/// (GY/T) and from warning services (CAP).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The GY/T 384 interface: where upper platforms POST EBD packages
    /// (a listener of its own; HTTPS off loopback unless `plain_http`).
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Serve the GY/T listener over plain HTTP even off loopback (a
    /// private network whose upper platform speaks no TLS; the packages
    /// are signed either way).
    #[serde(default)]
    pub plain_http: bool,
    /// This platform's SM2 private key (a file of 64 hex digits), which
    /// signs its answers (`platform gateway-key` makes one).
    pub sm2_key: PathBuf,
    /// The serial number of that key's certificate, as the upper platform
    /// registered it (default with `sm2_certificate`: its serial).
    #[serde(default)]
    pub sm2_cert_sn: String,
    /// This platform's SM2 certificate as its CA issued it (X.509, PEM or
    /// DER): checked to hold the key of `sm2_key`, its serial names our
    /// answers' signatures.
    #[serde(default)]
    pub sm2_certificate: Option<PathBuf>,
    /// Hosts (`host` or `host:port`) a CAP resource `uri` may be fetched
    /// from; none: audio must come inside the alert (`derefUri`).
    #[serde(default)]
    pub fetch_hosts: Vec<String>,
    /// The certificate authorities (GY/T 389) whose SM2 certificates
    /// (X.509, PEM or DER) are trusted; when given, every GY/T source is
    /// known by a `certificate` one of them issued.
    #[serde(default)]
    pub ca_certificates: Vec<PathBuf>,
    /// Who may send alerts, each with its policy.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
}

/// `[[gateway.sources]]`: one sender.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Its name, as the audit trail and the console show it.
    pub name: String,
    /// `gyt` (EBD packages on the GY/T listener) or `cap` (CAP 1.2 on the
    /// API's /api/alerts/cap).
    pub format: String,
    /// GY/T: its signing certificate (X.509 with an SM2 key, PEM or DER,
    /// as the CA issued it): the key, the serial and the validity come
    /// from it. Instead of `public_key`.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// GY/T: the serial number of its signing certificate, as its
    /// signature files name it (default with `certificate`: its serial in
    /// upper-case hex).
    #[serde(default)]
    pub cert_sn: String,
    /// GY/T: its SM2 public key, SEC1 uncompressed, hex (04 ‖ x ‖ y), when
    /// no `certificate` is given.
    #[serde(default)]
    pub public_key: String,
    /// SHA-256 (hex) of the bearer token it sends (`Authorization:
    /// Bearer`). Required for CAP; for GY/T, a token or `addresses`.
    #[serde(default)]
    pub token_sha256: String,
    /// GY/T: the addresses it posts from.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    /// Severities (1 特别重大 … 4 一般, 0 unknown) relayed at once, without
    /// review; any other goes to the review queue.
    pub relay_at_once: Vec<u8>,
    /// Drills (exercises, tests) of those severities relayed at once too.
    #[serde(default)]
    pub drills_at_once: bool,
    /// GY/T: the upper platform's interface (http or https URL), where
    /// the state of each message it sent is reported unasked
    /// (EBMStateResponse); empty: it asks (EBMStateRequest).
    #[serde(default)]
    pub report_url: String,
}

/// A configured source, checked.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub format: Format,
    pub cert_sn: String,
    token_sha256: Option<[u8; 32]>,
    addresses: Vec<IpAddr>,
    pub relay_at_once: Vec<u8>,
    pub drills_at_once: bool,
    /// Where its messages' states are reported unasked (GY/T).
    pub report_to: Option<outbound::Target>,
    /// Its certificate's validity (Unix seconds), when configured by one:
    /// a package signed outside it is refused.
    pub valid_s: Option<(u64, u64)>,
}

impl Source {
    /// Relayed without review: its severity is in the list (and, for a
    /// drill, drills are too).
    pub fn relays_at_once(&self, severity: u8, drill: bool) -> bool {
        self.relay_at_once.contains(&severity) && (!drill || self.drills_at_once)
    }

    /// Whether a package it signed at `now_s` (Unix seconds) is within its
    /// certificate's validity; else that validity.
    pub fn certificate_valid_at(&self, now_s: u64) -> Result<(), (u64, u64)> {
        match self.valid_s {
            Some((from, until)) if now_s < from || now_s > until => Err((from, until)),
            _ => Ok(()),
        }
    }

    /// The audit trail's name for it.
    pub fn actor(&self) -> String {
        format!("gateway:{}", self.name)
    }
}

/// How many packages and alerts each outcome had, for /metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// By GY/T result code (0–5).
    pub gyt: [AtomicU64; 6],
    pub cap_taken: AtomicU64,
    pub cap_refused: AtomicU64,
    /// Requests refused before their body: no source's token or address.
    pub unauthenticated: AtomicU64,
    /// State reports posted to upper platforms: accepted, not.
    pub reports_delivered: AtomicU64,
    pub reports_failed: AtomicU64,
}

impl Counters {
    pub fn count(&self, code: ResultCode) {
        self.gyt[code.code() as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_report(&self, delivered: bool) {
        if delivered {
            &self.reports_delivered
        } else {
            &self.reports_failed
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP ebs_gateway_packages_total GY/T packages answered, by EBDResponse result code.\n\
             # TYPE ebs_gateway_packages_total counter\n",
        );
        for (code, n) in self.gyt.iter().enumerate() {
            out.push_str(&format!(
                "ebs_gateway_packages_total{{result_code=\"{code}\"}} {}\n",
                n.load(Ordering::Relaxed)
            ));
        }
        out.push_str(&format!(
            "# HELP ebs_gateway_cap_total CAP alerts taken or refused.\n\
             # TYPE ebs_gateway_cap_total counter\n\
             ebs_gateway_cap_total{{outcome=\"taken\"}} {}\n\
             ebs_gateway_cap_total{{outcome=\"refused\"}} {}\n\
             # HELP ebs_gateway_unauthenticated_total Gateway requests refused before their body: no source's token or address.\n\
             # TYPE ebs_gateway_unauthenticated_total counter\n\
             ebs_gateway_unauthenticated_total {}\n\
             # HELP ebs_gateway_state_reports_total State reports (EBMStateResponse) posted to upper platforms unasked, by outcome.\n\
             # TYPE ebs_gateway_state_reports_total counter\n\
             ebs_gateway_state_reports_total{{outcome=\"delivered\"}} {}\n\
             ebs_gateway_state_reports_total{{outcome=\"failed\"}} {}\n",
            self.cap_taken.load(Ordering::Relaxed),
            self.cap_refused.load(Ordering::Relaxed),
            self.unauthenticated.load(Ordering::Relaxed),
            self.reports_delivered.load(Ordering::Relaxed),
            self.reports_failed.load(Ordering::Relaxed),
        ));
        out
    }
}

impl Gateway {
    /// /metrics: the counters, and when each source's certificate ends.
    pub fn render_metrics(&self) -> String {
        let mut out = self.counters.render();
        out.push_str(
            "# HELP ebs_gateway_source_certificate_not_after_seconds When a GY/T source's certificate ends (Unix seconds).\n\
             # TYPE ebs_gateway_source_certificate_not_after_seconds gauge\n",
        );
        for s in &self.sources {
            if let Some((_, until)) = s.valid_s {
                out.push_str(&format!(
                    "ebs_gateway_source_certificate_not_after_seconds{{source=\"{}\",serial=\"{}\"}} {until}\n",
                    s.name.replace(['\\', '"', '\n'], "_"),
                    s.cert_sn.replace(['\\', '"', '\n'], "_")
                ));
            }
        }
        out
    }
}

/// The gateway as it runs: sources, trust, key, and what it acts through.
pub struct Gateway {
    pub sources: Vec<Source>,
    pub trust: TrustStore,
    pub key: SmKey,
    /// Our EBRID: the resource code of this platform's certificate.
    pub resource_code: String,
    pub fetch_hosts: Vec<String>,
    pub plain_http: bool,
    pub workflow: Arc<Workflow>,
    pub places: Arc<Places>,
    pub counters: Counters,
    /// The state reports owed to upper platforms.
    pub owed: reports::Owed,
}

fn sha256_hex(field: &str, v: &str) -> anyhow::Result<Option<[u8; 32]>> {
    if v.is_empty() {
        return Ok(None);
    }
    let bytes = hex::decode(v)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .with_context(|| format!("{field}: not a SHA-256 (64 hex digits)"))?;
    Ok(Some(bytes))
}

impl GatewayConfig {
    /// Checks every source, naming the first bad field; the trust store.
    pub fn sources(&self) -> anyhow::Result<(Vec<Source>, TrustStore)> {
        if self.sources.len() > MAX_SOURCES {
            bail!(
                "gateway.sources: {} entries; the limit is {MAX_SOURCES}",
                self.sources.len()
            );
        }
        if self.sm2_certificate.is_none()
            && (self.sm2_cert_sn.trim().is_empty() || self.sm2_cert_sn.len() > 64)
        {
            bail!("gateway.sm2_cert_sn: the serial number of this platform's SM2 certificate, 1 to 64 characters (or gateway.sm2_certificate)");
        }
        for (i, h) in self.fetch_hosts.iter().enumerate() {
            if h.is_empty() || h.contains(['/', '@', ' ']) {
                bail!("gateway.fetch_hosts[{i}]: {h:?} is not a host or host:port");
            }
        }
        let cas = self.cas()?;
        let now = unix_now();
        let mut sources = Vec::new();
        let mut senders = Vec::new();
        for (i, s) in self.sources.iter().enumerate() {
            let at = format!("gateway.sources[{i}]");
            let mut cert_sn = s.cert_sn.clone();
            let mut valid_s = None;
            let n = s.name.chars().count();
            if n == 0 || n > 64 || s.name.chars().any(char::is_control) {
                bail!("{at}.name: a name of 1 to 64 printable characters");
            }
            if sources.iter().any(|o: &Source| o.name == s.name) {
                bail!("{at}.name: {:?} is named twice", s.name);
            }
            let format = match s.format.as_str() {
                "gyt" => Format::Gyt,
                "cap" => Format::Cap,
                other => bail!("{at}.format: {other:?} is not gyt or cap"),
            };
            if let Some(bad) = s.relay_at_once.iter().find(|v| **v > 4) {
                bail!("{at}.relay_at_once: {bad} is not a severity 0 to 4");
            }
            let token = sha256_hex(&format!("{at}.token_sha256"), &s.token_sha256)?;
            let report_to = match (s.report_url.as_str(), format) {
                ("", _) => None,
                (_, Format::Cap) => {
                    bail!("{at}.report_url: state reports are a GY/T interface; a CAP source has none")
                }
                (url, Format::Gyt) => Some(outbound::Target::parse(url).with_context(|| {
                    format!("{at}.report_url: {url:?} is not an http or https URL")
                })?),
            };
            match format {
                Format::Cap if token.is_none() => {
                    bail!("{at}.token_sha256: a CAP source authenticates with a token: give its SHA-256")
                }
                Format::Gyt => {
                    if token.is_none() && s.addresses.is_empty() {
                        bail!("{at}: a GY/T source needs token_sha256 or addresses to authenticate its posts");
                    }
                    let (sender, validity) = self.sender(&at, s, &cas, now)?;
                    if senders
                        .iter()
                        .any(|o: &gateway::Sender| o.cert_sn == sender.cert_sn)
                    {
                        bail!(
                            "{at}.cert_sn: {:?} belongs to another source",
                            sender.cert_sn
                        );
                    }
                    cert_sn = sender.cert_sn.clone();
                    valid_s = validity;
                    senders.push(sender);
                }
                Format::Cap => {
                    if s.certificate.is_some() {
                        bail!("{at}.certificate: a CAP source is known by its token");
                    }
                }
            }
            sources.push(Source {
                name: s.name.clone(),
                format,
                cert_sn,
                valid_s,
                token_sha256: token,
                addresses: s.addresses.clone(),
                relay_at_once: s.relay_at_once.clone(),
                drills_at_once: s.drills_at_once,
                report_to,
            });
        }
        Ok((sources, TrustStore::new(senders)))
    }

    /// The configured certificate authorities, read and valid now.
    fn cas(&self) -> anyhow::Result<Vec<SmCertificate>> {
        self.ca_certificates
            .iter()
            .enumerate()
            .map(|(i, path)| {
                let at = format!("gateway.ca_certificates[{i}]");
                let ca = read_certificate(&at, path)?;
                ca.valid_at(unix_now())
                    .map_err(|e| anyhow::anyhow!("{at} {}: {e}", path.display()))?;
                Ok(ca)
            })
            .collect()
    }

    /// A GY/T source's trusted key: from its certificate (issued by one of
    /// `cas` when any are configured, valid at `now`), or from its hex key
    /// where no CA is configured. Its certificate's validity, if any.
    fn sender(
        &self,
        at: &str,
        s: &SourceConfig,
        cas: &[SmCertificate],
        now: std::time::Duration,
    ) -> anyhow::Result<(gateway::Sender, Option<(u64, u64)>)> {
        let Some(path) = &s.certificate else {
            if !cas.is_empty() {
                bail!("{at}.certificate: with gateway.ca_certificates given, a GY/T source is known by the certificate its CA issued");
            }
            if s.cert_sn.trim().is_empty() {
                bail!("{at}.cert_sn: the serial number of its signing certificate");
            }
            let sender = gateway::Sender::new(&s.name, &s.cert_sn, &s.public_key)
                .map_err(|e| anyhow::anyhow!("{at}.public_key: {e}"))?;
            return Ok((sender, None));
        };
        if !s.public_key.is_empty() {
            bail!("{at}.public_key: give the certificate or the key, not both");
        }
        let cert = read_certificate(&format!("{at}.certificate"), path)?;
        let named = |e: gateway::cert::CertError| {
            anyhow::anyhow!("{at}.certificate {}: {e}", path.display())
        };
        // Issued by any configured CA (none configured: nothing to check).
        let issued = cas.iter().map(|ca| cert.verify_issued_by(ca));
        if let Some(Err(e)) = issued.reduce(|a, b| a.or(b)) {
            return Err(named(e));
        }
        cert.valid_at(now).map_err(named)?;
        let cert_sn = if s.cert_sn.trim().is_empty() {
            cert.serial.clone()
        } else {
            s.cert_sn.clone()
        };
        Ok((
            cert.sender(&s.name, &cert_sn),
            Some((cert.not_before_s, cert.not_after_s)),
        ))
    }

    /// Reads the SM2 key file.
    /// With `sm2_certificate`: the certificate must hold the key's public
    /// half, and its serial names the key unless `sm2_cert_sn` does; one
    /// outside its validity, or not issued by a configured CA, is logged
    /// (the upper platform may refuse our answers) but does not stop the
    /// gateway taking alerts.
    pub fn key(&self) -> anyhow::Result<SmKey> {
        let text = std::fs::read_to_string(&self.sm2_key)
            .with_context(|| format!("gateway.sm2_key: cannot read {}", self.sm2_key.display()))?;
        let Some(path) = &self.sm2_certificate else {
            return SmKey::from_hex(&self.sm2_cert_sn, text.trim())
                .map_err(|e| anyhow::anyhow!("gateway.sm2_key {}: {e}", self.sm2_key.display()));
        };
        let cert = read_certificate("gateway.sm2_certificate", path)?;
        let cert_sn = if self.sm2_cert_sn.trim().is_empty() {
            cert.serial.clone()
        } else {
            self.sm2_cert_sn.clone()
        };
        let key = SmKey::from_hex(&cert_sn, text.trim())
            .map_err(|e| anyhow::anyhow!("gateway.sm2_key {}: {e}", self.sm2_key.display()))?;
        if key.public_hex() != hex::encode(&cert.public_key) {
            bail!(
                "gateway.sm2_certificate {}: its key is not the key in gateway.sm2_key {} (certificate {})",
                path.display(),
                self.sm2_key.display(),
                cert.serial
            );
        }
        if let Err(e) = cert.valid_at(unix_now()) {
            tracing::warn!(
                "gateway.sm2_certificate {}: {e}; upper platforms may refuse our answers",
                path.display()
            );
        }
        if let Ok(cas) = self.cas() {
            if !cas.is_empty() && !cas.iter().any(|ca| cert.verify_issued_by(ca).is_ok()) {
                tracing::warn!(
                    "gateway.sm2_certificate {}: not issued by any of gateway.ca_certificates",
                    path.display()
                );
            }
        }
        Ok(key)
    }
}

/// Now, as certificates' validity is checked.
fn unix_now() -> std::time::Duration {
    std::time::Duration::from_millis(crate::now_ms().max(0) as u64)
}

/// A certificate file, bounded, named by `at` when it fails.
fn read_certificate(at: &str, path: &std::path::Path) -> anyhow::Result<SmCertificate> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("{at}: cannot read {}", path.display()))?;
    if meta.len() > gateway::cert::MAX_CERTIFICATE_BYTES as u64 {
        bail!(
            "{at} {}: {} bytes; the limit is {}",
            path.display(),
            meta.len(),
            gateway::cert::MAX_CERTIFICATE_BYTES
        );
    }
    let bytes =
        std::fs::read(path).with_context(|| format!("{at}: cannot read {}", path.display()))?;
    SmCertificate::parse(&bytes).map_err(|e| anyhow::anyhow!("{at} {}: {e}", path.display()))
}

impl Gateway {
    pub fn new(
        config: &GatewayConfig,
        key: SmKey,
        workflow: Arc<Workflow>,
        places: Arc<Places>,
    ) -> anyhow::Result<Gateway> {
        let (sources, trust) = config.sources()?;
        let owed = reports::Owed::open(workflow.relay.store().db())
            .context("gateway: opening the owed state reports")?;
        Ok(Gateway {
            owed,
            sources,
            trust,
            key,
            resource_code: workflow.relay.resource_code().to_string(),
            fetch_hosts: config.fetch_hosts.clone(),
            plain_http: config.plain_http,
            workflow,
            places,
            counters: Counters::default(),
        })
    }

    /// The source of `format` whose token `bearer` is, or (GY/T, with
    /// no token) whose address `peer` is.
    pub fn authenticate(
        &self,
        format: Format,
        bearer: Option<&str>,
        peer: IpAddr,
    ) -> Option<&Source> {
        authenticate(&self.sources, format, bearer, peer)
    }

    /// The source a request comes from (by its headers and peer address,
    /// before its body is read), or None, counted and logged.
    pub fn source_of(&self, format: Format, req: &axum::extract::Request) -> Option<Source> {
        let peer = req
            .extensions()
            .get::<crate::api::auth::ClientAddr>()
            .map(|a| a.0.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let bearer = crate::api::auth::bearer(req.headers());
        let found = self.authenticate(format, bearer, peer).cloned();
        if found.is_none() {
            self.counters
                .unauthenticated
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, format = format.name(), "alert refused: no source has this token or address");
        }
        found
    }
}

/// The rule of [`Gateway::authenticate`]: a token is compared (as its
/// SHA-256, in constant time) with every source's; an address alone
/// authenticates only a source that has no token.
pub fn authenticate<'a>(
    sources: &'a [Source],
    format: Format,
    bearer: Option<&str>,
    peer: IpAddr,
) -> Option<&'a Source> {
    match bearer {
        Some(t) => {
            let h = crate::accounts::sha256(t.as_bytes());
            sources.iter().find(|s| {
                s.format == format && s.token_sha256.is_some_and(|t| constant_time_eq(&t, &h))
            })
        }
        None => sources.iter().find(|s| {
            s.format == format && s.token_sha256.is_none() && s.addresses.contains(&peer)
        }),
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn config(public_key: &str) -> GatewayConfig {
        GatewayConfig {
            listen: None,
            plain_http: false,
            sm2_key: PathBuf::from("/nonexistent"),
            sm2_cert_sn: "D1".into(),
            sm2_certificate: None,
            fetch_hosts: vec![],
            ca_certificates: vec![],
            sources: vec![
                SourceConfig {
                    name: "市平台".into(),
                    format: "gyt".into(),
                    certificate: None,
                    cert_sn: "C1".into(),
                    public_key: public_key.into(),
                    token_sha256: String::new(),
                    addresses: vec!["127.0.0.1".parse().unwrap()],
                    relay_at_once: vec![1, 2],
                    drills_at_once: false,
                    report_url: String::new(),
                },
                SourceConfig {
                    name: "气象台".into(),
                    format: "cap".into(),
                    certificate: None,
                    cert_sn: String::new(),
                    public_key: String::new(),
                    token_sha256: hex::encode(crate::accounts::sha256(b"secret")),
                    addresses: vec![],
                    relay_at_once: vec![1],
                    drills_at_once: false,
                    report_url: String::new(),
                },
            ],
        }
    }

    #[test]
    fn sources_are_checked_field_by_field() {
        let key = SmKey::generate("C1");
        let good = config(&key.public_hex());
        let (sources, trust) = good.sources().unwrap();
        assert_eq!(sources.len(), 2);
        // The GY/T source's key is trusted under its certificate serial.
        let data = b"<EBD/>";
        let sig = gateway::sm::SignatureFile::parse(
            gateway::sm::SignatureFile::sign("1", data, &key, "").as_bytes(),
        )
        .unwrap();
        assert_eq!(trust.verify(data, "1", &sig).unwrap().name, "市平台");
        let named = |change: &dyn Fn(&mut GatewayConfig)| {
            let mut c = good.clone();
            change(&mut c);
            c.sources().unwrap_err().to_string()
        };
        assert!(named(&|c| c.sources[0].format = "xml".into()).contains("sources[0].format"));
        assert!(
            named(&|c| c.sources[0].public_key = "04ab".into()).contains("sources[0].public_key")
        );
        assert!(named(&|c| c.sources[0].addresses.clear()).contains("token_sha256 or addresses"));
        assert!(named(&|c| c.sources[1].token_sha256.clear()).contains("sources[1].token_sha256"));
        assert!(named(&|c| c.sources[1].relay_at_once = vec![7]).contains("relay_at_once"));
        assert!(named(&|c| c.sources[1].name = "市平台".into()).contains("named twice"));
        assert!(named(&|c| c.fetch_hosts = vec!["http://x/".into()]).contains("fetch_hosts[0]"));
        assert!(named(&|c| c.sources[0].report_url = "ftp://x/".into())
            .contains("sources[0].report_url"));
        assert!(named(&|c| c.sources[1].report_url = "http://x/".into())
            .contains("sources[1].report_url"));
    }

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../gateway/tests/certs")
            .join(name)
    }

    #[test]
    fn a_source_known_by_its_ca_issued_certificate() {
        let key = SmKey::generate("C1");
        let mut c = config(&key.public_hex());
        c.ca_certificates = vec![fixture("ca.pem")];
        c.sources[0].public_key.clear();
        c.sources[0].cert_sn.clear();
        c.sources[0].certificate = Some(fixture("city.pem"));
        let (sources, trust) = c.sources().unwrap();
        // Its serial is the CertSN its signature files name.
        assert_eq!(sources[0].cert_sn, "3601000001");
        let city_key = SmKey::from_hex(
            "3601000001",
            std::fs::read_to_string(fixture("city.key.hex"))
                .unwrap()
                .trim(),
        )
        .unwrap();
        let data = b"<EBD/>";
        let sig = gateway::sm::SignatureFile::parse(
            gateway::sm::SignatureFile::sign("1", data, &city_key, "").as_bytes(),
        )
        .unwrap();
        assert_eq!(trust.verify(data, "1", &sig).unwrap().name, "市平台");
        // Packages are taken only within the certificate's validity.
        let (from, until) = sources[0].valid_s.unwrap();
        assert_eq!(sources[0].certificate_valid_at(from + 1), Ok(()));
        assert_eq!(
            sources[0].certificate_valid_at(until + 1),
            Err((from, until))
        );
        // DER reads as PEM does.
        let mut der = c.clone();
        der.sources[0].certificate = Some(fixture("city.der"));
        assert_eq!(der.sources().unwrap().0[0].cert_sn, "3601000001");

        let named = |change: &dyn Fn(&mut GatewayConfig)| {
            let mut c = c.clone();
            change(&mut c);
            c.sources().unwrap_err().to_string()
        };
        // Another CA's certificate for the same name and key.
        let e = named(&|c| c.sources[0].certificate = Some(fixture("rogue.pem")));
        assert!(
            e.contains("sources[0].certificate") && e.contains("issued by"),
            "{e}"
        );
        // With a CA configured, a bare key is not enough.
        let e = named(&|c| {
            c.sources[0].certificate = None;
            c.sources[0].public_key = key.public_hex();
            c.sources[0].cert_sn = "C1".into();
        });
        assert!(e.contains("sources[0].certificate"), "{e}");
        // Not both.
        let e = named(&|c| c.sources[0].public_key = key.public_hex());
        assert!(e.contains("sources[0].public_key"), "{e}");
        let e = named(&|c| c.ca_certificates = vec![fixture("city.key.hex")]);
        assert!(e.contains("ca_certificates[0]"), "{e}");
        let e = named(&|c| c.sources[0].certificate = Some(fixture("missing.pem")));
        assert!(e.contains("sources[0].certificate: cannot read"), "{e}");
    }

    #[test]
    fn our_own_certificate_names_our_key_and_must_hold_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(&SmKey::generate("C1").public_hex());
        c.sm2_cert_sn.clear();
        c.sm2_certificate = Some(fixture("city.pem"));
        // The city's key and certificate stand for ours here.
        c.sm2_key = fixture("city.key.hex");
        assert!(c.sources().is_ok(), "no sm2_cert_sn needed");
        assert_eq!(c.key().unwrap().cert_sn, "3601000001");
        // A key that is not the certificate's.
        let other = dir.path().join("other.sm2");
        std::fs::write(&other, SmKey::generate("x").secret_hex()).unwrap();
        c.sm2_key = other;
        let e = c.key().err().expect("refused").to_string();
        assert!(
            e.contains("gateway.sm2_certificate") && e.contains("not the key"),
            "{e}"
        );
        // Neither a serial nor a certificate.
        c.sm2_certificate = None;
        let e = c.sources().unwrap_err().to_string();
        assert!(e.contains("gateway.sm2_cert_sn"), "{e}");
    }

    #[test]
    fn a_source_is_known_by_its_token_or_its_address() {
        let key = SmKey::generate("C1");
        let (sources, _) = config(&key.public_hex()).sources().unwrap();
        let g = |f, t, p: &str| {
            authenticate(&sources, f, t, p.parse().unwrap()).map(|s| s.name.clone())
        };
        assert_eq!(
            g(Format::Cap, Some("secret"), "10.0.0.9").as_deref(),
            Some("气象台")
        );
        assert_eq!(g(Format::Cap, Some("guess"), "10.0.0.9"), None);
        assert_eq!(
            g(Format::Cap, None, "127.0.0.1"),
            None,
            "a CAP source needs its token"
        );
        assert_eq!(g(Format::Gyt, None, "127.0.0.1").as_deref(), Some("市平台"));
        assert_eq!(g(Format::Gyt, None, "127.0.0.2"), None);
        assert_eq!(
            g(Format::Gyt, Some("secret"), "127.0.0.1"),
            None,
            "a wrong token is not excused by the address"
        );
    }
}
