//! `floed`'s command line: help, and configuration errors refused before start.

use std::process::Command;

fn floed(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_floed"))
        .args(args)
        .output()
        .expect("run floed");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn help_explains_the_flags() {
    let (code, text) = floed(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--data-dir",
        "--listen",
        "--join",
        "--region",
        "--config",
        "--no-bootstrap",
        "--peer-listen",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help:\n{text}");
    }
}

#[test]
fn unknown_config_keys_and_bad_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("floed.toml");
    std::fs::write(&config, "regoin = \"eu\"\n").unwrap();
    let (code, text) = floed(&["--config", config.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("unknown field `regoin`"), "{text}");

    let (code, text) = floed(&["--region", "not a region", "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("invalid region"), "{text}");

    let (code, text) = floed(&["--config", "/nonexistent/floed.toml"]);
    assert_eq!(code, 2, "{text}");
}

/// A data dir or a `credentials` file that others can read stops floed at
/// start, before it opens anything, with a message that says how to fix it.
#[test]
fn secrets_open_to_other_users_stop_floed_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let args = [
        "--data-dir",
        dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--peer-listen",
        "127.0.0.1:0",
    ];
    let (code, text) = floed(&args);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("is open to other users (mode 0755)"), "{text}");
    assert!(text.contains("chmod 700"), "{text}");
    assert!(!dir.join("raft").exists(), "nothing was opened");

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let credentials = dir.join("credentials");
    std::fs::write(&credentials, "[default]\n").unwrap();
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, text) = floed(&args);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("other users can read it (mode 0644)"), "{text}");
    assert!(text.contains("chmod 600"), "{text}");
    assert!(!dir.join("raft").exists(), "nothing was opened");
}
