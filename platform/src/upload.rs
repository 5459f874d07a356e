//! An uploaded audio file, held on disk while it is ingested (ingest
//! streams from a file, so a long upload never sits in memory as PCM) and
//! removed when dropped.

use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Upload {
    path: PathBuf,
}

impl Upload {
    /// Writes `data` to a new private file in the system's temporary
    /// folder. `extension` (from the uploaded file's name) tells the
    /// decoder the format; anything but a short alphanumeric one is `bin`.
    pub fn write(data: &[u8], extension: &str) -> std::io::Result<Self> {
        use rand::RngCore;
        let ext = if !extension.is_empty()
            && extension.len() <= 8
            && extension.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            extension.to_ascii_lowercase()
        } else {
            "bin".into()
        };
        let name = format!("ebs-upload-{:016x}.{ext}", rand::rngs::OsRng.next_u64());
        let path = std::env::temp_dir().join(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let upload = Upload { path };
        let mut f = options.open(&upload.path)?;
        f.write_all(data)?;
        Ok(upload)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_is_private_named_safely_and_removed() {
        let u = Upload::write(b"RIFF", "WAV").unwrap();
        let path = u.path().to_path_buf();
        assert_eq!(path.extension().unwrap(), "wav");
        assert_eq!(std::fs::read(&path).unwrap(), b"RIFF");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        drop(u);
        assert!(!path.exists());
        let odd = Upload::write(b"x", "../../etc").unwrap();
        assert_eq!(odd.path().extension().unwrap(), "bin");
    }
}
