//! SM2 signatures over SM3 digests (GY/T 389 / GD/J 081, GB/T 32918,
//! GB/T 32905): an EBD data file is signed byte for byte; the detached
//! signature file names the signing certificate's serial number, by which
//! the sender's public key is found in the configured trust store. The
//! signature file is the only thing read before the data is verified.

use base64::Engine;
use sm2::dsa::signature::{Signer, Verifier};
use sm2::dsa::{Signature, SigningKey, VerifyingKey};

use crate::xml::{self, XmlError};

/// The distinguishing identifier of GM/T 0009 when none is agreed.
pub const DEFAULT_DISTID: &str = "1234567812345678";
/// Largest signature file.
pub const MAX_SIGNATURE_FILE: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature file: {0}")]
    File(#[from] XmlError),
    #[error("signature file: it signs EBD {found}, not {expected}")]
    OtherEbd { found: String, expected: String },
    #[error("signature: algorithm {0:?} is not SM2 with SM3")]
    Algorithm(String),
    #[error("signature: no trusted sender holds certificate {0}")]
    UnknownCertificate(String),
    #[error("signature: the value is not a 64-byte SM2 signature (r, s) in base64")]
    BadValue,
    #[error("signature: does not verify with the key of certificate {0}")]
    Mismatch(String),
    #[error("signing: {0}")]
    Key(String),
}

/// What a signature file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFile {
    pub ebd_id: String,
    pub cert_sn: String,
    pub time: String,
    pub value: Vec<u8>,
}

impl SignatureFile {
    /// Reads a signature file (hardened XML; nothing else is read yet).
    pub fn parse(bytes: &[u8]) -> Result<SignatureFile, SignatureError> {
        if bytes.len() > MAX_SIGNATURE_FILE {
            return Err(XmlError::TooLarge {
                what: "signature file",
                len: bytes.len(),
                max: MAX_SIGNATURE_FILE,
            }
            .into());
        }
        let doc = xml::parse(bytes, "signature file")?;
        let root = doc.root_element();
        if root.tag_name().name() != "Signature" {
            return Err(xml::invalid("Signature", "the root element is not Signature").into());
        }
        let related = xml::child(root, "RelatedEBD")
            .ok_or_else(|| XmlError::Missing("Signature/RelatedEBD".into()))?;
        let ebd_id = xml::required(related, "EBDID", "Signature/RelatedEBD")?;
        let cert = xml::child(root, "SignatureCert")
            .ok_or_else(|| XmlError::Missing("Signature/SignatureCert".into()))?;
        let cert_sn = xml::required(cert, "CertSN", "Signature/SignatureCert")?;
        for (field, want) in [("DigestAlgorithm", "SM3"), ("SignatureAlgorithm", "SM2")] {
            if let Some(a) = xml::text(root, field) {
                if !a.eq_ignore_ascii_case(want) {
                    return Err(SignatureError::Algorithm(a));
                }
            }
        }
        let b64 = xml::required(root, "SignatureValue", "Signature")?;
        let compact: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
        let value = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| SignatureError::BadValue)?;
        Ok(SignatureFile {
            ebd_id,
            cert_sn,
            time: xml::text(root, "SignatureTime").unwrap_or_default(),
            value,
        })
    }

    /// The signature file for `data` (an EBD's bytes) made with `key`
    /// under certificate `cert_sn`.
    pub fn sign(ebd_id: &str, data: &[u8], key: &SmKey, time: &str) -> String {
        let sig = key.sign(data);
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Signature>\
             <Version>1</Version>\
             <RelatedEBD><EBDID>{}</EBDID></RelatedEBD>\
             <SignatureCert><CertType>01</CertType><CertSN>{}</CertSN></SignatureCert>\
             <SignatureTime>{}</SignatureTime>\
             <DigestAlgorithm>SM3</DigestAlgorithm>\
             <SignatureAlgorithm>SM2</SignatureAlgorithm>\
             <SignatureValue>{}</SignatureValue></Signature>\n",
            xml::escape(ebd_id),
            xml::escape(&key.cert_sn),
            xml::escape(time),
            base64::engine::general_purpose::STANDARD.encode(sig)
        )
    }
}

/// A trusted sender: who it is and the public key of its certificate.
#[derive(Debug, Clone)]
pub struct Sender {
    pub name: String,
    pub cert_sn: String,
    key: VerifyingKey,
}

impl Sender {
    /// A sender from its SM2 public key, SEC1-encoded (hex, `04` ‖ x ‖ y).
    pub fn new(name: &str, cert_sn: &str, public_key_hex: &str) -> Result<Sender, SignatureError> {
        let bytes = hex::decode(public_key_hex.trim())
            .map_err(|_| SignatureError::Key("public key: not hex".into()))?;
        let key = VerifyingKey::from_sec1_bytes(DEFAULT_DISTID, &bytes)
            .map_err(|_| SignatureError::Key("public key: not an SM2 point".into()))?;
        Ok(Sender {
            name: name.into(),
            cert_sn: cert_sn.into(),
            key,
        })
    }
}

/// The senders whose signatures are trusted.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    senders: Vec<Sender>,
}

impl TrustStore {
    pub fn new(senders: Vec<Sender>) -> Self {
        TrustStore { senders }
    }

