//! Chain validation: every acceptance path and every refusal reason.

use certs::cert::CertBody;
use certs::pki::{DistrictPki, Layout};
use certs::{
    AreaCode, CertRequest, Certificate, ChainError, Identity, IssueError, RevocationList,
    RevocationState, SecretKey, Tier, TrustAnchor,
};

const NOW: i64 = 1_800_000_000;
const VALIDITY: (i64, i64) = (NOW - 86_400, NOW + 365 * 86_400);

fn small() -> DistrictPki {
    DistrictPki::generate(
        Layout {
            towns: 2,
            villages: 4,
            terminals: 8,
        },
        VALIDITY,
        NOW,
    )
    .unwrap()
}

fn anchor(pki: &DistrictPki) -> TrustAnchor {
    TrustAnchor::new(pki.root.cert().clone()).unwrap()
}

/// The longest chain the tiers allow: root → district → town → village →
/// terminal. (The generated PKI certifies terminals at the district; the
/// validator must still handle every depth.)
fn terminal_chain(pki: &DistrictPki) -> Vec<Certificate> {
    let village = &pki.towns[0].villages[0];
    village
        .identity
        .issue_child(
            Tier::Terminal,
            "村级签发的终端",
            certs::pki::resource_code(village.area, "03010100", 99),
            vec![village.area],
            VALIDITY,
            NOW,
        )
        .unwrap()
        .chain
}

/// Re-signs `cert` with changes, keeping its issuer, to build invalid chains.
fn resign(
    issuer: &Identity,
    cert: &Certificate,
    change: impl FnOnce(&mut CertBody),
) -> Certificate {
    let mut body = cert.body().clone();
    change(&mut body);
    Certificate::sign_body(body, &issuer.key)
}

#[test]
fn valid_chains_verify_at_every_tier() {
    let pki = small();
    let a = anchor(&pki);
    let none = RevocationState::new();
    let chain = terminal_chain(&pki);
    assert_eq!(chain.len(), 4);
    let leaf = a.verify(&chain, NOW, &none).unwrap();
    assert_eq!(leaf.tier(), Tier::Terminal);
    for n in 1..=4 {
        assert_eq!(
            a.verify(&chain[..n], NOW, &none).unwrap().serial(),
            chain[n - 1].serial()
        );
    }
    // A leading copy of the provisioned root is accepted.
    let mut with_root = vec![pki.root.cert().clone()];
    with_root.extend(chain.iter().cloned());
    assert!(a.verify(&with_root, NOW, &none).is_ok());
}

