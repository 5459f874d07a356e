//! A sender's SM2 certificate as a GY/T 389 certificate authority issues
//! it: X.509 (PEM or DER) with an SM2 public key, signed SM2-with-SM3 by
//! the CA under the GM/T 0009 default identifier. Read so an operator
//! configures the file the CA handed out, not a hex key copied from it:
//! the serial number (GY/T's CertSN), the public key and the validity come
//! from the certificate, and the CA's signature over it is checked.

use std::time::Duration;

use sm2::dsa::signature::Verifier;
use sm2::dsa::{Signature, VerifyingKey};
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Decode, DecodePem, Encode};
use x509_cert::Certificate;

use crate::sm::{Sender, DEFAULT_DISTID};

/// Largest certificate file read.
pub const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// The SM2 curve (GM/T 0006), as a key's parameters or its algorithm.
const SM2_CURVE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.301");
const SM2_WITH_SM3: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.501");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("certificate: {len} bytes; the limit is {max}")]
    TooLarge { len: usize, max: usize },
    #[error("certificate: not an X.509 certificate in PEM or DER ({0})")]
    Unreadable(String),
    #[error("certificate: its key is not an SM2 key ({0})")]
    NotSm2(String),
    #[error("certificate {serial}: signed with {algorithm}, not SM2 with SM3")]
    Algorithm { serial: String, algorithm: String },
    #[error("certificate {serial}: issued by {issuer:?}, not by {ca:?}")]
    OtherIssuer {
        serial: String,
        issuer: String,
        ca: String,
    },
    #[error("certificate {serial}: the signature of {ca:?} does not verify")]
    Signature { serial: String, ca: String },
    #[error("certificate {serial}: valid from {from} to {until} (Unix seconds), not now ({now})")]
    NotValidNow {
        serial: String,
        from: u64,
        until: u64,
        now: u64,
    },
}

/// What the gateway takes from a certificate.
#[derive(Debug, Clone)]
pub struct SmCertificate {
    /// The serial number, upper-case hex without separators (as GY/T's
    /// CertSN names it).
    pub serial: String,
    pub subject: String,
    pub issuer: String,
    /// The SM2 public key, SEC1 uncompressed (04 ‖ x ‖ y).
    pub public_key: Vec<u8>,
    pub not_before_s: u64,
    pub not_after_s: u64,
    tbs_der: Vec<u8>,
    signature_algorithm: ObjectIdentifier,
    signature: Vec<u8>,
}

fn unix_s(t: x509_cert::time::Time) -> u64 {
    t.to_unix_duration().as_secs()
}

