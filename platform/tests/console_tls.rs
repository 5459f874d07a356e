//! The console and API over HTTPS (R23): a platform given a certificate
//! serves it (plain HTTP refused: `api::tls`'s unit tests), marks its
//! answers with HSTS and its session cookie Secure; `platform status` prints the address and the same fingerprint
//! the running platform logged.

use std::process::Command;
use std::sync::Arc;

use certs::pki::{copy, DistrictPki, Layout};
use certs::Bundle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request over TLS, trusting only `cert`; the whole answer.
async fn https(addr: std::net::SocketAddr, cert: &std::path::Path, request: String) -> String {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the configured certificate");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer).await;
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_with_a_certificate_serves_https_with_hsts_and_secure_cookies() {
    let dir = tempfile::tempdir().unwrap();
    let now = certs::time::unix_now();
    let pki = DistrictPki::generate(Layout::ONE_OF_EACH, (now - 3600, now + 86_400), now).unwrap();
    let bundle_path = dir.path().join("district.bundle");
    Bundle::new(pki.root.cert().clone(), copy(&pki.district), now)
        .unwrap()
        .write_file(&bundle_path)
        .unwrap();
    // A certificate as an operator would bring (made here the way a
    // platform makes its self-signed one).
    let mut made = platform::PlatformConfig::new(
        "x",
        bundle_path.clone(),
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("certs"),
    );
    made.http = Some("192.0.2.1:443".parse().unwrap());
    let tls = platform::api::tls::for_config(&made).unwrap().unwrap();
    let (cert, key) = platform::api::tls::self_signed_paths(&made.store);

    let mut config = platform::PlatformConfig::new(
        "经开区",
        bundle_path.clone(),
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("store"),
    );
    config.http = Some("127.0.0.1:0".parse().unwrap());
    config.tls_cert = Some(cert.clone());
    config.tls_key = Some(key.clone());
    let bundle = Bundle::read_file(&bundle_path, now).unwrap();
    let handle = platform::Platform::new(config.clone(), bundle)
        .unwrap()
        .with_accounts(Box::new(|a| {
            a.add(
                "zhang",
                "张三",
                [platform::accounts::Role::Drafter].into(),
                vec![],
                "a long enough password",
                certs::time::unix_now_ms(),
            )?;
            Ok(())
        }))
        .start(platform::Listeners::loopback(true).await.unwrap())
        .await
        .unwrap();
    let addr = handle.http_addr.unwrap();
    assert_eq!(
        handle.tls_fingerprint.as_deref(),
        Some(tls.fingerprint.as_str())
    );

    let health = https(
        addr,
        &cert,
        "GET /api/health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n".into(),
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(
        health
            .to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
        "{health}"
    );
    let body = r#"{"name":"zhang","password":"a long enough password"}"#;
    let login = https(
        addr,
        &cert,
        format!(
            "POST /api/login HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(login.starts_with("HTTP/1.1 200"), "{login}");
    let cookie = login
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: ebs_session=")
        })
        .expect("a session cookie");
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let page = https(
        addr,
        &cert,
        "GET /login HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n".into(),
    )
    .await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("script-src 'self'"), "{page}");

    // `platform status` reads the same fingerprint from the configuration.
    let toml_path = dir.path().join("district.toml");
    std::fs::write(
        &toml_path,
        format!(
            "name = \"经开区\"\nbundle = {bundle_path:?}\nlisten = \"127.0.0.1:4433\"\nhttp = \"{addr}\"\n\
             store = {:?}\ntls_cert = {cert:?}\ntls_key = {key:?}\n",
            dir.path().join("store"),
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_platform"))
        .args(["status", "--config", toml_path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("https://{addr}/")), "{text}");
    assert!(text.contains(&tls.fingerprint), "{text}");
    handle.shutdown().await;
}