#[test]
fn every_chain_refusal_has_its_reason() {
    let pki = small();
    let a = anchor(&pki);
    let none = RevocationState::new();
    let chain = terminal_chain(&pki);
    let village = &pki.towns[0].villages[0].identity;
    let town = &pki.towns[0].identity;

    assert_eq!(a.verify(&[], NOW, &none), Err(ChainError::Empty));
    let mut long = chain.clone();
    long.push(chain[3].clone());
    assert_eq!(a.verify(&long, NOW, &none), Err(ChainError::TooLong(5)));
    assert_eq!(
        TrustAnchor::new(chain[0].clone()).err(),
        Some(ChainError::BadRoot)
    );

    // A complete chain from another root.
    let other = small();
    let mut foreign = vec![other.root.cert().clone()];
    foreign.extend(terminal_chain(&other));
    assert_eq!(
        a.verify(&foreign, NOW, &none),
        Err(ChainError::UntrustedRoot)
    );
    assert!(matches!(
        a.verify(&terminal_chain(&other), NOW, &none),
        Err(ChainError::UnknownIssuer { .. })
    ));

    // One changed byte in a certificate breaks its issuer's signature.
    let mut bytes = chain[2].as_bytes().to_vec();
    bytes[20] ^= 1; // inside the name
    let tampered = Certificate::decode(&bytes).unwrap();
    let bad_sig = vec![chain[0].clone(), chain[1].clone(), tampered];
    assert_eq!(
        a.verify(&bad_sig, NOW, &none),
        Err(ChainError::BadSignature(chain[2].serial()))
    );

    // A village signing another village-tier certificate: tier order.
    let fake2 = Certificate::sign_body(
        CertBody {
            serial: 78,
            tier: Tier::Village,
            issuer_serial: village.cert().serial(),
            ..village.cert().body().clone()
        },
        &village.key,
    );
    let same_tier = [chain[0].clone(), chain[1].clone(), chain[2].clone(), fake2];
    assert!(matches!(
        a.verify(&same_tier, NOW, &none),
        Err(ChainError::TierOrder {
            tier: Tier::Village,
            issuer_tier: Tier::Village,
            ..
        })
    ));

    // A village certificate claiming a neighbouring village: scope escalation.
    let neighbour = pki.towns[0].villages[1].area;
    let escalated = resign(town, &chain[2], |b| {
        b.scope = vec![neighbour, b.scope[0], "360121000000".parse().unwrap()]
    });
    let esc_chain = [chain[0].clone(), chain[1].clone(), escalated];
    assert_eq!(
        a.verify(&esc_chain, NOW, &none),
        Err(ChainError::ScopeEscalation(chain[2].serial()))
    );

    // Validity outside the issuer's.
    let long_lived = resign(town, &chain[2], |b| b.not_after = VALIDITY.1 + 1);
    let ll_chain = [chain[0].clone(), chain[1].clone(), long_lived];
    assert_eq!(
        a.verify(&ll_chain, NOW, &none),
        Err(ChainError::ValidityOutsideIssuer(chain[2].serial()))
    );

    // Expired and not yet valid (the leaf only, and the whole chain by time).
    let expired = resign(town, &chain[2], |b| b.not_after = NOW - 1);
    let exp_chain = [chain[0].clone(), chain[1].clone(), expired];
    assert!(
        matches!(a.verify(&exp_chain, NOW, &none), Err(ChainError::Expired { serial, .. }) if serial == chain[2].serial())
    );
    let early = resign(town, &chain[2], |b| b.not_before = NOW + 10);
    let early_chain = [chain[0].clone(), chain[1].clone(), early];
    assert!(matches!(
        a.verify(&early_chain, NOW, &none),
        Err(ChainError::NotYetValid { .. })
    ));
    assert!(matches!(
        a.verify(&chain, VALIDITY.1 + 1, &none),
        Err(ChainError::Expired { .. })
    ));
    assert!(matches!(
        a.verify(&chain, VALIDITY.0 - 1, &none),
        Err(ChainError::NotYetValid { .. })
    ));
}

#[test]
fn every_refusal_has_a_distinct_code() {
    let errors = [
        ChainError::Empty,
        ChainError::TooLong(5),
        ChainError::BadRoot,
        ChainError::UntrustedRoot,
        ChainError::UnknownIssuer {
            serial: 1,
            issuer: 2,
            expected: 3,
        },
        ChainError::BadSignature(1),
        ChainError::TierOrder {
            serial: 1,
            tier: Tier::Town,
            issuer_tier: Tier::Town,
        },
        ChainError::ScopeEscalation(1),
        ChainError::ValidityOutsideIssuer(1),
        ChainError::Expired {
            serial: 1,
            not_after: 0,
        },
        ChainError::NotYetValid {
            serial: 1,
            not_before: 0,
        },
        ChainError::Revoked(1),
    ];
    let mut codes: Vec<_> = errors.iter().map(|e| e.code()).collect();
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), errors.len());
}

#[test]
fn issuing_enforces_the_rules() {
    let pki = small();
    let town = &pki.towns[0].identity;
    let village_area = pki.towns[1].villages[0].area;
    let req = |tier, scope: AreaCode| CertRequest {
        tier,
        name: "测试村".into(),
        resource_code: pki.towns[0].villages[0]
            .identity
            .cert()
            .body()
            .resource_code,
        scope: vec![scope],
        not_before: VALIDITY.0,
        not_after: VALIDITY.1,
        public_key: SecretKey::generate().public(),
    };
    let own = pki.towns[0].villages[0].area;
    assert!(Certificate::issue(town.cert(), &town.key, req(Tier::Village, own), NOW).is_ok());
    assert_eq!(
        Certificate::issue(
            town.cert(),
            &town.key,
            req(Tier::Village, village_area),
            NOW
        )
        .err(),
        Some(IssueError::ScopeOutsideIssuer(village_area.to_string()))
    );
    assert!(matches!(
        Certificate::issue(town.cert(), &town.key, req(Tier::Town, own), NOW),
        Err(IssueError::TierOrder { .. })
    ));
    assert!(matches!(
        Certificate::issue(town.cert(), &town.key, req(Tier::District, own), NOW),
        Err(IssueError::TierOrder { .. })
    ));
    let mut long = req(Tier::Village, own);
    long.not_after = VALIDITY.1 + 1;
    assert!(matches!(
        Certificate::issue(town.cert(), &town.key, long, NOW),
        Err(IssueError::ValidityOutsideIssuer { .. })
    ));
    assert_eq!(
        Certificate::issue(
            town.cert(),
            &town.key,
            req(Tier::Village, own),
            VALIDITY.1 + 5
        )
        .err(),
        Some(IssueError::IssuerNotValid(VALIDITY.1 + 5))
    );
    assert_eq!(
        Certificate::issue(
            town.cert(),
            &SecretKey::generate(),
            req(Tier::Village, own),
            NOW
        )
        .err(),
        Some(IssueError::WrongIssuerKey)
    );
    let mut empty = req(Tier::Village, own);
    empty.scope.clear();
    assert_eq!(
        Certificate::issue(town.cert(), &town.key, empty, NOW).err(),
        Some(IssueError::ScopeSize)
    );
}

