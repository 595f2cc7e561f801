//! Packages on this node: zip files stored by sha256, and their extracted
//! trees that sandboxes run from.
//!
//! A package is checked when it arrives (size, entry count, names, links,
//! declared and actual sizes), so a hostile zip is refused before anything
//! names it, and extraction again refuses to write outside its root.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use floe_raft_store::model::CodeRef;
use sha2::{Digest, Sha256};

use crate::error::NodeError;

/// Why a package cannot be stored or used here.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PackageError {
    /// A hostile or broken zip, or a malformed sha256.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("package {0} is not on this node")]
    NotHere(String),
    /// The disk failed us.
    #[error("{context}: {message}")]
    Storage { context: String, message: String },
}

impl From<PackageError> for NodeError {
    fn from(error: PackageError) -> Self {
        let message = error.to_string();
        match error {
            PackageError::Invalid(_) => NodeError::InvalidArgument(message),
            PackageError::TooLarge(_) => NodeError::PayloadTooLarge(message),
            PackageError::NotHere(_) => NodeError::NotFound(message),
            PackageError::Storage { .. } => NodeError::Internal(message),
        }
    }
}

/// Lambda's limits for a directly uploaded package.
pub const MAX_ZIPPED_BYTES: usize = 50 * 1024 * 1024;
pub const MAX_UNZIPPED_BYTES: u64 = 250 * 1024 * 1024;
pub const MAX_ENTRIES: usize = 20_000;

/// The package store under `<data_dir>/packages`.
pub struct Packages {
    blobs: PathBuf,
    code: PathBuf,
}

fn invalid(message: impl Into<String>) -> PackageError {
    PackageError::Invalid(message.into())
}

fn internal(context: &str, error: impl std::fmt::Display) -> PackageError {
    PackageError::Storage {
        context: context.to_string(),
        message: error.to_string(),
    }
}

fn check_sha256(sha256: &str) -> Result<(), PackageError> {
    floe_raft_store::validate::sha256(sha256).map_err(|e| invalid(e.to_string()))
}

impl Packages {
    pub fn open(data_dir: &Path) -> anyhow::Result<Packages> {
        let root = data_dir.join("packages");
        let packages = Packages {
            blobs: root.join("blobs"),
            code: root.join("code"),
        };
        fs::create_dir_all(&packages.blobs)?;
        fs::create_dir_all(&packages.code)?;
        Ok(packages)
    }

    fn blob_path(&self, sha256: &str) -> PathBuf {
        self.blobs.join(format!("{sha256}.zip"))
    }

    pub fn has(&self, sha256: &str) -> bool {
        floe_raft_store::validate::sha256(sha256).is_ok() && self.blob_path(sha256).exists()
    }

    pub fn get(&self, sha256: &str) -> Result<Vec<u8>, PackageError> {
        check_sha256(sha256)?;
        fs::read(self.blob_path(sha256)).map_err(|_| PackageError::NotHere(sha256.to_string()))
    }

    /// Checks a zip and stores it; returns its content address.
    pub fn put(&self, zip_file: &[u8]) -> Result<CodeRef, PackageError> {
        check_zip(zip_file)?;
        let sha256 = hex::encode(Sha256::digest(zip_file));
        let path = self.blob_path(&sha256);
        if !path.exists() {
            write_atomically(&path, zip_file).map_err(|e| internal("store package", e))?;
        }
        Ok(CodeRef {
            sha256,
            size: zip_file.len() as u64,
        })
    }

    /// The extracted tree of a stored package, extracting it on first use.
    pub fn extracted(&self, sha256: &str) -> Result<PathBuf, PackageError> {
        let target = self.code.join(sha256);
        if target.exists() {
            return Ok(target);
        }
        let zip_file = self.get(sha256)?;
        let staging = self.code.join(format!("{sha256}.{}.tmp", uuid::Uuid::new_v4()));
        extract(&zip_file, &staging)?;
        match fs::rename(&staging, &target) {
            Ok(()) => Ok(target),
            // Another invocation extracted it first.
            Err(_) if target.exists() => {
                let _ = fs::remove_dir_all(&staging);
                Ok(target)
            }
            Err(e) => Err(internal("install package", e)),
        }
    }
}

