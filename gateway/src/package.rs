//! EBD packages (GY/T 384): a tar holding `EBDB_<id>.xml` (the data), its
//! detached signature `EBDS_EBDB_<id>.xml`, and resource files such as
//! `EBDR_<id>_1.mp3`. Read entry by entry with every bound checked before
//! bytes are kept: a name that is not a plain file name (a path, `..`, an
//! absolute name), a link or a device, too many entries or too many bytes
//! are refused, and nothing of a refused package is kept.

use std::io::Read;

/// Most entries in a package.
pub const MAX_ENTRIES: usize = 16;
/// Largest package (its audio included).
pub const MAX_PACKAGE_BYTES: usize = 64 << 20;
/// Longest entry name.
pub const MAX_NAME: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    #[error("package: {len} bytes; the limit is {max}")]
    TooLarge { len: usize, max: usize },
    #[error("package: more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error(
        "package entry {0:?}: not a plain file name (a path, `..` or an absolute name is refused)"
    )]
    BadName(String),
    #[error("package entry {0:?}: only regular files are taken (links and devices are refused)")]
    NotAFile(String),
    #[error("package entry {0:?}: appears twice")]
    Duplicate(String),
    #[error("package: not a tar archive: {0}")]
    Malformed(String),
    #[error("package: no EBDB_*.xml data file")]
    NoData,
    #[error("package: no signature file EBDS_{0}")]
    NoSignature(String),
}

/// A package's files, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Package {
    pub files: Vec<(String, Vec<u8>)>,
}

/// A plain file name: no separator, not `.` or `..`, printable, bounded.
fn plain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !name.chars().any(char::is_control)
}

impl Package {
    /// Reads a tar archive of at most `max` bytes.
    pub fn read(bytes: &[u8], max: usize) -> Result<Package, PackageError> {
        if bytes.len() > max {
            return Err(PackageError::TooLarge {
                len: bytes.len(),
                max,
            });
        }
        let mut archive = tar::Archive::new(bytes);
        let entries = archive
            .entries()
            .map_err(|e| PackageError::Malformed(e.to_string()))?;
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        for entry in entries {
            let mut entry = entry.map_err(|e| PackageError::Malformed(e.to_string()))?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            // "./name" as some tar tools write it is the name.
            let name = raw.strip_prefix("./").unwrap_or(&raw).to_string();
            if entry.header().entry_type().is_dir() && plain(name.trim_end_matches('/')) {
                continue;
            }
            if !plain(&name) {
                return Err(PackageError::BadName(raw));
            }
            if !entry.header().entry_type().is_file() {
                return Err(PackageError::NotAFile(name));
            }
            if files.len() >= MAX_ENTRIES {
                return Err(PackageError::TooManyEntries);
            }
            if files.iter().any(|(n, _)| *n == name) {
                return Err(PackageError::Duplicate(name));
            }
            let size = entry.size() as usize;
            if size > max {
                return Err(PackageError::TooLarge { len: size, max });
            }
            // The header's size is a claim: what is allocated is bounded by
            // what was received.
            let mut data = Vec::with_capacity(size.min(bytes.len()));
            entry
                .by_ref()
                .take((max as u64).saturating_add(1))
                .read_to_end(&mut data)
                .map_err(|e| PackageError::Malformed(e.to_string()))?;
            files.push((name, data));
        }
        Ok(Package { files })
    }

    /// The data file (`EBDB_*.xml`): its name and bytes.
    pub fn data(&self) -> Result<(&str, &[u8]), PackageError> {
        self.files
            .iter()
            .find(|(n, _)| n.starts_with("EBDB_") && n.ends_with(".xml"))
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .ok_or(PackageError::NoData)
    }

    /// The detached signature of the data file named `data`.
    pub fn signature(&self, data: &str) -> Result<&[u8], PackageError> {
        let name = format!("EBDS_{data}");
        self.get(&name)
            .ok_or_else(|| PackageError::NoSignature(data.to_string()))
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
    }

    /// Writes the package as a tar archive (the answers we send).
    pub fn write(&self) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in &self.files {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            // A name this side made: plain, and within the header's field.
            if builder
                .append_data(&mut header, name, data.as_slice())
                .is_err()
            {
                continue;
            }
        }
        builder.into_inner().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8], tar::EntryType)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data, kind) in entries {
            let mut h = tar::Header::new_gnu();
            // Written raw: the builder itself refuses `..`.
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_size(data.len() as u64);
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn a_package_round_trips() {
        let p = Package {
            files: vec![
                ("EBDB_1.xml".into(), b"<EBD/>".to_vec()),
                ("EBDS_EBDB_1.xml".into(), b"<Signature/>".to_vec()),
            ],
        };
        let back = Package::read(&p.write(), MAX_PACKAGE_BYTES).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.data().unwrap().0, "EBDB_1.xml");
        assert_eq!(back.signature("EBDB_1.xml").unwrap(), b"<Signature/>");
    }

    #[test]
    fn paths_links_and_sizes_are_refused() {
        let file = tar::EntryType::Regular;
        for name in ["../EBDB_1.xml", "/etc/passwd", "a/EBDB_1.xml", ".."] {
            let t = tar_of(&[(name, b"x", file)]);
            assert!(
                matches!(
                    Package::read(&t, MAX_PACKAGE_BYTES),
                    Err(PackageError::BadName(_))
                ),
                "{name}"
            );
        }
        let link = tar_of(&[("EBDB_1.xml", b"", tar::EntryType::Symlink)]);
        assert!(matches!(
            Package::read(&link, MAX_PACKAGE_BYTES),
            Err(PackageError::NotAFile(_))
        ));
        let twice = tar_of(&[("a.xml", b"1", file), ("a.xml", b"2", file)]);
        assert!(matches!(
            Package::read(&twice, MAX_PACKAGE_BYTES),
            Err(PackageError::Duplicate(_))
        ));
        let big = tar_of(&[("EBDR_1.mp3", &[0u8; 4096], file)]);
        assert!(matches!(
            Package::read(&big, 2048),
            Err(PackageError::TooLarge { .. })
        ));
        let many: Vec<(String, &[u8], tar::EntryType)> = (0..=MAX_ENTRIES)
            .map(|i| (format!("f{i}"), &b"x"[..], file))
            .collect();
        let refs: Vec<(&str, &[u8], tar::EntryType)> =
            many.iter().map(|(n, d, k)| (n.as_str(), *d, *k)).collect();
        assert_eq!(
            Package::read(&tar_of(&refs), MAX_PACKAGE_BYTES).unwrap_err(),
            PackageError::TooManyEntries
        );
        // Garbage, and a header whose checksum fails, are refused.
        assert!(matches!(
            Package::read(b"not a tar", MAX_PACKAGE_BYTES),
            Err(PackageError::Malformed(_))
        ));
        let mut corrupt = tar_of(&[("EBDB_1.xml", b"x", file)]);
        corrupt[148] ^= 0x55;
        assert!(matches!(
            Package::read(&corrupt, MAX_PACKAGE_BYTES),
            Err(PackageError::Malformed(_))
        ));
    }
}
