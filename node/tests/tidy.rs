//! Tidy checks of `node/src` that keep the architecture honest (as
//! rust-analyzer's tidy tests do): every source file says what it is for in
//! a `//!` doc, and every `crate::` path points down the layers that
//! ARCHITECTURE.md states:
//!
//! adapters (`api`) → use cases (`service`) → domain modules (`cluster`,
//! `scheduler`, `executor`, `packages`, `policy`, `triggers`) → foundation (`error`,
//! `shared`, `wire`, `config`, `failpoint`, `workers`, `secrets`).
//!
//! Inside `service`, use cases call each other one way too, in the order of
//! [`USE_CASES`]: each names only those before it, and none names the whole
//! `Service` (only `service/mod.rs`, which wires them, does).
//!
//! Adapters reach the domain only through the service; a domain module uses
//! only itself and the foundation (so each can be built and tested alone);
//! the foundation uses nothing above it. `lib.rs` and `main.rs` wire
//! everything together and may use anything.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    Root,
    Adapter,
    UseCase,
    Domain,
    Foundation,
}

/// The layer of a top-level module of `node/src`.
fn layer(module: &str) -> Option<Layer> {
    Some(match module {
        "lib" | "main" => Layer::Root,
        "api" => Layer::Adapter,
        "service" => Layer::UseCase,
        "cluster" | "scheduler" | "executor" | "packages" | "policy" | "triggers" => Layer::Domain,
        "error" | "shared" | "wire" | "config" | "failpoint" | "workers" | "secrets" => Layer::Foundation,
        _ => return None,
    })
}

/// Whether code in `from` (a top-level module) may name `to`.
fn allowed(from: &str, to: &str) -> bool {
    let (Some(from_layer), Some(to_layer)) = (layer(from), layer(to)) else {
        return false;
    };
    from == to
        || match from_layer {
            Layer::Root => true,
            Layer::Adapter => matches!(to_layer, Layer::Adapter | Layer::UseCase | Layer::Foundation),
            Layer::UseCase => matches!(to_layer, Layer::Domain | Layer::Foundation),
            Layer::Domain => to_layer == Layer::Foundation,
            Layer::Foundation => to_layer == Layer::Foundation,
        }
}

/// The files of `service/`, lowest first: a use case may name only those
/// before it (through `super::` or `crate::service::`).
const USE_CASES: &[&str] = &[
    "node",
    "packages",
    "scheduling",
    "events",
    "invoke",
    "dispatch",
    "functions",
    "cluster",
    "auth",
    "logs",
    "limits",
];

/// Whether `word` occurs in `line` as a whole identifier.
fn names(line: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    line.match_indices(word).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// What is wrong with a use case's file (`service/<name>.rs`, not `mod.rs`).
fn use_case_violations(relative: &Path, source: &str) -> Vec<String> {
    let mut found = Vec::new();
    let name = relative.display();
    let own = relative.file_stem().unwrap_or_default().to_string_lossy().to_string();
    let Some(rank) = USE_CASES.iter().position(|u| *u == own) else {
        found.push(format!(
            "{name}: use case `{own}` has no place in tests/tidy.rs's USE_CASES"
        ));
        return found;
    };
    for (number, line) in source.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        if names(line, "Service") {
            found.push(format!(
                "{name}:{}: a use case takes the parts it needs, not the whole `Service`",
                number + 1
            ));
        }
        for prefix in ["super::", "crate::service::"] {
            let mut rest = line;
            while let Some(at) = rest.find(prefix) {
                rest = &rest[at + prefix.len()..];
                let to: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if let Some(other) = USE_CASES.iter().position(|u| *u == to) {
                    if other >= rank && to != own {
                        found.push(format!(
                            "{name}:{}: `{own}` may not use `{to}` (use cases point one way: see USE_CASES)",
                            number + 1
                        ));
                    }
                }
            }
        }
    }
    found
}

/// The top-level module a file of `node/src` belongs to (`api/rest/mod.rs` → `api`).
fn module_of(relative: &Path) -> String {
    let first = relative.components().next().expect("a path inside src");
    first.as_os_str().to_string_lossy().trim_end_matches(".rs").to_string()
}

