//! A CAP resource named by `uri`, fetched only from a configured host:
//! never an arbitrary URL (a CAP document must not make the platform
//! reach into its own network). One GET (`outbound`), bounded in time and
//! size, checked against the size and SHA-1 digest the alert gave.

use std::time::Duration;

use gateway::cap::{Resource, MAX_RESOURCE_BYTES};

use super::outbound::{self, Failure, Target};

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

/// The target of `uri` when one of `allowed` names its host (`host:port`,
/// or `host` alone for the scheme's own port).
pub fn allowed_target(uri: &str, allowed: &[String]) -> Result<Target, FetchError> {
    let target = Target::parse(uri).ok_or_else(|| FetchError::NotUrl(uri.into()))?;
    let (host, port, explicit) = (target.host.clone(), target.port, target.explicit_port);
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
    Ok(target)
}

/// Fetches `resource.uri` if its host is allowed, bounded and checked.
pub async fn fetch(resource: &Resource, allowed: &[String]) -> Result<Vec<u8>, FetchError> {
    let uri = resource.uri.clone().unwrap_or_default();
    let target = allowed_target(&uri, allowed)?;
    let get = outbound::Request {
        body: None,
        max_bytes: MAX_RESOURCE_BYTES,
    };
    let body = tokio::time::timeout(FETCH_TIMEOUT, outbound::send(&target, get))
        .await
        .map_err(|_| {
            FetchError::Failed(uri.clone(), format!("no answer within {FETCH_TIMEOUT:?}"))
        })?
        .map_err(|e| match e {
            Failure::TooLarge => FetchError::TooLarge(uri.clone()),
            Failure::Failed(why) => FetchError::Failed(uri.clone(), why),
        })?;
    resource
        .check(&body, "alert/info/resource")
        .map_err(|e| FetchError::Failed(uri.clone(), e.to_string()))?;
    Ok(body)
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