#[test]
fn revocation_by_root_and_district() {
    let pki = small();
    let a = anchor(&pki);
    let chain = terminal_chain(&pki);
    let village_serial = chain[2].serial();

    // The district revokes the village: its terminal's chain is refused.
    let mut state = RevocationState::new();
    let list = RevocationList::sign(
        pki.district.cert().serial(),
        pki.district.chain.clone(),
        &pki.district.key,
        1,
        NOW,
        vec![village_serial],
    )
    .unwrap();
    assert_eq!(
        state.apply(list.clone(), &a, NOW),
        Ok(certs::Applied::Updated)
    );
    assert_eq!(
        state.apply(list.clone(), &a, NOW),
        Ok(certs::Applied::AlreadyCurrent)
    );
    assert_eq!(
        a.verify(&chain, NOW, &state),
        Err(ChainError::Revoked(village_serial))
    );
    // Other villages are untouched.
    assert!(a
        .verify(&pki.towns[1].villages[0].terminals[0].chain, NOW, &state)
        .is_ok());

    // An older list cannot roll the revocation back, nor can an equal number.
    let older = RevocationList::sign(
        pki.district.cert().serial(),
        pki.district.chain.clone(),
        &pki.district.key,
        0,
        NOW,
        vec![],
    )
    .unwrap();
    assert!(matches!(
        state.apply(older, &a, NOW),
        Err(certs::RevocationError::Rollback {
            current: 1,
            offered: 0
        })
    ));
    let same_number = RevocationList::sign(
        pki.district.cert().serial(),
        pki.district.chain.clone(),
        &pki.district.key,
        1,
        NOW,
        vec![],
    )
    .unwrap();
    assert!(matches!(
        state.apply(same_number, &a, NOW),
        Err(certs::RevocationError::Rollback { .. })
    ));
    assert_eq!(
        a.verify(&chain, NOW, &state),
        Err(ChainError::Revoked(village_serial))
    );

    // A newer list that lifts the revocation is accepted.
    let newer = RevocationList::sign(
        pki.district.cert().serial(),
        pki.district.chain.clone(),
        &pki.district.key,
        2,
        NOW,
        vec![],
    )
    .unwrap();
    state.apply(newer, &a, NOW).unwrap();
    assert!(a.verify(&chain, NOW, &state).is_ok());

    // The root revokes the district itself.
    let root_list = RevocationList::sign(
        pki.root.cert().serial(),
        vec![],
        &pki.root.key,
        1,
        NOW,
        vec![pki.district.cert().serial()],
    )
    .unwrap();
    state.apply(root_list, &a, NOW).unwrap();
    assert_eq!(
        a.verify(&chain, NOW, &state),
        Err(ChainError::Revoked(pki.district.cert().serial()))
    );
}

