//! A received EBD package, taken in the one safe order: the tar read with
//! its bounds, the data file located by name, its detached signature
//! verified against the trust store over the data's exact bytes, and only
//! then the data parsed. Every kind of EBD goes through the same door,
//! connection checks included. The outcome carries the EBDResponse result
//! code the standard gives each failure.

use crate::ebd::{Ebd, EbdBody, ResultCode};
use crate::package::{Package, PackageError, MAX_PACKAGE_BYTES};
use crate::sm::{SignatureFile, SmKey, TrustStore};
use crate::xml::XmlError;

/// A package that verified and parsed.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The trusted sender's configured name.
    pub sender: String,
    pub cert_sn: String,
    pub ebd: Ebd,
    /// The audio named by the message, by file name, with whether the
    /// signed data gives its digest (and it matched): audio without one is
    /// not covered by the signature.
    pub audio: Option<AuxiliaryFile>,
}

#[derive(Debug, Clone)]
pub struct AuxiliaryFile {
    pub name: String,
    pub bytes: Vec<u8>,
    pub signed: bool,
}

/// A package refused, with the code to answer and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: ResultCode,
    pub reason: String,
    /// The EBD's id, when its file name gave one.
    pub ebd_id: Option<String>,
    /// The certificate its signature file named, when it could be read.
    pub cert_sn: Option<String>,
}

fn refused(code: ResultCode, reason: impl ToString) -> Refused {
    Refused {
        code,
        reason: reason.to_string(),
        ebd_id: None,
        cert_sn: None,
    }
}

/// The EBD id in a data file's name, `EBDB_<id>.xml`.
fn id_of(name: &str) -> Option<&str> {
    name.strip_prefix("EBDB_")?
        .strip_suffix(".xml")
        .filter(|id| !id.is_empty() && id.len() <= 64)
}

/// Takes a package: verify, then parse.
pub fn receive(bytes: &[u8], trust: &TrustStore) -> Result<Verified, Refused> {
    let package = Package::read(bytes, MAX_PACKAGE_BYTES)
        .map_err(|e| refused(ResultCode::ParseFailure, e))?;
    let (name, data) = package
        .data()
        .map_err(|e| refused(ResultCode::MissingContent, e))?;
    let ebd_id = id_of(name)
        .ok_or_else(|| {
            refused(
                ResultCode::ParseFailure,
                format!("package: {name:?} is not EBDB_<id>.xml"),
            )
        })?
        .to_string();
    let with_id = |mut r: Refused| {
        r.ebd_id = Some(ebd_id.clone());
        r
    };
    // Verification first: nothing of the data is read before it.
    let sig_bytes = package
        .signature(name)
        .map_err(|e: PackageError| with_id(refused(ResultCode::SignatureFailed, e)))?;
    let sig = SignatureFile::parse(sig_bytes)
        .map_err(|e| with_id(refused(ResultCode::SignatureFailed, e)))?;
    let sender = trust.verify(data, &ebd_id, &sig).map_err(|e| {
        let mut r = with_id(refused(ResultCode::SignatureFailed, e));
        r.cert_sn = Some(sig.cert_sn.clone());
        r
    })?;
    let ebd = Ebd::parse(data).map_err(|e| {
        let code = match e {
            XmlError::Missing(_) => ResultCode::MissingContent,
            _ => ResultCode::ParseFailure,
        };
        with_id(refused(code, e))
    })?;
    if ebd.id != ebd_id {
        return Err(with_id(refused(
            ResultCode::ParseFailure,
            format!(
                "EBD/EBDID {:?} is not the {ebd_id:?} of its file name",
                ebd.id
            ),
        )));
    }
    let audio = match &ebd.body {
        EbdBody::Ebm(m) => match m.audio.first() {
            Some(aux) => {
                let bytes = package.get(&aux.name).ok_or_else(|| {
                    with_id(refused(
                        ResultCode::MissingContent,
                        format!(
                            "EBD/EBM/MsgContent/Auxiliary: {:?} is not in the package",
                            aux.name
                        ),
                    ))
                })?;
                let signed = match &aux.digest {
                    Some(d) if d.eq_ignore_ascii_case(&crate::sm::sm3_hex(bytes)) => true,
                    Some(_) => {
                        return Err(with_id(refused(
                            ResultCode::SignatureFailed,
                            format!(
                                "{:?}: its SM3 digest does not match the signed message's",
                                aux.name
                            ),
                        )))
                    }
                    None => false,
                };
                Some(AuxiliaryFile {
                    name: aux.name.clone(),
                    bytes: bytes.to_vec(),
                    signed,
                })
            }
            None => None,
        },
        _ => None,
    };
    Ok(Verified {
        sender: sender.name.clone(),
        cert_sn: sender.cert_sn.clone(),
        ebd,
        audio,
    })
}

