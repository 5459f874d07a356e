//! Real TLS 1.3 handshakes in memory: peers are authenticated by the EBS chain.

use std::sync::{Arc, RwLock};

use certs::pki::{DistrictPki, Layout};
use certs::tls::{self, ChainVerifier, PeerPolicy};
use certs::{Identity, RevocationList, RevocationState, SecretKey, Tier, TrustAnchor};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection};

fn new_pki() -> DistrictPki {
    let now = certs::time::unix_now();
    DistrictPki::generate(
        Layout {
            towns: 2,
            villages: 2,
            terminals: 4,
        },
        (now - 3600, now + 86_400),
        now,
    )
    .unwrap()
}

fn verifier(
    pki: &DistrictPki,
    state: &Arc<RwLock<RevocationState>>,
    policy: PeerPolicy,
) -> Arc<ChainVerifier> {
    let anchor = TrustAnchor::new(pki.root.cert().clone()).unwrap();
    Arc::new(ChainVerifier::new(anchor, state.clone(), policy))
}

/// Runs a handshake to completion; returns the server connection or the
/// first error either side raised.
fn handshake(
    client: rustls::ClientConfig,
    server: rustls::ServerConfig,
) -> Result<ServerConnection, rustls::Error> {
    let name = ServerName::try_from(tls::SERVER_NAME).unwrap();
    let mut c = ClientConnection::new(Arc::new(client), name)?;
    let mut s = ServerConnection::new(Arc::new(server))?;
    for _ in 0..20 {
        let mut buf = Vec::new();
        c.write_tls(&mut buf).unwrap();
        s.read_tls(&mut &buf[..]).unwrap();
        s.process_new_packets()?;
        let mut buf = Vec::new();
        s.write_tls(&mut buf).unwrap();
        c.read_tls(&mut &buf[..]).unwrap();
        c.process_new_packets()?;
        if !c.is_handshaking() && !s.is_handshaking() {
            // Flush the client's final flight so the server sees any alert.
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets()?;
            return Ok(s);
        }
    }
    panic!("handshake did not finish");
}

struct Link<'a> {
    pki: &'a DistrictPki,
    state: Arc<RwLock<RevocationState>>,
}

impl Link<'_> {
    /// `client` dials `server`; the client accepts the server as its upstream
    /// for `area`, the server accepts anything from below.
    fn connect(
        &self,
        client: &Identity,
        server: &Identity,
        area: certs::AreaCode,
    ) -> Result<ServerConnection, rustls::Error> {
        let cc = tls::client_config(
            client,
            verifier(self.pki, &self.state, PeerPolicy::upstream_of(area)),
        )
        .unwrap();
        let sc = tls::server_config(
            server,
            verifier(self.pki, &self.state, PeerPolicy::downstream()),
        )
        .unwrap();
        handshake(cc, sc)
    }
}

#[test]
fn terminal_and_its_village_platform_authenticate_each_other() {
    let pki = new_pki();
    let link = Link {
        pki: &pki,
        state: Default::default(),
    };
    let village = &pki.towns[0].villages[0];
    let terminal = &village.terminals[0];
    let server = link
        .connect(terminal, &village.identity, village.area)
        .unwrap();
    let chain = tls::peer_chain(server.peer_certificates().unwrap()).unwrap();
    assert_eq!(chain.last().unwrap().serial(), terminal.cert().serial());
    assert_eq!(server.alpn_protocol(), Some(tls::ALPN));
    // The town and the district also qualify as the terminal's upstream (failover).
    assert!(link
        .connect(terminal, &pki.towns[0].identity, village.area)
        .is_ok());
    assert!(link.connect(terminal, &pki.district, village.area).is_ok());
}

#[test]
fn rogue_and_unfit_peers_are_refused() {
    let pki = new_pki();
    let link = Link {
        pki: &pki,
        state: Default::default(),
    };
    let village = &pki.towns[0].villages[0];
    let terminal = &village.terminals[0];

    // A rogue server with a complete chain from another root.
    let rogue = new_pki(); // an independent PKI with its own root
    let err = link
        .connect(terminal, &rogue.towns[0].villages[0].identity, village.area)
        .unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );

    // Another terminal posing as a platform.
    let other_terminal = &village.terminals[1];
    let err = link
        .connect(terminal, other_terminal, village.area)
        .unwrap_err();
    assert!(format!("{err:?}").contains("TierNotAllowed"), "{err:?}");

    // A genuine platform of another town is not this terminal's upstream.
    let err = link
        .connect(terminal, &pki.towns[1].identity, village.area)
        .unwrap_err();
    assert!(format!("{err:?}").contains("ScopeMismatch"), "{err:?}");

    // A valid chain presented with a different key (stolen certificate, no key).
    let thief = Identity {
        key: SecretKey::generate(),
        chain: terminal.chain.clone(),
    };
    let err = link
        .connect(&thief, &village.identity, village.area)
        .unwrap_err();
    assert!(format!("{err:?}").contains("KeyMismatch"), "{err:?}");
}

#[test]
fn revocation_applies_to_the_next_handshake() {
    let pki = new_pki();
    let link = Link {
        pki: &pki,
        state: Default::default(),
    };
    let village = &pki.towns[0].villages[0];
    let terminal = &village.terminals[0];
    assert!(link
        .connect(terminal, &village.identity, village.area)
        .is_ok());
    let anchor = TrustAnchor::new(pki.root.cert().clone()).unwrap();
    let list = RevocationList::sign(
        pki.district.cert().serial(),
        pki.district.chain.clone(),
        &pki.district.key,
        1,
        certs::time::unix_now(),
        vec![terminal.cert().serial()],
    )
    .unwrap();
    link.state
        .write()
        .unwrap()
        .apply(list, &anchor, certs::time::unix_now())
        .unwrap();
    let err = link
        .connect(terminal, &village.identity, village.area)
        .unwrap_err();
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)
    );
    assert_eq!(terminal.cert().tier(), Tier::Terminal);
}
