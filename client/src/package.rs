//! Packaging code for upload: a directory is zipped on the fly, a zip file is
//! sent as it is. Zips are deterministic (sorted entries, fixed timestamps), so
//! the same tree always has the same sha256.

use std::io::Write;
use std::path::Path;

/// Reads `path` as a deployment package: a directory to zip, a zip file as
/// it is, or any other single file (inline code, e.g. `app.py`) zipped alone.
pub fn load(path: &Path) -> std::io::Result<Vec<u8>> {
    if path.is_dir() {
        return zip_directory(path);
    }
    let bytes = std::fs::read(path)?;
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return Ok(bytes);
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| std::io::Error::other(format!("{} has no usable file name", path.display())))?;
    zip_files(&[(name.to_string(), bytes, is_executable(path)?)])
}

fn is_executable(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o111 != 0)
}

/// Zips `(name, contents, executable)` entries in the order given.
fn zip_files(files: &[(String, Vec<u8>, bool)]) -> std::io::Result<Vec<u8>> {
    let mut buffer = std::io::Cursor::new(Vec::new());
    let mut writer = zip::ZipWriter::new(&mut buffer);
    for (name, contents, executable) in files {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(if *executable { 0o755 } else { 0o644 });
        writer
            .start_file(name.as_str(), options)
            .map_err(std::io::Error::other)?;
        writer.write_all(contents)?;
    }
    writer.finish().map_err(std::io::Error::other)?;
    Ok(buffer.into_inner())
}

/// Zips a directory tree, keeping executable bits. Symbolic links are refused.
pub fn zip_directory(root: &Path) -> std::io::Result<Vec<u8>> {
    let mut names = Vec::new();
    collect(root, root, &mut names)?;
    names.sort();
    let files = names
        .into_iter()
        .map(|name| {
            let full = root.join(&name);
            Ok((name, std::fs::read(&full)?, is_executable(&full)?))
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    zip_files(&files)
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

    #[test]
    fn a_single_file_is_inline_code_and_a_zip_stays_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.py");
        std::fs::write(&file, "def handler(e, c):\n    return 1\n").unwrap();
        let zipped = super::load(&file).unwrap();
        let archive = zip::ZipArchive::new(std::io::Cursor::new(zipped.clone())).unwrap();
        assert_eq!(archive.file_names().collect::<Vec<_>>(), vec!["app.py"]);
        let zip_path = dir.path().join("code.zip");
        std::fs::write(&zip_path, &zipped).unwrap();
        assert_eq!(super::load(&zip_path).unwrap(), zipped);
    }
}