impl Packages {
    /// Deletes stored and extracted packages that nothing references and that
    /// are older than `grace` (a package is stored before the command naming
    /// it commits, so a young one may be about to be referenced). Returns how
    /// many packages it deleted.
    pub fn collect(&self, referenced: &HashSet<String>, grace: Duration) -> usize {
        let old_enough = |path: &Path| {
            fs::metadata(path)
                .and_then(|m| m.modified())
                .map(|modified| modified.elapsed().unwrap_or_default() >= grace)
                .unwrap_or(false)
        };
        let mut deleted = 0;
        for entry in fs::read_dir(&self.blobs).into_iter().flatten().flatten() {
            let path = entry.path();
            let Some(sha256) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".zip"))
            else {
                continue;
            };
            if !referenced.contains(sha256) && old_enough(&path) && fs::remove_file(&path).is_ok() {
                deleted += 1;
            }
        }
        for entry in fs::read_dir(&self.code).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // Extracted trees and leftovers of interrupted extractions (`<sha>.<uuid>.tmp`).
            let sha256 = name.split('.').next().unwrap_or_default();
            if !referenced.contains(sha256) && old_enough(&path) {
                make_writable(&path);
                let _ = fs::remove_dir_all(&path);
            }
        }
        deleted
    }
}

/// Extracted files are read-only; deleting the tree needs its directories writable.
fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            make_writable(&entry.path());
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let staging = path.with_extension(format!("{}.tmp", uuid::Uuid::new_v4()));
    let mut file = fs::File::create(&staging)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&staging, path)
}

/// Refuses what must never be stored: oversize, too many entries, unsafe
/// names, links, and archives whose declared sizes add up past the limit.
pub fn check_zip(zip_file: &[u8]) -> Result<(), PackageError> {
    if zip_file.len() > MAX_ZIPPED_BYTES {
        return Err(PackageError::TooLarge(format!(
            "the package is {} bytes: the limit is {MAX_ZIPPED_BYTES} bytes zipped",
            zip_file.len()
        )));
    }
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_file))
        .map_err(|e| invalid(format!("the package is not a valid zip file: {e}")))?;
    if archive.len() > MAX_ENTRIES {
        return Err(invalid(format!(
            "the package has {} entries: the limit is {MAX_ENTRIES}",
            archive.len()
        )));
    }
    let mut total: u64 = 0;
    for index in 0..archive.len() {
        let entry = archive
            .by_index(index)
            .map_err(|e| invalid(format!("the package is not a valid zip file: {e}")))?;
        let name = entry.name().to_string();
        if entry.enclosed_name().is_none() || name.starts_with('/') || name.contains('\\') {
            return Err(invalid(format!("the package has an unsafe path {name:?}")));
        }
        if entry.is_symlink() {
            return Err(invalid(format!(
                "the package has a symbolic link {name:?}: links are not allowed"
            )));
        }
        total = total.saturating_add(entry.size());
        if total > MAX_UNZIPPED_BYTES {
            return Err(invalid(format!(
                "the package unzips to more than {MAX_UNZIPPED_BYTES} bytes"
            )));
        }
    }
    Ok(())
}