#[test]
fn revocation_lists_are_checked() {
    let pki = small();
    let a = anchor(&pki);
    let mut state = RevocationState::new();
    let district = &pki.district;
    // A district may not revoke its own issuer (the root) or itself: ignored.
    let overreach = RevocationList::sign(
        district.cert().serial(),
        district.chain.clone(),
        &district.key,
        1,
        NOW,
        vec![pki.root.cert().serial(), district.cert().serial()],
    )
    .unwrap();
    state.apply(overreach, &a, NOW).unwrap();
    assert!(a.verify(&terminal_chain(&pki), NOW, &state).is_ok());

    // A town cannot sign revocation lists.
    let town = &pki.towns[0].identity;
    let by_town = RevocationList::sign(
        town.cert().serial(),
        town.chain.clone(),
        &town.key,
        1,
        NOW,
        vec![],
    )
    .unwrap();
    assert_eq!(
        state.apply(by_town, &a, NOW),
        Err(certs::RevocationError::SignerTier(Tier::Town))
    );

    // Signed by the wrong key.
    let forged = RevocationList::sign(
        pki.root.cert().serial(),
        vec![],
        &district.key,
        5,
        NOW,
        vec![1],
    )
    .unwrap();
    assert_eq!(
        state.apply(forged, &a, NOW),
        Err(certs::RevocationError::BadSignature)
    );

    // From another root.
    let other = small();
    let foreign = RevocationList::sign(
        other.district.cert().serial(),
        other.district.chain.clone(),
        &other.district.key,
        9,
        NOW,
        vec![1],
    )
    .unwrap();
    assert!(matches!(
        state.apply(foreign, &a, NOW),
        Err(certs::RevocationError::Chain(_))
    ));

    // Chain of one signer presented under another's serial.
    let mismatch =
        RevocationList::sign(123, district.chain.clone(), &district.key, 9, NOW, vec![1]).unwrap();
    assert!(matches!(
        state.apply(mismatch, &a, NOW),
        Err(certs::RevocationError::SignerMismatch { .. })
    ));

    // Encoding round trip, and every single-byte change is refused.
    let list = RevocationList::sign(
        district.cert().serial(),
        district.chain.clone(),
        &district.key,
        7,
        NOW,
        vec![5, 3, 9],
    )
    .unwrap();
    let bytes = list.encode();
    assert_eq!(RevocationList::decode(&bytes).unwrap(), list);
    assert_eq!(RevocationList::from_pem(&list.to_pem()).unwrap(), list);
    for i in 0..bytes.len() {
        let mut m = bytes.clone();
        m[i] ^= 0x40;
        if let Ok(l) = RevocationList::decode(&m) {
            assert!(
                l.verify(&a, NOW, &RevocationState::new()).is_err(),
                "byte {i}"
            );
        }
    }
}

#[test]
fn bundle_round_trips_with_private_mode() {
    let pki = small();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("terminal.bundle");
    let t = &pki.towns[0].villages[0].terminals[0];
    let bundle = certs::Bundle::new(
        pki.root.cert().clone(),
        Identity {
            key: SecretKey::read_file(&{
                let p = dir.path().join("k");
                t.key.write_file(&p).unwrap();
                p
            })
            .unwrap(),
            chain: t.chain.clone(),
        },
        NOW,
    )
    .unwrap();
    bundle.write_file(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let back = certs::Bundle::read_file(&path, NOW).unwrap();
    assert_eq!(back.identity.chain, t.chain);
    assert_eq!(back.identity.key.public(), t.key.public());
    assert_eq!(back.anchor.root(), pki.root.cert());
    // A key that does not match the chain is refused.
    let wrong = certs::Bundle::new(
        pki.root.cert().clone(),
        Identity {
            key: SecretKey::generate(),
            chain: t.chain.clone(),
        },
        NOW,
    );
    assert!(matches!(wrong, Err(certs::BundleError::KeyMismatch)));
}

#[test]
fn generated_terminals_survive_the_revocation_of_their_village() {
    let pki = small();
    let a = anchor(&pki);
    let village = &pki.towns[0].villages[0];
    let terminal = &village.terminals[0];
    assert_eq!(terminal.chain.len(), 2, "district → terminal");
    let list = RevocationList::sign(
        pki.district.cert().serial(),
        pki.district.chain.clone(),
        &pki.district.key,
        1,
        NOW,
        vec![village.identity.cert().serial()],
    )
    .unwrap();
    let mut state = RevocationState::new();
    state.apply(list, &a, NOW).unwrap();
    assert_eq!(
        a.verify(&village.identity.chain, NOW, &state).err(),
        Some(ChainError::Revoked(village.identity.cert().serial()))
    );
    assert!(a.verify(&terminal.chain, NOW, &state).is_ok());
}
