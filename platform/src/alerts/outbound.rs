//! The gateway's few outbound HTTP requests (a CAP resource fetched from a
//! configured host, a state report posted to an upper platform): one
//! request on a fresh HTTP/1.1 connection over hyper's client, http or
//! https with the Mozilla roots, no redirects (they could lead elsewhere),
//! the answer's body bounded. Callers bound the time.

use std::sync::Arc;

use hyper::Uri;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// The URL gave the port (else it is the scheme's own).
    pub explicit_port: bool,
    /// Path and query.
    pub path: String,
}

impl Target {
    /// An `http` or `https` URL without user info; None for anything else.
    pub fn parse(url: &str) -> Option<Target> {
        let parsed: Uri = url.parse().ok()?;
        let https = match parsed.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return None,
        };
        let authority = parsed.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let host = authority
            .host()
            .trim_matches(['[', ']'])
            .to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        Some(Target {
            https,
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            explicit_port: authority.port_u16().is_some(),
            host,
            path: parsed
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string()),
        })
    }

    /// The `Host` header: the port only when it is not the scheme's own.
    fn host_header(&self) -> String {
        if self.port == if self.https { 443 } else { 80 } {
            self.host.clone()
        } else if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Why a request got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The answer's body is over the caller's bound.
    TooLarge,
    /// No connection, a TLS failure, a status other than 2xx, a broken body.
    Failed(String),
}

fn failed(e: impl std::fmt::Display) -> Failure {
    Failure::Failed(e.to_string())
}

/// A request: GET when `body` is None, else POST of `body` as
/// `content_type`. The answer's body, at most `max_bytes`.
pub struct Request<'a> {
    pub body: Option<(&'a str, Vec<u8>)>,
    pub max_bytes: usize,
}

/// Sends `request` to `target`; the 2xx answer's body.
pub async fn send(target: &Target, request: Request<'_>) -> Result<Vec<u8>, Failure> {
    let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(failed)?;
    if !target.https {
        return exchange(hyper_util::rt::TokioIo::new(tcp), target, request).await;
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
    let name = rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(failed)?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(failed)?;
    exchange(hyper_util::rt::TokioIo::new(tls), target, request).await
}

async fn exchange<I>(io: I, t: &Target, request: Request<'_>) -> Result<Vec<u8>, Failure>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(failed)?;
    let driver = tokio::spawn(conn);
    let builder = hyper::Request::builder()
        .uri(t.path.as_str())
        .header(hyper::header::HOST, t.host_header())
        .header(hyper::header::USER_AGENT, "ebs-platform");
    let built = match request.body {
        None => builder.method("GET").body(axum::body::Body::empty()),
        Some((content_type, bytes)) => builder
            .method("POST")
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(axum::body::Body::from(bytes)),
    }
    .map_err(failed)?;
    let max = request.max_bytes;
    let result = async {
        let response = sender.send_request(built).await.map_err(failed)?;
        if !response.status().is_success() {
            return Err(Failure::Failed(format!("answered {}", response.status())));
        }
        if response
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n > max as u64)
        {
            return Err(Failure::TooLarge);
        }
        axum::body::to_bytes(axum::body::Body::new(response.into_body()), max)
            .await
            .map(|b| b.to_vec())
            .map_err(|_| Failure::TooLarge)
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_without_user_info_are_targets() {
        let t = Target::parse("https://Cap.Example.cn/a.mp3?x=1").unwrap();
        assert_eq!(
            (t.https, t.host.as_str(), t.port, t.path.as_str()),
            (true, "cap.example.cn", 443, "/a.mp3?x=1")
        );
        assert!(!t.explicit_port);
        let t = Target::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 8080, "/")
        );
        assert!(t.explicit_port);
        for bad in [
            "file:///etc/passwd",
            "ftp://cap.example.cn/a",
            "http://u:p@cap.example.cn/a",
            "not a url",
            "/relative",
        ] {
            assert_eq!(Target::parse(bad), None, "{bad}");
        }
    }
}