/// What is wrong with one source file, `relative` to `node/src`.
fn violations(relative: &Path, source: &str) -> Vec<String> {
    let mut found = Vec::new();
    let name = relative.display();
    let first = source.lines().find(|line| !line.trim().is_empty()).unwrap_or("");
    if !first.starts_with("//!") {
        found.push(format!("{name}: no `//!` doc saying what the file is for"));
    }
    let from = module_of(relative);
    let parts: Vec<_> = relative.components().collect();
    if from == "service" && parts.len() == 2 && !relative.ends_with("mod.rs") {
        found.extend(use_case_violations(relative, source));
    }
    if layer(&from).is_none() {
        found.push(format!(
            "{name}: module `{from}` has no layer: add it to tests/tidy.rs and ARCHITECTURE.md"
        ));
        return found;
    }
    for (number, line) in source.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let to: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !to.is_empty() && !allowed(&from, &to) {
                found.push(format!(
                    "{name}:{}: `{from}` may not use `crate::{to}` (layers point one way: see tests/tidy.rs)",
                    number + 1
                ));
            }
        }
    }
    found
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read node/src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn layers_point_one_way_and_every_file_says_what_it_is_for() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(
        files.len() > 30,
        "found only {} files under {}",
        files.len(),
        src.display()
    );
    let mut found = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file).expect("read a source file");
        found.extend(violations(file.strip_prefix(&src).expect("inside src"), &source));
    }
    assert!(
        found.is_empty(),
        "{} tidy violations:\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn the_checker_catches_arrows_the_wrong_way_and_missing_docs() {
    let check = |path: &str, source: &str| violations(Path::new(path), source);
    // Fine: down the layers, and within one module.
    assert!(check(
        "api/grpc.rs",
        "//! doc\nuse crate::service::Service;\nuse crate::error::NodeError;\n"
    )
    .is_empty());
    assert!(check("service/invoke.rs", "//! doc\nuse crate::executor::Invocation;\n").is_empty());
    assert!(check(
        "scheduler/leader.rs",
        "//! doc\nuse crate::scheduler::quota;\nuse crate::shared::SandboxKey;\n"
    )
    .is_empty());
    // A domain module reaching up, or across to another domain module.
    assert_eq!(
        check("executor/mod.rs", "//! doc\nuse crate::service::NodeError;\n").len(),
        1
    );
    assert_eq!(
        check("scheduler/mod.rs", "//! doc\nlet key = crate::executor::Key;\n").len(),
        1
    );
    // An adapter reaching past the service; the foundation reaching up.
    assert_eq!(
        check("api/rest/handlers.rs", "//! doc\nx(crate::packages::MAX);\n").len(),
        1
    );
    assert_eq!(
        check("error.rs", "//! doc\nuse crate::scheduler::ThrottleReason;\n").len(),
        1
    );
    // The service reaching up to an adapter.
    assert_eq!(check("service/mod.rs", "//! doc\nuse crate::api::error;\n").len(), 1);
    // Use cases: down the order is fine; up it, or the whole service, is not.
    assert!(check("service/invoke.rs", "//! doc\nuse super::scheduling::Scheduling;\n").is_empty());
    assert_eq!(
        check("service/scheduling.rs", "//! doc\nuse super::invoke::Run;\n").len(),
        1
    );
    assert_eq!(
        check(
            "service/events.rs",
            "//! doc\nfn f(s: &crate::service::dispatch::Dispatcher) {}\n"
        )
        .len(),
        1
    );
    assert_eq!(check("service/logs.rs", "//! doc\nuse super::Service;\n").len(), 1);
    assert_eq!(check("service/quotas.rs", "//! doc\n").len(), 1);
    // No doc; an unknown module.
    assert_eq!(check("packages.rs", "use std::fs;\n").len(), 1);
    assert_eq!(check("triggerz/mod.rs", "//! doc\n").len(), 1);
}