/// Extracts into a new directory, counting real bytes (declared sizes can lie).
fn extract(zip_file: &[u8], into: &Path) -> Result<(), PackageError> {
    check_zip(zip_file)?;
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(zip_file)).map_err(|e| invalid(format!("bad zip: {e}")))?;
    fs::create_dir_all(into).map_err(|e| internal("create code dir", e))?;
    let mut budget = MAX_UNZIPPED_BYTES;
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(|e| invalid(format!("bad zip: {e}")))?;
        let relative = entry
            .enclosed_name()
            .ok_or_else(|| invalid(format!("unsafe path {:?}", entry.name())))?;
        let path = into.join(relative);
        if entry.is_dir() {
            fs::create_dir_all(&path).map_err(|e| internal("extract", e))?;
            continue;
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| internal("extract", e))?;
        }
        let mut out = fs::File::create(&path).map_err(|e| internal("extract", e))?;
        let written = std::io::copy(&mut (&mut entry).take(budget + 1), &mut out)
            .map_err(|e| invalid(format!("bad zip: {e}")))?;
        if written > budget {
            let _ = fs::remove_dir_all(into);
            return Err(invalid(format!(
                "the package unzips to more than {MAX_UNZIPPED_BYTES} bytes"
            )));
        }
        budget -= written;
        // Keep the executable bit (a `provided` bootstrap needs it); nothing else.
        let executable = entry.unix_mode().is_some_and(|mode| mode & 0o111 != 0);
        let mode = if executable { 0o555 } else { 0o444 };
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(|e| internal("extract", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut buffer = std::io::Cursor::new(Vec::new());
        let mut writer = zip::ZipWriter::new(&mut buffer);
        for (name, data) in entries {
            writer
                .start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            writer.write_all(data).unwrap();
        }
        writer.finish().unwrap();
        buffer.into_inner()
    }

    #[test]
    fn stores_by_sha256_and_extracts() {
        let dir = tempfile::tempdir().unwrap();
        let packages = Packages::open(dir.path()).unwrap();
        let zip = zip_of(&[("app.py", b"def handler(e, c): return 1\n"), ("lib/x.py", b"")]);
        let code = packages.put(&zip).unwrap();
        assert_eq!(code.sha256, hex::encode(Sha256::digest(&zip)));
        let tree = packages.extracted(&code.sha256).unwrap();
        assert!(tree.join("app.py").exists());
        assert!(tree.join("lib/x.py").exists());
    }

    #[test]
    fn collects_only_old_unreferenced_packages() {
        let dir = tempfile::tempdir().unwrap();
        let packages = Packages::open(dir.path()).unwrap();
        let kept = packages.put(&zip_of(&[("a.py", b"a")])).unwrap();
        let dropped = packages.put(&zip_of(&[("b.py", b"b")])).unwrap();
        packages.extracted(&kept.sha256).unwrap();
        packages.extracted(&dropped.sha256).unwrap();
        let referenced = HashSet::from([kept.sha256.clone()]);
        assert_eq!(
            packages.collect(&referenced, Duration::from_secs(3600)),
            0,
            "young packages are kept"
        );
        assert_eq!(packages.collect(&referenced, Duration::ZERO), 1);
        assert!(packages.has(&kept.sha256) && !packages.has(&dropped.sha256));
        assert!(packages.extracted(&kept.sha256).unwrap().join("a.py").exists());
        assert!(!dir.path().join("packages/code").join(&dropped.sha256).exists());
    }

    #[test]
    fn refuses_hostile_zips() {
        let check = |zip: Vec<u8>, text: &str| {
            let error = check_zip(&zip).unwrap_err().to_string();
            assert!(error.contains(text), "expected {text:?} in {error:?}");
        };
        check(zip_of(&[("../evil.py", b"x")]), "unsafe path");
        check(zip_of(&[("/etc/evil", b"x")]), "unsafe path");
        check(b"not a zip at all".to_vec(), "not a valid zip");
        // A symbolic link out of the root.
        let mut buffer = std::io::Cursor::new(Vec::new());
        let mut writer = zip::ZipWriter::new(&mut buffer);
        writer
            .add_symlink("link", "/etc/passwd", zip::write::SimpleFileOptions::default())
            .unwrap();
        writer.finish().unwrap();
        check(buffer.into_inner(), "symbolic link");
        // A bomb: 300 MB of zeros compresses to a few hundred KB.
        let mut buffer = std::io::Cursor::new(Vec::new());
        let mut writer = zip::ZipWriter::new(&mut buffer);
        writer
            .start_file(
                "zeros",
                zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated),
            )
            .unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..300 {
            writer.write_all(&chunk).unwrap();
        }
        writer.finish().unwrap();
        check(buffer.into_inner(), "unzips to more than");
    }
}
