//! Secrets at rest. The data dir holds what lets anyone act as the cluster
//! (the Raft store with every access key's digest, `credentials`, and keys
//! and tokens): it is the node's user's alone, and every secret file in it
//! is born private — never a moment readable by others, never half written.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context};

/// Permission bits for anyone but the owner.
const OTHERS: u32 = 0o077;

/// Creates the data dir (mode 0700) if it is missing; refuses one that
/// other users can read, write or enter.
pub fn open_data_dir(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .with_context(|| format!("create data dir {}", path.display()))?;
    }
    let mode = fs::metadata(path)
        .with_context(|| format!("read data dir {}", path.display()))?
        .permissions()
        .mode();
    if mode & OTHERS != 0 {
        bail!(
            "data dir {0} is open to other users (mode {1:04o}), and it holds the cluster's keys: \
             make it the node's own with `chmod 700 {0}`",
            path.display(),
            mode & 0o7777
        );
    }
    Ok(())
}

/// Refuses a secret file that other users can read or write (it is fine if
/// it does not exist).
pub fn check_private_file(path: &Path) -> anyhow::Result<()> {
    let mode = match fs::metadata(path) {
        Ok(metadata) => metadata.permissions().mode(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    if mode & OTHERS != 0 {
        bail!(
            "{0} holds a secret but other users can read it (mode {1:04o}): \
             run `chmod 600 {0}`, and replace the secret if others may have read it",
            path.display(),
            mode & 0o7777
        );
    }
    Ok(())
}

/// Writes a secret file whole or not at all, mode 0600 from its first byte:
/// a fresh staging file (`create_new`, so nothing left behind or planted
/// there is reused), synced, then renamed over `path`.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut staging = path.as_os_str().to_owned();
    staging.push(".tmp");
    let staging = Path::new(&staging);
    match fs::remove_file(staging) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", staging.display())),
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(staging)
        .with_context(|| format!("create {}", staging.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(staging, path).with_context(|| format!("rename {} to {}", staging.display(), path.display()))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_data_dir_is_the_owners_alone_and_an_open_one_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        open_data_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        open_data_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let error = open_data_dir(&dir).unwrap_err().to_string();
        assert!(error.contains("chmod 700"), "{error}");
    }

    #[test]
    fn secrets_are_written_private_and_an_open_one_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("credentials");
        check_private_file(&path).unwrap();
        // A staging file left behind (or planted, readable by all) is not reused.
        fs::write(root.path().join("credentials.tmp"), "old").unwrap();
        fs::set_permissions(root.path().join("credentials.tmp"), fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"secret").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"secret");
        assert_eq!(mode(&path), 0o600);
        assert!(!root.path().join("credentials.tmp").exists());
        check_private_file(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let error = check_private_file(&path).unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");
    }
}
