//! Strangers flooding a platform's QUIC port (S1 under load): clients with
//! no certificate completing handshakes as fast as they can, and half-open
//! attempts (one Initial packet, never followed up), each from a fresh
//! source port of a given source address. Loopback has all of 127/8, so
//! the flood's sources can differ from the genuine terminals' 127.0.0.1.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

/// What the flood did and what it got back.
#[derive(Debug, Default)]
pub struct FloodStats {
    /// Attempts started.
    pub attempts: AtomicU64,
    /// Certificate-less handshakes that completed at the client (TLS 1.3
    /// lets the client finish before the server sees its empty
    /// certificate) and were then closed by the platform.
    pub closed_by_platform: AtomicU64,
    /// Links the platform kept open past the check (must stay 0).
    pub kept: AtomicU64,
    /// Attempts that failed or got no answer in time.
    pub failed: AtomicU64,
    /// Retry packets received by half-open attempts (the platform asked
    /// them to prove their address).
    pub retries_seen: AtomicU64,
    /// Other packets received by half-open attempts (a handshake started).
    pub answers_seen: AtomicU64,
}

impl FloodStats {
    pub fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }
}

/// A running flood; stops when dropped.
pub struct Flood {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<()>,
    pub stats: Arc<FloodStats>,
}

impl Flood {
    /// `per_source` concurrent loops from each of `sources`, each dialling
    /// `target` with no client certificate, over and over, at most
    /// `per_second` times a second each (0: as fast as it can).
    pub fn certless(
        target: SocketAddr,
        sources: &[IpAddr],
        per_source: usize,
        per_second: u32,
    ) -> Flood {
        let mut flood = Flood::new();
        let config = certless_client_config();
        for &source in sources {
            for _ in 0..per_source {
                let (stop, stats, config) =
                    (flood.stop.clone(), flood.stats.clone(), config.clone());
                flood.tasks.spawn(async move {
                    let pace = (per_second > 0).then(|| Duration::from_secs(1) / per_second);
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        stats.attempts.fetch_add(1, Ordering::Relaxed);
                        match certless_attempt(target, source, config.clone()).await {
                            Some(true) => &stats.closed_by_platform,
                            Some(false) => &stats.kept,
                            None => &stats.failed,
                        }
                        .fetch_add(1, Ordering::Relaxed);
                        if let Some(pace) = pace {
                            tokio::time::sleep(pace.saturating_sub(started.elapsed())).await;
                        }
                    }
                });
            }
        }
        flood
    }

    /// `per_second` half-open attempts from each of `sources`: one Initial
    /// packet each from a fresh port, whatever comes back only counted.
    pub fn half_open(target: SocketAddr, sources: &[IpAddr], per_second: u32) -> Flood {
        let mut flood = Flood::new();
        let config = certless_client_config();
        for &source in sources {
            let (stop, stats, config) = (flood.stop.clone(), flood.stats.clone(), config.clone());
            flood.tasks.spawn(async move {
                let every = Duration::from_secs(1) / per_second.max(1);
                let mut tick = tokio::time::interval(every);
                let fresh = || {
                    quinn_proto::Endpoint::new(
                        Arc::new(quinn::EndpointConfig::default()),
                        None,
                        false,
                        None,
                    )
                };
                let mut endpoint = fresh();
                // The last few sockets stay open to hear the answers.
                let mut listening: std::collections::VecDeque<tokio::net::UdpSocket> =
                    Default::default();
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    for socket in &listening {
                        let mut buf = [0u8; 1500];
                        while let Ok(n) = socket.try_recv(&mut buf) {
                            // A long-header packet of type 3 is a Retry.
                            let retry = n > 0 && buf[0] & 0xf0 == 0xf0;
                            if retry {
                                &stats.retries_seen
                            } else {
                                &stats.answers_seen
                            }
                            .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let Ok(socket) = tokio::net::UdpSocket::bind((source, 0)).await else {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    stats.attempts.fetch_add(1, Ordering::Relaxed);
                    let now = Instant::now();
                    let Ok((_, mut conn)) =
                        endpoint.connect(now, config.clone(), target, certs::tls::SERVER_NAME)
                    else {
                        // Connection ids run out after many: start afresh.
                        endpoint = fresh();
                        continue;
                    };
                    let mut buf = Vec::new();
                    if let Some(t) = conn.poll_transmit(now, 1, &mut buf) {
                        let _ = socket.send_to(&buf[..t.size], target).await;
                    }
                    listening.push_back(socket);
                    if listening.len() > 64 {
                        listening.pop_front();
                    }
                }
            });
        }
        flood
    }

    fn new() -> Flood {
        Flood {
            stop: Arc::new(AtomicBool::new(false)),
            tasks: JoinSet::new(),
            stats: Arc::default(),
        }
    }

    /// Stops the flood and waits for its loops to end.
    pub async fn stop(mut self) -> Arc<FloodStats> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
        self.stats.clone()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tasks.abort_all();
    }
}

/// One certificate-less dial from a fresh port of `source`: Some(true)
/// when the platform closed it, Some(false) when it kept it, None when it
/// failed or timed out.
async fn certless_attempt(
    target: SocketAddr,
    source: IpAddr,
    config: quinn::ClientConfig,
) -> Option<bool> {
    let mut endpoint = quinn::Endpoint::client((source, 0).into()).ok()?;
    endpoint.set_default_client_config(config);
    let connecting = endpoint.connect(target, certs::tls::SERVER_NAME).ok()?;
    let conn = match tokio::time::timeout(Duration::from_secs(5), connecting).await {
        Ok(Ok(c)) => c,
        _ => {
            endpoint.close(0u32.into(), b"");
            return None;
        }
    };
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .is_ok();
    endpoint.close(0u32.into(), b"");
    Some(closed)
}

/// A stock TLS 1.3 client of the EBS protocol that presents no
/// certificate and trusts any server.
pub fn certless_client_config() -> quinn::ClientConfig {
    #[derive(Debug)]
    struct AnyServer;
    impl rustls::client::danger::ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            vec![rustls::SignatureScheme::ED25519]
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_no_client_auth();
    tls.alpn_protocols = vec![certs::tls::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .expect("a TLS 1.3 config suits QUIC");
    quinn::ClientConfig::new(Arc::new(quic))
}