impl SmCertificate {
    /// Reads a certificate, PEM or DER, bounded; its key must be SM2.
    pub fn parse(bytes: &[u8]) -> Result<SmCertificate, CertError> {
        if bytes.len() > MAX_CERTIFICATE_BYTES {
            return Err(CertError::TooLarge {
                len: bytes.len(),
                max: MAX_CERTIFICATE_BYTES,
            });
        }
        let unreadable = |e: x509_cert::der::Error| CertError::Unreadable(e.to_string());
        let cert = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            Certificate::from_pem(bytes).map_err(unreadable)?
        } else {
            Certificate::from_der(bytes).map_err(unreadable)?
        };
        let tbs = cert.tbs_certificate();
        let serial = hex::encode_upper(tbs.serial_number().as_bytes())
            .trim_start_matches("00")
            .to_string();
        let spki = tbs.subject_public_key_info();
        let params = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        let sm2_key = spki.algorithm.oid == SM2_CURVE
            || (spki.algorithm.oid == ID_EC_PUBLIC_KEY && params == Some(SM2_CURVE));
        if !sm2_key {
            return Err(CertError::NotSm2(format!(
                "algorithm {}, parameters {}",
                spki.algorithm.oid,
                params.map_or("none".to_string(), |p| p.to_string())
            )));
        }
        let public_key = spki.subject_public_key.raw_bytes().to_vec();
        VerifyingKey::from_sec1_bytes(DEFAULT_DISTID, &public_key)
            .map_err(|_| CertError::NotSm2("not a point of the SM2 curve".into()))?;
        let validity = tbs.validity();
        Ok(SmCertificate {
            serial,
            subject: tbs.subject().to_string(),
            issuer: tbs.issuer().to_string(),
            public_key,
            not_before_s: unix_s(validity.not_before),
            not_after_s: unix_s(validity.not_after),
            tbs_der: tbs
                .to_der()
                .map_err(|e| CertError::Unreadable(e.to_string()))?,
            signature_algorithm: cert.signature_algorithm().oid,
            signature: cert.signature().raw_bytes().to_vec(),
        })
    }

    /// Checks that `ca` issued it: the issuer's name, the algorithm, the
    /// CA's SM2 signature over the certificate's body.
    pub fn verify_issued_by(&self, ca: &SmCertificate) -> Result<(), CertError> {
        if self.issuer != ca.subject {
            return Err(CertError::OtherIssuer {
                serial: self.serial.clone(),
                issuer: self.issuer.clone(),
                ca: ca.subject.clone(),
            });
        }
        if self.signature_algorithm != SM2_WITH_SM3 {
            return Err(CertError::Algorithm {
                serial: self.serial.clone(),
                algorithm: self.signature_algorithm.to_string(),
            });
        }
        let bad = || CertError::Signature {
            serial: self.serial.clone(),
            ca: ca.subject.clone(),
        };
        let key =
            VerifyingKey::from_sec1_bytes(DEFAULT_DISTID, &ca.public_key).map_err(|_| bad())?;
        let sig = Signature::from_der(&self.signature).map_err(|_| bad())?;
        key.verify(&self.tbs_der, &sig).map_err(|_| bad())
    }

    /// Checks that it is valid at `now` (since the Unix epoch).
    pub fn valid_at(&self, now: Duration) -> Result<(), CertError> {
        let now = now.as_secs();
        if now < self.not_before_s || now > self.not_after_s {
            return Err(CertError::NotValidNow {
                serial: self.serial.clone(),
                from: self.not_before_s,
                until: self.not_after_s,
                now,
            });
        }
        Ok(())
    }

    /// The trusted sender it makes, named `name`, known by `cert_sn` (its
    /// serial unless the upper platform names it otherwise).
    pub fn sender(&self, name: &str, cert_sn: &str) -> Sender {
        Sender::new(name, cert_sn, &hex::encode(&self.public_key))
            .expect("the key was checked when the certificate was read")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by tests/certs/make.sh with OpenSSL: an SM2 CA, the city's
    // certificate it issued, the same from another CA.
    const CA: &[u8] = include_bytes!("../tests/certs/ca.pem");
    const CITY: &[u8] = include_bytes!("../tests/certs/city.pem");
    const CITY_DER: &[u8] = include_bytes!("../tests/certs/city.der");
    const CITY_KEY: &str = include_str!("../tests/certs/city.key.hex");
    const ROGUE: &[u8] = include_bytes!("../tests/certs/rogue.pem");

    #[test]
    fn an_openssl_issued_sm2_certificate_is_read_and_its_ca_signature_verified() {
        let ca = SmCertificate::parse(CA).unwrap();
        let city = SmCertificate::parse(CITY).unwrap();
        assert_eq!(city.serial, "3601000001");
        assert!(
            city.subject.contains("南昌市应急广播平台"),
            "{}",
            city.subject
        );
        city.verify_issued_by(&ca).unwrap();
        // DER reads the same.
        let der = SmCertificate::parse(CITY_DER).unwrap();
        assert_eq!(
            (der.serial.as_str(), &der.public_key),
            (city.serial.as_str(), &city.public_key)
        );
        // The key in it is the city's: a signature by the city's private
        // key verifies with the sender it makes.
        let key = crate::SmKey::from_hex(&city.serial, CITY_KEY.trim()).unwrap();
        assert_eq!(key.public_hex(), hex::encode(&city.public_key));
        let data = b"<EBD/>";
        let file = crate::sm::SignatureFile::sign("1", data, &key, "");
        let sig = crate::sm::SignatureFile::parse(file.as_bytes()).unwrap();
        let trust = crate::TrustStore::new(vec![city.sender("市平台", &city.serial)]);
        assert_eq!(trust.verify(data, "1", &sig).unwrap().name, "市平台");
    }

    #[test]
    fn another_cas_certificate_a_tampered_one_and_an_expired_one_are_refused() {
        let ca = SmCertificate::parse(CA).unwrap();
        let rogue = SmCertificate::parse(ROGUE).unwrap();
        assert!(matches!(
            rogue.verify_issued_by(&ca),
            Err(CertError::OtherIssuer { .. })
        ));
        // Same issuer name, a changed body: the CA's signature fails.
        let mut tampered = SmCertificate::parse(CITY).unwrap();
        let at = tampered.tbs_der.len() - 40;
        tampered.tbs_der[at] ^= 1;
        assert!(matches!(
            tampered.verify_issued_by(&ca),
            Err(CertError::Signature { .. })
        ));
        let city = SmCertificate::parse(CITY).unwrap();
        city.valid_at(Duration::from_secs(city.not_before_s + 1))
            .unwrap();
        let late = Duration::from_secs(city.not_after_s + 1);
        let e = city.valid_at(late).unwrap_err().to_string();
        assert!(e.contains("3601000001") && e.contains("not now"), "{e}");
        assert!(city
            .valid_at(Duration::from_secs(city.not_before_s - 1))
            .is_err());
    }

    #[test]
    fn what_is_not_an_sm2_certificate_is_named() {
        assert!(matches!(
            SmCertificate::parse(b"not a certificate"),
            Err(CertError::Unreadable(_))
        ));
        assert!(matches!(
            SmCertificate::parse(&vec![b'-'; MAX_CERTIFICATE_BYTES + 1]),
            Err(CertError::TooLarge { .. })
        ));
        assert!(matches!(
            SmCertificate::parse(&CITY[..CITY.len() / 2]),
            Err(CertError::Unreadable(_))
        ));
        // A key on another curve: the city's DER with the curve's OID
        // changed (1.2.156.10197.1.301 → .302).
        let mut der = CITY_DER.to_vec();
        let sm2 = [0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x82, 0x2d];
        let at = der
            .windows(sm2.len())
            .position(|w| w == sm2)
            .expect("the SM2 curve's OID");
        der[at + 7] = 0x2e;
        assert!(matches!(
            SmCertificate::parse(&der),
            Err(CertError::NotSm2(_))
        ));
    }
}
