//! HTTPS for the console and API (R23): the certificate and key from the
//! configuration, or a self-signed pair made at first start and kept in
//! the store directory, whose SHA-256 fingerprint is printed (and shown
//! by `platform status`) so operators can check it in the browser.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::config::PlatformConfig;

pub struct ConsoleTls {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate (DER), colon-separated hex.
    pub fingerprint: String,
    pub cert_path: PathBuf,
}

/// Where a self-signed certificate of this platform lives.
pub fn self_signed_paths(store: &Path) -> (PathBuf, PathBuf) {
    (store.join("console-tls.crt"), store.join("console-tls.key"))
}

pub fn fingerprint(der: &[u8]) -> String {
    crate::accounts::sha256(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The TLS the HTTP listener gets: None (plain HTTP) only on a loopback
/// address without a configured certificate.
pub fn for_config(config: &PlatformConfig) -> anyhow::Result<Option<ConsoleTls>> {
    let Some(addr) = config.http else {
        return Ok(None);
    };
    let (cert, key) = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        (None, None) if addr.ip().is_loopback() => return Ok(None),
        (None, None) => {
            let (c, k) = self_signed_paths(&config.store);
            if !c.exists() || !k.exists() {
                make_self_signed(&c, &k, addr, &config.name)?;
            }
            (c, k)
        }
        _ => anyhow::bail!("tls_cert, tls_key: give both or neither"),
    };
    load(&cert, &key).map(Some)
}

fn make_self_signed(
    cert: &Path,
    key: &Path,
    addr: std::net::SocketAddr,
    name: &str,
) -> anyhow::Result<()> {
    let mut names = vec!["localhost".to_string()];
    if !addr.ip().is_unspecified() {
        names.push(addr.ip().to_string());
    }
    let mut params = rcgen::CertificateParams::new(names)
        .context("tls: building the self-signed certificate")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} console"));
    let pair = rcgen::KeyPair::generate().context("tls: generating a key")?;
    let made = params
        .self_signed(&pair)
        .context("tls: signing the self-signed certificate")?;
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("tls: cannot create {}", dir.display()))?;
    }
    write_private(key, pair.serialize_pem().as_bytes())?;
    std::fs::write(cert, made.pem())
        .with_context(|| format!("tls: cannot write {}", cert.display()))?;
    tracing::warn!(
        "made a self-signed console certificate {} (fingerprint {}); configure tls_cert and tls_key to use your own",
        cert.display(),
        fingerprint(made.der())
    );
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o
        .open(path)
        .with_context(|| format!("tls: cannot write {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Reads a PEM chain and key; the fingerprint is of the first (leaf)
/// certificate.
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<ConsoleTls> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("tls_cert: cannot read {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "tls_cert: {} is not a PEM certificate chain",
                cert.display()
            )
        })?;
    anyhow::ensure!(
        !chain.is_empty(),
        "tls_cert: {} holds no certificate",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("tls_key: {} is not a PEM private key", key.display()))?;
    let fingerprint = fingerprint(&chain[0]);
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("tls: protocol versions")?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .context("tls_cert, tls_key: the key does not fit the certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ConsoleTls {
        config: Arc::new(config),
        fingerprint,
        cert_path: cert.to_path_buf(),
    })
}

/// The fingerprint of the certificate a stopped or running platform
/// serves (for `platform status`), without starting anything.
pub fn configured_fingerprint(
    config: &PlatformConfig,
) -> anyhow::Result<Option<(PathBuf, String)>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let path = match &config.tls_cert {
        Some(c) => c.clone(),
        None => {
            let (c, _) = self_signed_paths(&config.store);
            if !c.exists() {
                return Ok(None);
            }
            c
        }
    };
    let first = CertificateDer::pem_file_iter(&path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .next()
        .with_context(|| format!("{} holds no certificate", path.display()))?
        .with_context(|| format!("{} is not PEM", path.display()))?;
    Ok(Some((path, fingerprint(&first))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, http: &str) -> PlatformConfig {
        let mut c = PlatformConfig::new(
            "测试平台",
            dir.join("b"),
            "127.0.0.1:0".parse().unwrap(),
            dir.join("store"),
        );
        c.http = Some(http.parse().unwrap());
        c
    }

    #[test]
    fn plain_http_only_on_loopback_and_a_self_signed_certificate_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        assert!(for_config(&config(dir.path(), "127.0.0.1:8080"))
            .unwrap()
            .is_none());
        assert!(for_config(&config(dir.path(), "[::1]:8080"))
            .unwrap()
            .is_none());
        let open = config(dir.path(), "192.0.2.7:8443");
        let first = for_config(&open).unwrap().expect("HTTPS off loopback");
        let again = for_config(&open).unwrap().unwrap();
        assert_eq!(first.fingerprint, again.fingerprint, "made once, then kept");
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        let (_, key) = self_signed_paths(&open.store);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key is private");
        }
        assert_eq!(
            configured_fingerprint(&open).unwrap().unwrap().1,
            first.fingerprint
        );
        // A configured pair is used on loopback too.
        let mut configured = config(dir.path(), "127.0.0.1:8443");
        let (c, k) = self_signed_paths(&open.store);
        configured.tls_cert = Some(c);
        configured.tls_key = Some(k.clone());
        assert!(for_config(&configured).unwrap().is_some());
        // A key that is not PEM is named.
        std::fs::write(&k, "not a key").unwrap();
        let e = for_config(&configured).err().unwrap().to_string();
        assert!(e.starts_with("tls_key"), "{e}");
    }

    /// (The TLS round trip, HSTS and Secure cookies are in
    /// `tests/console_tls.rs`.)
    #[tokio::test]
    async fn plain_http_to_the_tls_listener_gets_no_answer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let tls = for_config(&config(dir.path(), "192.0.2.7:8443"))
            .unwrap()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(super::super::serve(
            listener,
            app,
            Some(tls.config.clone()),
            async {
                let _ = stopped.await;
            },
        ));
        let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            plain.read_to_end(&mut buf),
        )
        .await;
        let answer = String::from_utf8_lossy(&buf);
        assert!(
            !answer.contains("200") && !answer.contains("ok"),
            "plain HTTP answered: {answer}"
        );
        let _ = stop.send(());
        server.await.unwrap();
    }
}
