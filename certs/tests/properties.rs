//! Property tests: encodings round-trip, and no mutated certificate is ever
//! accepted as signed by its issuer.

use certs::pki::{DistrictPki, Layout};
use certs::{AreaCode, Certificate};
use proptest::prelude::*;

const NOW: i64 = 1_800_000_000;

fn pki() -> &'static DistrictPki {
    static PKI: std::sync::OnceLock<DistrictPki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        DistrictPki::generate(Layout::ONE_OF_EACH, (NOW - 10, NOW + 1000), NOW).unwrap()
    })
}

proptest! {
    #[test]
    fn area_codes_round_trip(v in 0u64..1_000_000_000_000) {
        if let Ok(a) = AreaCode::from_u64(v) {
            prop_assert_eq!(a.to_string().parse::<AreaCode>().unwrap(), a);
            prop_assert!(a.covers(a));
            prop_assert!(AreaCode::NATION.covers(a));
        }
    }

    #[test]
    fn certificate_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = Certificate::decode(&bytes);
        let _ = certs::RevocationList::decode(&bytes);
    }

    #[test]
    fn a_mutated_certificate_is_never_accepted(index in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let pki = pki();
        let village = &pki.towns[0].villages[0].identity;
        let terminal = pki.towns[0].villages[0].terminals[0].cert();
        let bytes = terminal.as_bytes();
        prop_assert_eq!(Certificate::decode(bytes).unwrap(), terminal.clone());
        let mut m = bytes.to_vec();
        let i = index.index(m.len());
        m[i] ^= flip;
        if let Ok(c) = Certificate::decode(&m) {
            prop_assert!(!c.signed_by(&village.key.public()));
        }
    }
}
