//! `floe`'s command line: help and usage errors.

use std::process::Command;

#[test]
fn help_lists_the_commands() {
    let output = Command::new(env!("CARGO_BIN_EXE_floe")).arg("--help").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for command in ["function", "version", "alias", "invoke", "cluster"] {
        assert!(text.contains(command), "{command} missing:\n{text}");
    }
}

#[test]
fn bad_usage_exits_with_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(["function", "frobnicate"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let output = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(["alias", "create", "f", "a", "--version", "1", "--routing", "2=lots"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a number"));
}
