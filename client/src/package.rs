//! Packaging code for upload: a directory is zipped on the fly, a zip file is
//! sent as it is. Zips are deterministic (sorted entries, fixed timestamps), so
//! the same tree always has the same sha256.

use std::io::Write;
use std::path::Path;

/// Reads `path` as a deployment package: a `.zip` file, or a directory to zip.
pub fn load(path: &Path) -> std::io::Result<Vec<u8>> {
    if path.is_dir() {
        zip_directory(path)
    } else {
        std::fs::read(path)
    }
}

/// Zips a directory tree, keeping executable bits. Symbolic links are refused.
pub fn zip_directory(root: &Path) -> std::io::Result<Vec<u8>> {
    let mut files = Vec::new();
    collect(root, root, &mut files)?;
    files.sort();
    let mut buffer = std::io::Cursor::new(Vec::new());
    let mut writer = zip::ZipWriter::new(&mut buffer);
    for relative in files {
        let full = root.join(&relative);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&full)?.permissions().mode();
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(if mode & 0o111 != 0 { 0o755 } else { 0o644 });
        writer
            .start_file(relative.as_str(), options)
            .map_err(std::io::Error::other)?;
        writer.write_all(&std::fs::read(&full)?)?;
    }
    writer.finish().map_err(std::io::Error::other)?;
    Ok(buffer.into_inner())
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            return Err(std::io::Error::other(format!(
                "{} is a symbolic link: packages cannot contain links",
                path.display()
            )));
        } else if kind.is_dir() {
            collect(root, &path, files)?;
        } else if kind.is_file() {
            let relative = path.strip_prefix(root).map_err(std::io::Error::other)?;
            files.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn zipping_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("lib")).unwrap();
        std::fs::write(dir.path().join("app.py"), "x = 1\n").unwrap();
        std::fs::write(dir.path().join("lib/b.py"), "y = 2\n").unwrap();
        let first = super::zip_directory(dir.path()).unwrap();
        let second = super::zip_directory(dir.path()).unwrap();
        assert_eq!(first, second);
        let archive = zip::ZipArchive::new(std::io::Cursor::new(first)).unwrap();
        let names: Vec<_> = archive.file_names().collect();
        assert!(names.contains(&"app.py") && names.contains(&"lib/b.py"), "{names:?}");
    }
}
