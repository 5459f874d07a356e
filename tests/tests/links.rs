//! QUIC links between real endpoints (`transport`): what a child notices
//! when its platform dies and comes back.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use certs::pki::{DistrictPki, Layout};
use certs::{RevocationState, TrustAnchor};

fn crypto(anchor: &TrustAnchor) -> transport::NodeCrypto {
    transport::NodeCrypto {
        anchor: anchor.clone(),
        revocations: Arc::new(RwLock::new(RevocationState::new())),
        on_reject: None,
    }
}

/// A platform endpoint on `socket` in a runtime of its own, holding every
/// link it accepts; dropping the runtime kills it without a word sent (as
/// a crash or a power cut does).
fn platform_in_own_runtime(
    identity: &certs::Identity,
    crypto: &transport::NodeCrypto,
    socket: std::net::UdpSocket,
) -> tokio::runtime::Runtime {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let endpoint = {
        // Its driver runs on `rt`.
        let _in_rt = rt.enter();
        transport::platform_endpoint(identity, crypto, socket).expect("the platform's endpoint")
    };
    rt.spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                if let Ok(conn) = incoming.await {
                    conn.closed().await;
                }
            });
        }
    });
    rt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_hears_at_its_next_packet_that_its_platform_restarted() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let now = certs::time::unix_now();
    let layout = Layout {
        towns: 1,
        villages: 1,
        terminals: 1,
    };
    let pki = DistrictPki::generate(layout, (now - 3600, now + 86_400), now).expect("PKI");
    let anchor = TrustAnchor::new(pki.root.cert().clone()).expect("anchor");
    let village = &pki.towns[0].villages[0];
    let crypto = crypto(&anchor);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("a port");
    let addr = socket.local_addr().expect("its address");
    let first = platform_in_own_runtime(&village.identity, &crypto, socket);

    let terminal = transport::client_endpoint(
        &village.terminals[0],
        &crypto,
        std::net::UdpSocket::bind("127.0.0.1:0").expect("a port"),
    )
    .expect("the terminal's endpoint");
    let conn = transport::connect(&terminal, addr).await.expect("linked");

    // The platform dies and comes back on the same port.
    first.shutdown_background();
    let socket = {
        let mut tries = 0;
        loop {
            match std::net::UdpSocket::bind(addr) {
                Ok(s) => break s,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("the port stays taken: {e}"),
            }
        }
    };
    let second = platform_in_own_runtime(&village.identity, &crypto, socket);

    // The terminal's next packet (a keep-alive, a time probe) is answered
    // with a stateless reset the terminal can trust: the link is over now,
    // not at its idle timeout (40 s).
    conn.send_datagram(bytes::Bytes::from_static(b"probe"))
        .expect("a datagram");
    let ended = tokio::time::timeout(Duration::from_secs(3), conn.closed()).await;
    assert!(
        matches!(ended, Ok(quinn::ConnectionError::Reset)),
        "the link after the platform restarted: {ended:?}"
    );
    // ...and the terminal links again at once.
    transport::connect(&terminal, addr)
        .await
        .expect("linked again");
    second.shutdown_background();
}
