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