    /// Verifies that `sig` signs `data` (the EBD named `ebd_id`) with the
    /// key of a trusted sender; that sender.
    pub fn verify(
        &self,
        data: &[u8],
        ebd_id_of_name: &str,
        sig: &SignatureFile,
    ) -> Result<&Sender, SignatureError> {
        if sig.ebd_id != ebd_id_of_name {
            return Err(SignatureError::OtherEbd {
                found: sig.ebd_id.clone(),
                expected: ebd_id_of_name.into(),
            });
        }
        let sender = self
            .senders
            .iter()
            .find(|s| s.cert_sn == sig.cert_sn)
            .ok_or_else(|| SignatureError::UnknownCertificate(sig.cert_sn.clone()))?;
        let bytes: [u8; 64] = sig
            .value
            .as_slice()
            .try_into()
            .map_err(|_| SignatureError::BadValue)?;
        let signature =
            Signature::from_bytes(&bytes.into()).map_err(|_| SignatureError::BadValue)?;
        sender
            .key
            .verify(data, &signature)
            .map_err(|_| SignatureError::Mismatch(sig.cert_sn.clone()))?;
        Ok(sender)
    }
}

/// This platform's SM2 key for what it sends back, and its certificate's
/// serial number.
pub struct SmKey {
    pub cert_sn: String,
    key: SigningKey,
}

impl SmKey {
    /// From the 32-byte private scalar (hex).
    pub fn from_hex(cert_sn: &str, secret_hex: &str) -> Result<SmKey, SignatureError> {
        let bytes = hex::decode(secret_hex.trim())
            .map_err(|_| SignatureError::Key("private key: not hex".into()))?;
        let secret = sm2::SecretKey::from_slice(&bytes)
            .map_err(|_| SignatureError::Key("private key: not an SM2 scalar".into()))?;
        let key = SigningKey::new(DEFAULT_DISTID, &secret)
            .map_err(|_| SignatureError::Key("private key: refused".into()))?;
        Ok(SmKey {
            cert_sn: cert_sn.into(),
            key,
        })
    }

    /// A fresh key (tests, and `platform` tooling that makes one).
    pub fn generate(cert_sn: &str) -> SmKey {
        loop {
            let mut bytes = [0u8; 32];
            fill_random(&mut bytes);
            if let Ok(k) = SmKey::from_hex(cert_sn, &hex::encode(bytes)) {
                return k;
            }
        }
    }

    /// The private scalar, hex (what the key file holds).
    pub fn secret_hex(&self) -> String {
        hex::encode(self.key.as_nonzero_scalar().to_bytes())
    }

    /// The public key, SEC1 uncompressed, hex.
    pub fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_sec1_bytes())
    }

    /// 64 bytes: r ‖ s.
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        let s: Signature = self.key.sign(data);
        s.to_bytes().to_vec()
    }
}

fn fill_random(out: &mut [u8]) {
    use std::io::Read;
    // The OS's generator; a machine without it cannot sign anything.
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(out);
    }
}

/// SM3 of `data`, hex (GB/T 32905).
pub fn sm3_hex(data: &[u8]) -> String {
    use sm3::Digest;
    hex::encode(sm3::Sm3::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GB/T 32905-2016 Annex A.
    #[test]
    fn sm3_matches_the_standard() {
        assert_eq!(
            sm3_hex(b"abc"),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        assert_eq!(
            sm3_hex(&b"abcd".repeat(16)),
            "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
        );
    }

    /// GM/T 0003.5-2012 Annex C: a signature on the recommended curve,
    /// identifier 1234567812345678, message "message digest".
    #[test]
    fn sm2_verifies_the_standards_example() {
        let public = "04\
            09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020\
            CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13";
        let sig = hex::decode(
            "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3\
             B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA",
        )
        .unwrap();
        let store = TrustStore::new(vec![Sender::new("standard", "1", public).unwrap()]);
        let file = SignatureFile {
            ebd_id: "x".into(),
            cert_sn: "1".into(),
            time: String::new(),
            value: sig,
        };
        store.verify(b"message digest", "x", &file).unwrap();
        assert!(store.verify(b"message digesT", "x", &file).is_err());
        // The private key of the example gives the same public key.
        let k = SmKey::from_hex(
            "1",
            "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8",
        )
        .unwrap();
        assert_eq!(k.public_hex().to_uppercase(), public.to_uppercase());
    }

    #[test]
    fn a_signature_file_round_trips_and_binds_its_data() {
        let key = SmKey::generate("00A1");
        let data = b"<EBD><EBDID>1</EBDID></EBD>";
        let file = SignatureFile::sign("1", data, &key, "2026-12-07 12:00:00");
        let parsed = SignatureFile::parse(file.as_bytes()).unwrap();
        assert_eq!(
            (parsed.ebd_id.as_str(), parsed.cert_sn.as_str()),
            ("1", "00A1")
        );
        let store = TrustStore::new(vec![Sender::new("city", "00A1", &key.public_hex()).unwrap()]);
        assert_eq!(store.verify(data, "1", &parsed).unwrap().name, "city");
        let mut tampered = data.to_vec();
        tampered[10] ^= 1;
        assert!(matches!(
            store.verify(&tampered, "1", &parsed),
            Err(SignatureError::Mismatch(_))
        ));
        assert!(matches!(
            store.verify(data, "2", &parsed),
            Err(SignatureError::OtherEbd { .. })
        ));
        let other = TrustStore::new(vec![Sender::new("x", "FFFF", &key.public_hex()).unwrap()]);
        assert!(matches!(
            other.verify(data, "1", &parsed),
            Err(SignatureError::UnknownCertificate(_))
        ));
    }
}