/// Packs `xml` (the EBD `ebd_id`) with its signature made by `key` at
/// `time`, and `files` (its audio) beside them.
pub fn signed_package(
    ebd_id: &str,
    xml: &str,
    key: &SmKey,
    time: &str,
    files: &[(&str, &[u8])],
) -> Vec<u8> {
    let name = format!("EBDB_{ebd_id}.xml");
    let signature = SignatureFile::sign(ebd_id, xml.as_bytes(), key, time);
    let mut package = Package {
        files: vec![
            (format!("EBDS_{name}"), signature.into_bytes()),
            (name, xml.as_bytes().to_vec()),
        ],
    };
    for (n, b) in files {
        package.files.push((n.to_string(), b.to_vec()));
    }
    package.write()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sm::Sender;

    /// A package of `xml` signed by `key` as EBD `id`, with extra files.
    pub fn package(id: &str, xml: &str, key: &SmKey, extra: &[(&str, &[u8])]) -> Vec<u8> {
        signed_package(id, xml, key, "2026-12-07 12:00:00", extra)
    }

    fn ebm_xml() -> String {
        crate::ebd::tests::EBM.to_string()
    }

    #[test]
    fn a_signed_message_is_verified_then_read() {
        let key = SmKey::generate("00A1");
        let trust = TrustStore::new(vec![
            Sender::new("城市平台", "00A1", &key.public_hex()).unwrap()
        ]);
        let v = receive(
            &package("01", &ebm_xml(), &key, &[("EBDR_01_1.mp3", b"mp3")]),
            &trust,
        )
        .unwrap();
        assert_eq!(v.sender, "城市平台");
        let a = v.audio.unwrap();
        assert_eq!((a.name.as_str(), a.signed), ("EBDR_01_1.mp3", false));
        // The audio's digest in the signed data binds it.
        let digest = crate::sm::sm3_hex(b"mp3");
        let xml = ebm_xml().replace(
            "<Size>1024</Size>",
            &format!("<Size>3</Size><Digest>{digest}</Digest>"),
        );
        let ok = receive(
            &package("01", &xml, &key, &[("EBDR_01_1.mp3", b"mp3")]),
            &trust,
        )
        .unwrap();
        assert!(ok.audio.unwrap().signed);
        let swapped = receive(
            &package("01", &xml, &key, &[("EBDR_01_1.mp3", b"mp4")]),
            &trust,
        )
        .unwrap_err();
        assert_eq!(swapped.code, ResultCode::SignatureFailed);
    }

    #[test]
    fn every_failure_has_its_code() {
        let key = SmKey::generate("00A1");
        let stranger = SmKey::generate("00A1");
        let trust = TrustStore::new(vec![
            Sender::new("城市平台", "00A1", &key.public_hex()).unwrap()
        ]);
        let code = |bytes: &[u8]| receive(bytes, &trust).unwrap_err().code;
        // Signed by a key that is not the certificate's.
        assert_eq!(
            code(&package("01", &ebm_xml(), &stranger, &[])),
            ResultCode::SignatureFailed
        );
        // A connection check is verified like anything else.
        let check = ebm_xml().replace("<EBDType>EBM", "<EBDType>ConnectionCheck");
        assert_eq!(
            code(&package("01", &check, &stranger, &[])),
            ResultCode::SignatureFailed
        );
        assert!(receive(&package("01", &check, &key, &[]), &trust).is_ok());
        // Signed, but not what the standard says an EBM is.
        let bad = ebm_xml().replace("<Severity>2", "<Severity>9");
        assert_eq!(
            code(&package("01", &bad, &key, &[])),
            ResultCode::ParseFailure
        );
        // The audio it names is missing.
        assert_eq!(
            code(&package("01", &ebm_xml(), &key, &[])),
            ResultCode::MissingContent
        );
        // Not a package at all, or no data file in it.
        assert_eq!(code(b"\x00garbage"), ResultCode::ParseFailure);
        assert_eq!(
            code(
                &Package {
                    files: vec![("x.xml".into(), vec![])]
                }
                .write()
            ),
            ResultCode::MissingContent
        );
        // The file name and the data disagree.
        assert_eq!(
            code(&package("02", &ebm_xml(), &key, &[("EBDR_01_1.mp3", b"x")])),
            ResultCode::ParseFailure
        );
        // No signature file.
        let unsigned = Package {
            files: vec![("EBDB_01.xml".into(), ebm_xml().into_bytes())],
        }
        .write();
        assert_eq!(code(&unsigned), ResultCode::SignatureFailed);
    }

    #[test]
    fn an_unverified_message_is_not_parsed() {
        // Signed by a stranger and malformed: refused for its signature,
        // because the data is never read.
        let key = SmKey::generate("00A1");
        let stranger = SmKey::generate("00A1");
        let trust = TrustStore::new(vec![
            Sender::new("城市平台", "00A1", &key.public_hex()).unwrap()
        ]);
        let evil = "<?xml version=\"1.0\"?><!DOCTYPE a [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><EBD>&x;</EBD>";
        let r = receive(&package("01", evil, &stranger, &[]), &trust).unwrap_err();
        assert_eq!(r.code, ResultCode::SignatureFailed);
        // Signed by the sender itself, the DTD is still refused.
        let r = receive(&package("01", evil, &key, &[]), &trust).unwrap_err();
        assert_eq!(r.code, ResultCode::ParseFailure);
        assert!(r.reason.contains("DTD"), "{}", r.reason);
    }
}
