//! An uploaded audio file, written to disk as it arrives (never held in
//! memory, bounded in size) and held there while it is ingested; removed
//! when dropped.

use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Upload {
    path: PathBuf,
    len: u64,
    writer: Option<tokio::fs::File>,
}

/// An upload went over its limit.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("too large: the limit is {limit_mb} MB")]
    TooLarge { limit_mb: u64 },
    #[error("writing the upload: {0}")]
    Io(#[from] std::io::Error),
}

impl Upload {
    /// A new, empty private file for an upload named `file_name`.
    pub fn create(file_name: &str) -> std::io::Result<Self> {
        let ext = Path::new(file_name)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("bin");
        Self::write(&[], ext)
    }

    /// Appends `chunk`, refusing to grow past `limit` bytes.
    pub async fn append(&mut self, chunk: &[u8], limit: u64) -> Result<(), UploadError> {
        use tokio::io::AsyncWriteExt;
        if self.len + chunk.len() as u64 > limit {
            return Err(UploadError::TooLarge {
                limit_mb: limit / (1024 * 1024),
            });
        }
        if self.writer.is_none() {
            let f = tokio::fs::OpenOptions::new()
                .append(true)
                .open(&self.path)
                .await?;
            self.writer = Some(f);
        }
        if let Some(f) = self.writer.as_mut() {
            f.write_all(chunk).await?;
        }
        self.len += chunk.len() as u64;
        Ok(())
    }

    /// Writes out what is buffered; the file is complete for a reader.
    pub async fn finish(&mut self) -> Result<(), UploadError> {
        use tokio::io::AsyncWriteExt;
        if let Some(mut f) = self.writer.take() {
            f.flush().await?;
        }
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

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
        let mut upload = Upload {
            path,
            len: 0,
            writer: None,
        };
        let mut f = options.open(&upload.path)?;
        f.write_all(data)?;
        upload.len = data.len() as u64;
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
