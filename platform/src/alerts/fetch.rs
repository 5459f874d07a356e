//! A CAP resource named by `uri`, fetched only from a configured host:
//! never an arbitrary URL (a CAP document must not make the platform
//! reach into its own network). One GET over hyper's client connection
//! (http, or https with the Mozilla roots), no redirects (they could lead
//! elsewhere), bounded in time and size, checked against the size and
//! SHA-1 digest the alert gave.

use std::sync::Arc;
use std::time::Duration;

use gateway::cap::{Resource, MAX_RESOURCE_BYTES};
use hyper::Uri;

/// The whole fetch, connect to last byte.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    #[error("resource uri {0:?}: not an http or https URL")]
    NotUrl(String),
    #[error("resource uri {uri:?}: host {host} is not in gateway.fetch_hosts")]
    HostNotAllowed { uri: String, host: String },
    #[error("resource uri {0:?}: {1}")]
    Failed(String, String),
    #[error("resource uri {0:?}: over {MAX_RESOURCE_BYTES} bytes")]
    TooLarge(String),
}

/// Where a fetch goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query.
    pub path: String,
}

/// The target of `uri` when one of `allowed` names its host (`host:port`,
/// or `host` alone for the scheme's own port).
pub fn allowed_target(uri: &str, allowed: &[String]) -> Result<Target, FetchError> {
    let not_url = || FetchError::NotUrl(uri.into());
    let parsed: Uri = uri.parse().map_err(|_| not_url())?;
    let https = match parsed.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(not_url()),
    };
    let authority = parsed.authority().ok_or_else(not_url)?;
    if authority.as_str().contains('@') {
        return Err(not_url());
    }
    let host = authority
        .host()
        .trim_matches(['[', ']'])
        .to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let explicit = authority.port_u16().is_some();
    let ok = allowed.iter().any(|a| {
        let a = a.to_ascii_lowercase();
        a == format!("{host}:{port}") || (!explicit && a == host)
    });
    if !ok {
        return Err(FetchError::HostNotAllowed {
            uri: uri.into(),
            host: format!("{host}:{port}"),
        });
    }
    Ok(Target {
        https,
        host,
        port,
        path: parsed
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string()),
    })
}

/// Fetches `resource.uri` if its host is allowed, bounded and checked.
pub async fn fetch(resource: &Resource, allowed: &[String]) -> Result<Vec<u8>, FetchError> {
    let uri = resource.uri.clone().unwrap_or_default();
    let target = allowed_target(&uri, allowed)?;
    let body = tokio::time::timeout(FETCH_TIMEOUT, get(&target))
        .await
        .map_err(|_| {
            FetchError::Failed(uri.clone(), format!("no answer within {FETCH_TIMEOUT:?}"))
        })?
        .map_err(|e| match e {
            Got::TooLarge => FetchError::TooLarge(uri.clone()),
            Got::Failed(why) => FetchError::Failed(uri.clone(), why),
        })?;
    resource
        .check(&body, "alert/info/resource")
        .map_err(|e| FetchError::Failed(uri.clone(), e.to_string()))?;
    Ok(body)
}

enum Got {
    TooLarge,
    Failed(String),
}

fn failed(e: impl std::fmt::Display) -> Got {
    Got::Failed(e.to_string())
}

async fn get(t: &Target) -> Result<Vec<u8>, Got> {
    let tcp = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(failed)?;
    if !t.https {
        return exchange(hyper_util::rt::TokioIo::new(tcp), t).await;
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(failed)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(t.host.clone()).map_err(failed)?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(failed)?;
    exchange(hyper_util::rt::TokioIo::new(tls), t).await
}

/// One GET on a fresh HTTP/1.1 connection; the body, bounded.
async fn exchange<I>(io: I, t: &Target) -> Result<Vec<u8>, Got>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(failed)?;
    let driver = tokio::spawn(conn);
    let default_port = if t.https { 443 } else { 80 };
    let host = if t.port == default_port {
        t.host.clone()
    } else {
        format!("{}:{}", t.host, t.port)
    };
    let request = hyper::Request::get(t.path.as_str())
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "ebs-platform")
        .body(axum::body::Body::empty())
        .map_err(failed)?;
    let response = sender.send_request(request).await.map_err(failed)?;
    let result = if !response.status().is_success() {
        Err(Got::Failed(format!("answered {}", response.status())))
    } else if response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_RESOURCE_BYTES as u64)
    {
        Err(Got::TooLarge)
    } else {
        axum::body::to_bytes(
            axum::body::Body::new(response.into_body()),
            MAX_RESOURCE_BYTES,
        )
        .await
        .map(|b| b.to_vec())
        .map_err(|_| Got::TooLarge)
    };
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_hosts_are_fetched_from() {
        let allowed = vec!["cap.example.cn".to_string(), "127.0.0.1:8080".to_string()];
        let t = allowed_target("https://cap.example.cn/a.mp3?x=1", &allowed).unwrap();
        assert_eq!(
            (t.https, t.port, t.path.as_str()),
            (true, 443, "/a.mp3?x=1")
        );
        assert!(allowed_target("http://127.0.0.1:8080/a.mp3", &allowed).is_ok());
        for bad in [
            "https://cap.example.cn:8443/a.mp3",
            "http://127.0.0.1:8081/a.mp3",
            "http://169.254.169.254/latest/meta-data",
            "http://cap.example.cn.evil.org/a.mp3",
        ] {
            assert!(
                matches!(
                    allowed_target(bad, &allowed),
                    Err(FetchError::HostNotAllowed { .. })
                ),
                "{bad}"
            );
        }
        for bad in [
            "file:///etc/passwd",
            "ftp://cap.example.cn/a",
            "http://u:p@cap.example.cn/a",
            "not a url",
        ] {
            assert!(
                matches!(allowed_target(bad, &allowed), Err(FetchError::NotUrl(_))),
                "{bad}"
            );
        }
    }
}
