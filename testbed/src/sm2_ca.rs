//! A certificate authority as GY/T 389 has one, for the demo and the
//! tests: it issues SM2 certificates (X.509, SM2-with-SM3 under the GM/T
//! 0009 default identifier, the signature DER-encoded as OpenSSL writes
//! it) that the gateway reads with `gateway::cert`.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use gateway::SmKey;
use sm2::dsa::signature::{self, Keypair, Signer};
use sm2::dsa::{DerSignature, SigningKey, VerifyingKey};
use sm2::pkcs8::spki::{AlgorithmIdentifier, SignatureAlgorithmIdentifier};
use sm2::pkcs8::EncodePublicKey;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::der::asn1::AnyRef;
use x509_cert::der::{Decode, EncodePem};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};

/// SM2 signatures in DER, as X.509 carries them.
struct DerSigner(SigningKey);

impl Signer<DerSignature> for DerSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<DerSignature, signature::Error> {
        let sig: sm2::dsa::Signature = self.0.try_sign(msg)?;
        Ok(sig.to_der())
    }
}

impl Keypair for DerSigner {
    type VerifyingKey = VerifyingKey;
    fn verifying_key(&self) -> VerifyingKey {
        self.0.verifying_key().clone()
    }
}

impl SignatureAlgorithmIdentifier for DerSigner {
    type Params = AnyRef<'static>;
    const SIGNATURE_ALGORITHM_IDENTIFIER: AlgorithmIdentifier<Self::Params> =
        SigningKey::SIGNATURE_ALGORITHM_IDENTIFIER;
}

/// Names the subject and its issuer; no extensions.
struct Plain {
    subject: Name,
    issuer: Name,
}

impl BuilderProfile for Plain {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }
    fn get_subject(&self) -> Name {
        self.subject.clone()
    }
    fn build_extensions(
        &self,
        _spk: x509_cert::spki::SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: x509_cert::spki::SubjectPublicKeyInfoRef<'_>,
        _tbs: &x509_cert::TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<x509_cert::ext::Extension>> {
        Ok(Vec::new())
    }
}

/// A CA with its own SM2 key.
pub struct Ca {
    key: SmKey,
    name: String,
    /// Its own certificate, PEM.
    pub pem: String,
}

fn signing_key(key: &SmKey) -> anyhow::Result<SigningKey> {
    let secret = hex::decode(key.secret_hex())?;
    let secret =
        sm2::SecretKey::from_slice(&secret).map_err(|e| anyhow::anyhow!("the SM2 key: {e}"))?;
    SigningKey::new(gateway::sm::DEFAULT_DISTID, &secret)
        .map_err(|e| anyhow::anyhow!("the SM2 key: {e}"))
}

/// An SM2 certificate for `public` (SEC1) named `subject` (RFC 4514, e.g.
/// `CN=…`), issued by `issuer` with `issuer_key`, valid from `from` for
/// `valid`.
fn issue(
    subject: &str,
    public: &VerifyingKey,
    issuer: &str,
    issuer_key: &SmKey,
    serial: u64,
    from: SystemTime,
    valid: Duration,
) -> anyhow::Result<String> {
    let spki = SubjectPublicKeyInfoOwned::from_der(public.to_public_key_der()?.as_bytes())?;
    let profile = Plain {
        subject: Name::from_str(subject)?,
        issuer: Name::from_str(issuer)?,
    };
    let validity = Validity::new(Time::try_from(from)?, Time::try_from(from + valid)?);
    let builder = CertificateBuilder::new(profile, SerialNumber::from(serial), validity, spki)?;
    let cert = builder.build::<_, DerSignature>(&DerSigner(signing_key(issuer_key)?))?;
    Ok(cert.to_pem(x509_cert::der::pem::LineEnding::LF)?)
}

impl Ca {
    /// A fresh CA named `name` (`CN=…`), valid for ten years from an hour ago.
    pub fn new(name: &str) -> anyhow::Result<Ca> {
        let key = SmKey::generate("ca");
        let public = signing_key(&key)?.verifying_key().clone();
        let from = SystemTime::now() - Duration::from_secs(3600);
        let pem = issue(
            name,
            &public,
            name,
            &key,
            1,
            from,
            Duration::from_secs(10 * 365 * 86_400),
        )?;
        Ok(Ca {
            key,
            name: name.into(),
            pem,
        })
    }

    /// The certificate of `holder`'s key, named `subject`, with `serial`,
    /// valid from `from` for `valid`: PEM.
    pub fn certify(
        &self,
        holder: &SmKey,
        subject: &str,
        serial: u64,
        from: SystemTime,
        valid: Duration,
    ) -> anyhow::Result<String> {
        let public = signing_key(holder)?.verifying_key().clone();
        issue(subject, &public, &self.name, &self.key, serial, from, valid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_ca_issues_the_gateway_reads_and_verifies() {
        let ca = Ca::new("CN=EBS test CA").unwrap();
        let holder = SmKey::generate("x");
        let pem = ca
            .certify(
                &holder,
                "CN=city",
                0x3601000001,
                SystemTime::now(),
                Duration::from_secs(86_400),
            )
            .unwrap();
        let ca_cert = gateway::cert::SmCertificate::parse(ca.pem.as_bytes()).unwrap();
        let cert = gateway::cert::SmCertificate::parse(pem.as_bytes()).unwrap();
        assert_eq!(cert.serial, "3601000001");
        assert_eq!(hex::encode(&cert.public_key), holder.public_hex());
        cert.verify_issued_by(&ca_cert).unwrap();
        ca_cert.verify_issued_by(&ca_cert).unwrap();
        let other = Ca::new("CN=EBS test CA").unwrap();
        let other_cert = gateway::cert::SmCertificate::parse(other.pem.as_bytes()).unwrap();
        assert!(
            cert.verify_issued_by(&other_cert).is_err(),
            "same name, other key"
        );
    }
}
