//! Table-driven tests of apply: every command, and each refusal.

use std::collections::BTreeMap;

use super::*;
use crate::command::{ApplyError, Command, Response};
use crate::model::{AliasRouting, CodeRef, FunctionConfig};

type Table = BTreeMap<Vec<u8>, Vec<u8>>;

fn sha(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn config() -> FunctionConfig {
    FunctionConfig {
        runtime: "python3.11".into(),
        handler: "app.handler".into(),
        memory_mb: 128,
        timeout_s: 3,
        environment: BTreeMap::new(),
        description: String::new(),
    }
}

fn create(name: &str) -> Command {
    Command::CreateFunction {
        name: name.into(),
        config: config(),
        code: CodeRef {
            sha256: sha(1),
            size: 10,
        },
        revision_id: "r1".into(),
        now_ms: 1000,
        publish: false,
    }
}

fn update_code(name: &str, code: u8, revision: &str) -> Command {
    Command::UpdateFunction {
        name: name.into(),
        config: None,
        code: Some(CodeRef {
            sha256: sha(code),
            size: 10,
        }),
        expected_revision_id: None,
        revision_id: revision.into(),
        now_ms: 2000,
        publish: false,
    }
}

fn publish(name: &str) -> Command {
    Command::PublishVersion {
        name: name.into(),
        description: String::new(),
        expected_revision_id: None,
        now_ms: 3000,
        expected_code_sha256: None,
    }
}

fn alias(function: &str, name: &str, version: &str, routing: Option<AliasRouting>) -> Command {
    Command::CreateAlias {
        function: function.into(),
        name: name.into(),
        version: version.into(),
        routing,
        description: String::new(),
        revision_id: "a1".into(),
    }
}

/// What applying a command must produce.
#[derive(Debug)]
enum Expect {
    /// Accepted; the closure checks the response.
    Ok(fn(&Response) -> bool),
    /// Refused with an error whose debug form contains this text.
    Refused(&'static str),
}

/// Applies `setup` (each must succeed), then `command`, and checks the outcome.
/// A refusal must leave the table unchanged.
fn check(setup: &[Command], command: Command, expect: Expect) {
    let mut table = Table::new();
    for step in setup {
        let (result, writes) = apply(&table, step).expect("storage");
        assert!(result.is_ok(), "setup step {step:?} failed: {result:?}");
        commit(&mut table, writes);
    }
    let before = table.clone();
    let (result, writes) = apply(&table, &command).expect("storage");
    match (&result, expect) {
        (Ok(response), Expect::Ok(accept)) => {
            assert!(accept(response), "unexpected response {response:?}")
        }
        (Err(error), Expect::Refused(text)) => {
            assert!(
                format!("{error:?}").contains(text),
                "expected refusal {text:?}, got {error:?}"
            );
            assert!(writes.is_empty(), "a refusal must not write");
        }
        (result, expect) => panic!("{command:?}: expected {expect:?}, got {result:?}"),
    }
    commit(&mut table, writes);
    if result.is_err() {
        assert_eq!(table, before);
    }
}

fn commit(table: &mut Table, writes: Writes) {
    for (key, value) in writes {
        match value {
            Some(value) => table.insert(key, value),
            None => table.remove(&key),
        };
    }
}

fn is_f(response: &Response) -> bool {
    matches!(response, Response::Function(f) if f.name == "f")
}

#[test]
fn create_function() {
    check(&[], create("f"), Expect::Ok(is_f));
    check(&[create("f")], create("f"), Expect::Refused("FunctionExists"));
    check(&[], create("bad name"), Expect::Refused("invalid function name"));
    check(&[], create(&"x".repeat(65)), Expect::Refused("invalid function name"));
    let with = |change: fn(&mut FunctionConfig)| {
        let mut config = config();
        change(&mut config);
        Command::CreateFunction {
            name: "f".into(),
            config,
            code: CodeRef {
                sha256: sha(1),
                size: 1,
            },
            revision_id: "r".into(),
            now_ms: 0,
            publish: false,
        }
    };
    check(
        &[],
        with(|c| c.memory_mb = 127),
        Expect::Refused("memory 127 MB is out of range"),
    );
    check(&[], with(|c| c.memory_mb = 10_241), Expect::Refused("out of range"));
    check(&[], with(|c| c.memory_mb = 10_240), Expect::Ok(is_f));
    check(&[], with(|c| c.timeout_s = 0), Expect::Refused("timeout 0 s"));
    check(&[], with(|c| c.timeout_s = 901), Expect::Refused("timeout 901 s"));
    check(
        &[],
        with(|c| c.runtime = "cobol".into()),
        Expect::Refused("unknown runtime"),
    );
    check(
        &[],
        with(|c| c.handler = "nodot".into()),
        Expect::Refused("module.function"),
    );
    check(
        &[],
        with(|c| c.handler = String::new()),
        Expect::Refused("invalid handler"),
    );
    check(
        &[],
        with(|c| {
            c.environment.insert("1BAD".into(), "v".into());
        }),
        Expect::Refused("invalid environment variable name"),
    );
    check(
        &[],
        with(|c| {
            c.environment.insert("A".into(), "v".into());
        }),
        Expect::Refused("invalid environment variable name"),
    );
    check(
        &[],
        with(|c| {
            c.environment.insert("BIG".into(), "v".repeat(4096));
        }),
        Expect::Refused("the limit is 4096"),
    );
    check(
        &[],
        with(|c| c.description = "d".repeat(257)),
        Expect::Refused("description"),
    );
    check(
        &[],
        Command::CreateFunction {
            name: "f".into(),
            config: config(),
            code: CodeRef {
                sha256: "nothex".into(),
                size: 1,
            },
            revision_id: "r".into(),
            now_ms: 0,
            publish: false,
        },
        Expect::Refused("sha256"),
    );
}

#[test]
fn update_function() {
    check(
        &[create("f")],
        update_code("f", 2, "r2"),
        Expect::Ok(
            |r| matches!(r, Response::Function(f) if f.revision_id == "r2" && f.code.sha256 == sha(2) && f.last_modified_ms == 2000),
        ),
    );
    check(&[], update_code("f", 2, "r2"), Expect::Refused("FunctionNotFound"));
    let conditional = |expected: &str| Command::UpdateFunction {
        name: "f".into(),
        config: Some(FunctionConfig {
            memory_mb: 256,
            ..config()
        }),
        code: None,
        expected_revision_id: Some(expected.into()),
        revision_id: "r2".into(),
        now_ms: 1,
        publish: false,
    };
    check(
        &[create("f")],
        conditional("r1"),
        Expect::Ok(|r| matches!(r, Response::Function(f) if f.config.memory_mb == 256)),
    );
    check(
        &[create("f")],
        conditional("stale"),
        Expect::Refused("RevisionMismatch"),
    );
    let bad = Command::UpdateFunction {
        name: "f".into(),
        config: Some(FunctionConfig {
            timeout_s: 1000,
            ..config()
        }),
        code: None,
        expected_revision_id: None,
        revision_id: "r2".into(),
        now_ms: 1,
        publish: false,
    };
    check(&[create("f")], bad, Expect::Refused("timeout 1000 s"));
}

#[test]
fn delete_function_removes_versions_and_aliases() {
    let mut table = Table::new();
    for command in [
        create("f"),
        create("f2"),
        publish("f"),
        alias("f", "live", "1", None),
        publish("f2"),
    ] {
        let (result, writes) = apply(&table, &command).unwrap();
        assert!(result.is_ok());
        commit(&mut table, writes);
    }
    let (result, writes) = apply(&table, &Command::DeleteFunction { name: "f".into() }).unwrap();
    assert_eq!(result, Ok(Response::None));
    commit(&mut table, writes);
    assert!(get_function(&table, "f").unwrap().is_none());
    assert!(list_versions(&table, "f").unwrap().is_empty());
    assert!(list_aliases(&table, "f").unwrap().is_empty());
    // The other function is untouched.
    assert_eq!(list_versions(&table, "f2").unwrap().len(), 1);
    check(
        &[],
        Command::DeleteFunction { name: "f".into() },
        Expect::Refused("FunctionNotFound"),
    );
}

#[test]
fn publish_version() {
    check(
        &[create("f")],
        publish("f"),
        Expect::Ok(|r| matches!(r, Response::Version(v) if v.version == 1)),
    );
    // Unchanged $LATEST: the existing version comes back.
    check(
        &[create("f"), publish("f")],
        publish("f"),
        Expect::Ok(|r| matches!(r, Response::Version(v) if v.version == 1)),
    );
    check(
        &[create("f"), publish("f"), update_code("f", 2, "r2")],
        publish("f"),
        Expect::Ok(
            |r| matches!(r, Response::Version(v) if v.version == 2 && v.code.sha256 == sha(2) && v.revision_id == "r2"),
        ),
    );
    check(&[], publish("f"), Expect::Refused("FunctionNotFound"));
    let conditional = Command::PublishVersion {
        name: "f".into(),
        description: String::new(),
        expected_revision_id: Some("old".into()),
        now_ms: 0,
        expected_code_sha256: None,
    };
    check(&[create("f")], conditional, Expect::Refused("RevisionMismatch"));
}

/// Lambda's `CodeSha256` precondition, checked in apply: the version is the
/// code the caller saw, or nothing is published.
#[test]
fn publish_with_expected_code() {
    let expecting = |code: u8| Command::PublishVersion {
        name: "f".into(),
        description: String::new(),
        expected_revision_id: None,
        now_ms: 3000,
        expected_code_sha256: Some(sha(code)),
    };
    check(
        &[create("f")],
        expecting(1),
        Expect::Ok(|r| matches!(r, Response::Version(v) if v.version == 1 && v.code.sha256 == sha(1))),
    );
    // The code changed after the caller looked: refused, nothing written.
    check(
        &[create("f"), update_code("f", 2, "r2")],
        expecting(1),
        Expect::Refused("is different from current CodeSha256"),
    );
}

fn with_publish(mut command: Command) -> Command {
    if let Command::CreateFunction { publish, .. } | Command::UpdateFunction { publish, .. } = &mut command {
        *publish = true;
    }
    command
}

/// `Publish=true` on create and update: one entry writes `$LATEST` and the
/// version, or (refused) neither.
#[test]
fn create_and_update_with_publish() {
    check(
        &[],
        with_publish(create("f")),
        Expect::Ok(|r| {
            matches!(r, Response::Published { function, version }
                if function.latest_version == 1 && version.version == 1 && version.revision_id == "r1")
        }),
    );
    check(
        &[create("f"), publish("f")],
        with_publish(update_code("f", 2, "r2")),
        Expect::Ok(|r| {
            matches!(r, Response::Published { function, version }
                if function.latest_version == 2 && function.code.sha256 == sha(2)
                    && version.version == 2 && version.code.sha256 == sha(2))
        }),
    );
    // A refused create or update publishes nothing (`check` asserts no writes).
    check(
        &[create("f")],
        with_publish(create("f")),
        Expect::Refused("FunctionExists"),
    );
    let mut stale = with_publish(update_code("f", 2, "r2"));
    if let Command::UpdateFunction {
        expected_revision_id, ..
    } = &mut stale
    {
        *expected_revision_id = Some("old".into());
    }
    check(&[create("f")], stale, Expect::Refused("RevisionMismatch"));
}

/// Log entries written before `publish` and `expected_code_sha256` existed
/// still decode (the log is JSON on disk), as commands without them.
#[test]
fn entries_from_before_publish_flags_decode() {
    let old = r#"{"CreateFunction":{"name":"f","config":{"runtime":"python3.11","handler":"app.handler",
        "memory_mb":128,"timeout_s":3,"environment":{},"description":""},
        "code":{"sha256":"01","size":10},"revision_id":"r1","now_ms":1000}}"#;
    assert!(matches!(
        serde_json::from_str::<Command>(old).unwrap(),
        Command::CreateFunction { publish: false, .. }
    ));
    let old = r#"{"PublishVersion":{"name":"f","description":"","expected_revision_id":null,"now_ms":3}}"#;
    assert!(matches!(
        serde_json::from_str::<Command>(old).unwrap(),
        Command::PublishVersion {
            expected_code_sha256: None,
            ..
        }
    ));
}

#[test]
fn versions_are_immutable() {
    let mut table = Table::new();
    for command in [create("f"), publish("f"), update_code("f", 9, "r9")] {
        let (result, writes) = apply(&table, &command).unwrap();
        assert!(result.is_ok());
        commit(&mut table, writes);
    }
    let version = get_version(&table, "f", 1).unwrap().unwrap();
    assert_eq!(version.code.sha256, sha(1));
    assert_eq!(get_function(&table, "f").unwrap().unwrap().code.sha256, sha(9));
}

#[test]
fn aliases() {
    let two_versions = [create("f"), publish("f"), update_code("f", 2, "r2"), publish("f")];
    check(
        &two_versions,
        alias("f", "live", "1", None),
        Expect::Ok(|r| matches!(r, Response::Alias(a) if a.version == "1")),
    );
    check(
        &two_versions,
        alias("f", "live", "$LATEST", None),
        Expect::Ok(|r| matches!(r, Response::Alias(_))),
    );
    check(
        &two_versions,
        alias("f", "live", "3", None),
        Expect::Refused("VersionNotFound"),
    );
    check(
        &two_versions,
        alias("f", "live", "x1", None),
        Expect::Refused("invalid version"),
    );
    check(
        &two_versions,
        alias("f", "123", "1", None),
        Expect::Refused("invalid alias name"),
    );
    check(
        &two_versions,
        alias("f", "a/b", "1", None),
        Expect::Refused("invalid alias name"),
    );
    check(
        &two_versions,
        alias("g", "live", "1", None),
        Expect::Refused("FunctionNotFound"),
    );
    let mut with_alias = two_versions.to_vec();
    with_alias.push(alias("f", "live", "1", None));
    check(
        &with_alias,
        alias("f", "live", "2", None),
        Expect::Refused("AliasExists"),
    );
    let routing = |version: u64, weight: f64| {
        Some(AliasRouting {
            additional_version: version,
            weight,
        })
    };
    check(
        &two_versions,
        alias("f", "live", "1", routing(2, 0.25)),
        Expect::Ok(|r| matches!(r, Response::Alias(a) if a.routing.is_some())),
    );
    check(
        &two_versions,
        alias("f", "live", "1", routing(2, 1.5)),
        Expect::Refused("routing weight"),
    );
    check(
        &two_versions,
        alias("f", "live", "1", routing(1, 0.5)),
        Expect::Refused("must differ"),
    );
    check(
        &two_versions,
        alias("f", "live", "1", routing(7, 0.5)),
        Expect::Refused("VersionNotFound"),
    );
    check(
        &two_versions,
        alias("f", "live", "$LATEST", routing(1, 0.5)),
        Expect::Refused("$LATEST cannot route"),
    );

    let update =
        |version: Option<&str>, routing: Option<Option<AliasRouting>>, expected: Option<&str>| Command::UpdateAlias {
            function: "f".into(),
            name: "live".into(),
            version: version.map(String::from),
            routing,
            description: None,
            expected_revision_id: expected.map(String::from),
            revision_id: "a2".into(),
        };
    check(
        &with_alias,
        update(Some("2"), None, None),
        Expect::Ok(|r| matches!(r, Response::Alias(a) if a.version == "2" && a.revision_id == "a2")),
    );
    check(
        &with_alias,
        update(Some("9"), None, None),
        Expect::Refused("VersionNotFound"),
    );
    check(
        &with_alias,
        update(None, Some(routing(2, 0.5)), Some("a1")),
        Expect::Ok(|r| matches!(r, Response::Alias(a) if a.routing.is_some())),
    );
    check(
        &with_alias,
        update(None, None, Some("zz")),
        Expect::Refused("RevisionMismatch"),
    );
    check(
        &two_versions,
        update(Some("2"), None, None),
        Expect::Refused("AliasNotFound"),
    );

    check(
        &with_alias,
        Command::DeleteAlias {
            function: "f".into(),
            name: "live".into(),
        },
        Expect::Ok(|r| *r == Response::None),
    );
    check(
        &two_versions,
        Command::DeleteAlias {
            function: "f".into(),
            name: "live".into(),
        },
        Expect::Refused("AliasNotFound"),
    );
}

#[test]
fn concurrency_and_quotas() {
    check(
        &[create("f")],
        Command::PutFunctionConcurrency {
            name: "f".into(),
            reserved_concurrency: Some(5),
        },
        Expect::Ok(|r| matches!(r, Response::Function(f) if f.reserved_concurrency == Some(5))),
    );
    check(
        &[],
        Command::PutFunctionConcurrency {
            name: "f".into(),
            reserved_concurrency: None,
        },
        Expect::Refused("FunctionNotFound"),
    );
    check(
        &[],
        Command::SetRegionQuota {
            region: "eu-1".into(),
            concurrency: 10,
        },
        Expect::Ok(|r| *r == Response::None),
    );
    check(
        &[],
        Command::SetRegionQuota {
            region: "bad region".into(),
            concurrency: 10,
        },
        Expect::Refused("invalid region"),
    );
    let mut table = Table::new();
    let (_, writes) = apply(
        &table,
        &Command::SetRegionQuota {
            region: "eu-1".into(),
            concurrency: 10,
        },
    )
    .unwrap();
    commit(&mut table, writes);
    assert_eq!(list_region_quotas(&table).unwrap(), vec![("eu-1".to_string(), 10)]);
}

#[test]
fn node_registry() {
    let register = |id: Option<u64>, address: &str| Command::RegisterNode {
        id,
        address: address.into(),
        public_address: format!("public-{address}"),
        region: "local".into(),
        key_pin: String::new(),
        token: None,
    };
    check(
        &[],
        register(Some(1), "a:1"),
        Expect::Ok(|r| matches!(r, Response::Node(n) if n.id == 1)),
    );
    // Allocation continues after the highest id seen, and never reuses a removed one.
    check(
        &[register(Some(1), "a:1")],
        register(None, "b:1"),
        Expect::Ok(|r| matches!(r, Response::Node(n) if n.id == 2)),
    );
    check(
        &[
            register(Some(1), "a:1"),
            register(None, "b:1"),
            Command::RemoveNode { id: 2 },
        ],
        register(None, "c:1"),
        Expect::Ok(|r| matches!(r, Response::Node(n) if n.id == 3)),
    );
    check(&[], register(Some(0), "a:1"), Expect::Refused("reserved"));
    check(&[], register(None, ""), Expect::Refused("needs an address"));
    check(&[], Command::RemoveNode { id: 4 }, Expect::Refused("NodeNotFound"));
}

#[test]
fn a_join_token_admits_until_it_expires_or_is_used_up() {
    use crate::model::{JoinTokenRecord, TokenUse};
    let token = |uses_left| {
        Command::CreateJoinToken(JoinTokenRecord {
            id: "0123abcd".into(),
            secret_digest: "ab".repeat(32),
            created_ms: 1_000,
            expires_ms: 10_000,
            uses_left,
        })
    };
    // Each address with a key of its own.
    let pin = |address: &str| {
        format!(
            "{:0<64}",
            address.bytes().map(|b| format!("{b:02x}")).collect::<String>()
        )
    };
    let join = |address: &str, id: &str, now_ms| Command::RegisterNode {
        id: None,
        address: address.into(),
        public_address: String::new(),
        region: "local".into(),
        key_pin: pin(address),
        token: Some(TokenUse { id: id.into(), now_ms }),
    };
    check(
        &[token(Some(1))],
        join("a:1", "0123abcd", 5_000),
        Expect::Ok(|r| matches!(r, Response::Node(n) if n.key_pin.starts_with("613a31"))),
    );
    // A key identifies one member: another node with a pinned key is refused.
    let mut twin = join("b:1", "0123abcd", 6_000);
    if let Command::RegisterNode { key_pin, .. } = &mut twin {
        *key_pin = pin("a:1");
    }
    check(
        &[token(None), join("a:1", "0123abcd", 5_000)],
        twin,
        Expect::Refused("already pinned for node 1"),
    );
    check(
        &[token(Some(1)), join("a:1", "0123abcd", 5_000)],
        join("b:1", "0123abcd", 5_000),
        Expect::Refused("used up"),
    );
    check(
        &[token(None), join("a:1", "0123abcd", 5_000)],
        join("b:1", "0123abcd", 6_000),
        Expect::Ok(|_| true),
    );
    check(
        &[token(None)],
        join("a:1", "0123abcd", 10_000),
        Expect::Refused("expired"),
    );
    check(
        &[token(None)],
        join("a:1", "ffffffff", 5_000),
        Expect::Refused("unknown join token"),
    );
    check(&[], token(None), Expect::Ok(|_| true));
    check(&[token(None)], token(None), Expect::Refused("already exists"));
    check(
        &[],
        Command::DeleteJoinToken { id: "0123abcd".into() },
        Expect::Refused("not found"),
    );
    // A token refused by apply consumed nothing: the registry did not grow.
    let mut table = Table::new();
    for command in [
        token(Some(1)),
        join("a:1", "0123abcd", 5_000),
        join("b:1", "0123abcd", 5_000),
    ] {
        let (_, writes) = apply(&table, &command).unwrap();
        commit(&mut table, writes);
    }
    assert_eq!(list_nodes(&table).unwrap().len(), 1);
    assert_eq!(
        crate::state_machine::get_join_token(&table, "0123abcd")
            .unwrap()
            .unwrap()
            .uses_left,
        Some(0)
    );
}

#[test]
fn the_cluster_ca_is_set_once() {
    use crate::model::ClusterCaRecord;
    let ca = |key: &str| {
        Command::SetClusterCa(ClusterCaRecord {
            certificate_pem: "-----BEGIN CERTIFICATE-----\n".into(),
            key_pem: format!("-----BEGIN PRIVATE KEY-----\n{key}"),
        })
    };
    check(&[], ca("a"), Expect::Ok(|_| true));
    check(&[ca("a")], ca("a"), Expect::Ok(|_| true));
    check(&[ca("a")], ca("b"), Expect::Refused("already has a CA"));
    check(
        &[],
        Command::SetClusterCa(ClusterCaRecord {
            certificate_pem: "x".into(),
            key_pem: "y".into(),
        }),
        Expect::Refused("PEM"),
    );
}

#[test]
fn refusal_inside_a_batch_keeps_earlier_writes() {
    // The store applies entries through one overlay; a refused entry in the
    // middle must neither undo the first nor leak into the third.
    let table = Table::new();
    let mut batch = kv::Overlay::new(&table as &dyn kv::KvRead);
    for (command, accepted) in [(create("f"), true), (create("f"), false), (publish("f"), true)] {
        let (result, writes) = apply(&batch, &command).unwrap();
        assert_eq!(result.is_ok(), accepted, "{command:?}: {result:?}");
        batch.extend(writes);
    }
    let writes = batch.into_writes();
    let mut table = Table::new();
    commit(&mut table, writes);
    assert_eq!(get_function(&table, "f").unwrap().unwrap().latest_version, 1);
    assert!(matches!(
        apply(&table, &create("f")).unwrap().0,
        Err(ApplyError::FunctionExists { .. })
    ));
}

#[test]
fn a_batch_answers_each_command_as_if_alone() {
    let batch = Command::Batch(vec![
        create("f"),
        create("f"),
        publish("f"),
        Command::Batch(vec![]),
        Command::DeleteFunction { name: "nope".into() },
    ]);
    let table = Table::new();
    let (result, writes) = apply(&table, &batch).unwrap();
    let Ok(Response::Batch(results)) = result else {
        panic!("{result:?}")
    };
    assert!(matches!(results[0], Ok(Response::Function(_))));
    assert!(matches!(results[1], Err(ApplyError::FunctionExists { .. })));
    assert!(
        matches!(results[2], Ok(Response::Version(ref v)) if v.version == 1),
        "{:?}",
        results[2]
    );
    assert!(matches!(results[3], Err(ApplyError::InvalidArgument { .. })));
    assert!(matches!(results[4], Err(ApplyError::FunctionNotFound { .. })));
    let mut table = Table::new();
    commit(&mut table, writes);
    assert_eq!(get_function(&table, "f").unwrap().unwrap().latest_version, 1);
}

fn reserve(name: &str, n: Option<u32>) -> Command {
    Command::PutFunctionConcurrency {
        name: name.into(),
        reserved_concurrency: n,
    }
}

fn quota(region: &str, concurrency: u32) -> Command {
    Command::SetRegionQuota {
        region: region.into(),
        concurrency,
    }
}

/// Applies every command, each of which must be accepted, and returns the table.
fn applied(commands: &[Command]) -> Table {
    let mut table = Table::new();
    for command in commands {
        let (result, writes) = apply(&table, command).expect("storage");
        assert!(result.is_ok(), "{command:?} failed: {result:?}");
        commit(&mut table, writes);
    }
    table
}

#[test]
fn reservations_keep_a_minimum_unreserved_pool() {
    // Default quota 100 keeps 10 unreserved: 90 may be reserved in all.
    check(
        &[create("f"), create("g"), reserve("f", Some(60))],
        reserve("g", Some(30)),
        Expect::Ok(|_| true),
    );
    check(
        &[create("f"), create("g"), reserve("f", Some(60))],
        reserve("g", Some(31)),
        Expect::Refused("minimum unreserved"),
    );
    // Changing a reservation counts only the others.
    check(
        &[create("f"), reserve("f", Some(90))],
        reserve("f", Some(80)),
        Expect::Ok(|_| true),
    );
    // The smallest region decides.
    check(
        &[create("f"), quota("small", 10)],
        reserve("f", Some(10)),
        Expect::Refused("region small"),
    );
    check(
        &[create("f"), quota("small", 10)],
        reserve("f", Some(9)),
        Expect::Ok(|_| true),
    );
    // A quota cannot drop below what is reserved plus the minimum pool.
    check(
        &[create("f"), reserve("f", Some(9))],
        quota("local", 9),
        Expect::Refused("lower their reserved"),
    );
    check(
        &[create("f"), reserve("f", Some(9))],
        quota("local", 10),
        Expect::Ok(|_| true),
    );
    // Without reservations a quota of 0 stops a region.
    check(&[], quota("local", 0), Expect::Ok(|_| true));
    // The total follows reservations and deletions.
    let table = applied(&[create("f"), create("g"), reserve("f", Some(5)), reserve("g", Some(7))]);
    assert_eq!(reserved_total(&table).unwrap(), 12);
    let table = applied(&[
        create("f"),
        create("g"),
        reserve("f", Some(5)),
        reserve("g", Some(7)),
        Command::DeleteFunction { name: "g".into() },
        reserve("f", None),
    ]);
    assert_eq!(reserved_total(&table).unwrap(), 0);
}

fn event(id: &str, max_retry_attempts: u32) -> crate::model::EventRecord {
    crate::model::EventRecord {
        id: id.into(),
        function: "f".into(),
        qualifier: "$LATEST".into(),
        function_arn: "arn:aws:lambda:local:000000000000:function:f".into(),
        payload: r#"{"n":1}"#.into(),
        region: "local".into(),
        accepted_ms: 1_000,
        attempts: 0,
        due_ms: 1_000,
        max_retry_attempts,
        max_event_age_s: 60,
        on_success: None,
        on_failure: None,
        last_error: None,
    }
}

fn attempt(id: &str, attempts: u32, outcome: crate::command::AttemptOutcome, now_ms: i64) -> Command {
    Command::RecordAttempt {
        id: id.into(),
        attempts,
        outcome,
        now_ms,
    }
}

fn failed(retry_in_ms: i64) -> crate::command::AttemptOutcome {
    crate::command::AttemptOutcome::Failed {
        error: r#"{"errorMessage":"boom"}"#.into(),
        executed_version: "$LATEST".into(),
        retry_in_ms,
    }
}

fn due(table: &Table) -> Vec<(i64, String)> {
    table.keys().filter_map(|k| crate::keys::parse_event_due(k)).collect()
}

#[test]
fn an_event_is_queued_once() {
    let table = applied(&[
        create("f"),
        Command::EnqueueEvent(event("e1", 2)),
        Command::EnqueueEvent(event("e1", 0)),
    ]);
    assert_eq!(due(&table), vec![(1_000, "e1".to_string())]);
    assert_eq!(get_event(&table, "e1").unwrap().unwrap().max_retry_attempts, 2);
    check(
        &[],
        Command::EnqueueEvent(event("a/b", 2)),
        Expect::Refused("invalid event id"),
    );
}

#[test]
fn failures_are_retried_then_kept_in_the_failed_event_store() {
    let mut commands = vec![create("f"), Command::EnqueueEvent(event("e1", 2))];
    commands.push(attempt("e1", 0, failed(500), 2_000));
    let table = applied(&commands);
    assert_eq!(due(&table), vec![(2_500, "e1".to_string())]);
    assert_eq!(get_event(&table, "e1").unwrap().unwrap().attempts, 1);
    // A repeated report of the same attempt changes nothing.
    commands.push(attempt("e1", 0, failed(500), 2_100));
    assert_eq!(applied(&commands), table);
    commands.push(attempt("e1", 1, failed(500), 3_000));
    commands.push(attempt("e1", 2, failed(500), 4_000));
    let table = applied(&commands);
    assert!(due(&table).is_empty());
    assert!(get_event(&table, "e1").unwrap().is_none());
    let failed_events = list_failed_events(&table, "f").unwrap();
    assert_eq!(failed_events.len(), 1);
    assert_eq!(
        failed_events[0].condition,
        crate::model::FailureCondition::RetriesExhausted
    );
    assert_eq!(failed_events[0].event.attempts, 3);
    // Replaying queues it again as new.
    commands.push(Command::ReplayFailedEvents {
        function: "f".into(),
        ids: vec![],
        now_ms: 9_000,
    });
    let table = applied(&commands);
    assert!(list_failed_events(&table, "f").unwrap().is_empty());
    let replayed = get_event(&table, "e1").unwrap().unwrap();
    assert_eq!(
        (replayed.attempts, replayed.accepted_ms, replayed.due_ms),
        (0, 9_000, 9_000)
    );
}

#[test]
fn throttled_dispatches_do_not_count_until_the_event_is_too_old() {
    let not_run = |retry_in_ms| crate::command::AttemptOutcome::NotRun {
        reason: "throttled".into(),
        retry_in_ms,
    };
    let table = applied(&[
        create("f"),
        Command::EnqueueEvent(event("e1", 0)),
        attempt("e1", 0, not_run(500), 2_000),
        attempt("e1", 0, not_run(500), 3_000),
    ]);
    let event_now = get_event(&table, "e1").unwrap().unwrap();
    assert_eq!((event_now.attempts, event_now.due_ms), (0, 3_500));
    // Max age 60 s from 1 s: a retry due after 61 s is too late.
    let table = applied(&[
        create("f"),
        Command::EnqueueEvent(event("e1", 0)),
        attempt("e1", 0, not_run(500), 60_600),
    ]);
    let failed_events = list_failed_events(&table, "f").unwrap();
    assert_eq!(
        failed_events[0].condition,
        crate::model::FailureCondition::EventAgeExceeded
    );
}

#[test]
fn destinations_get_lambdas_invocation_record() {
    let config = |on_success: Option<&str>, on_failure: Option<&str>| Command::PutEventInvokeConfig {
        function: "f".into(),
        qualifier: String::new(),
        max_retry_attempts: Some(0),
        max_event_age_s: None,
        on_success: Some(on_success.map(str::to_string)),
        on_failure: Some(on_failure.map(str::to_string)),
        now_ms: 1,
    };
    check(&[], config(None, None), Expect::Refused("FunctionNotFound"));
    check(
        &[create("f")],
        config(Some("bad name"), None),
        Expect::Refused("invalid function name"),
    );
    let mut with_destinations = event("e1", 0);
    with_destinations.on_success = Some("ok".into());
    with_destinations.on_failure = Some("dlq".into());
    let table = applied(&[
        create("f"),
        create("ok"),
        create("dlq"),
        config(Some("ok"), Some("dlq")),
        Command::EnqueueEvent(with_destinations.clone()),
        attempt("e1", 0, failed(0), 2_000),
    ]);
    let record = get_event(&table, "e1-failure")
        .unwrap()
        .expect("a record for the failure destination");
    assert_eq!(record.function, "dlq");
    let body: serde_json::Value = serde_json::from_str(&record.payload).unwrap();
    assert_eq!(body["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(body["requestContext"]["requestId"], "e1");
    assert_eq!(
        body["requestContext"]["functionArn"],
        "arn:aws:lambda:local:000000000000:function:f"
    );
    assert_eq!(body["requestPayload"]["n"], 1);
    assert_eq!(body["responsePayload"]["errorMessage"], "boom");
    assert!(list_failed_events(&table, "f").unwrap().is_empty());
    let table = applied(&[
        create("f"),
        create("ok"),
        Command::EnqueueEvent(with_destinations),
        attempt(
            "e1",
            0,
            crate::command::AttemptOutcome::Succeeded {
                response: r#"{"answer":42}"#.into(),
                executed_version: "1".into(),
            },
            2_000,
        ),
    ]);
    let record = get_event(&table, "e1-success")
        .unwrap()
        .expect("a record for the success destination");
    let body: serde_json::Value = serde_json::from_str(&record.payload).unwrap();
    assert_eq!(body["requestContext"]["condition"], "Success");
    assert_eq!(body["responseContext"]["executedVersion"], "1");
    assert_eq!(body["responsePayload"]["answer"], 42);
    // A failure destination that no longer exists: the failed-event store keeps the event.
    let mut orphan = event("e2", 0);
    orphan.on_failure = Some("gone".into());
    let table = applied(&[
        create("f"),
        Command::EnqueueEvent(orphan),
        attempt("e2", 0, failed(0), 2_000),
    ]);
    assert_eq!(list_failed_events(&table, "f").unwrap().len(), 1);
}

fn access_key(id: &str) -> Command {
    Command::CreateAccessKey(crate::model::AccessKeyRecord {
        id: id.into(),
        secret_digest: sha(7),
        description: "ci".into(),
        created_ms: 1,
    })
}

#[test]
fn access_keys() {
    let id = "FLOEABCDEFGH2345";
    check(
        &[],
        access_key(id),
        Expect::Ok(|r| matches!(r, Response::AccessKey(k) if k.description == "ci")),
    );
    check(&[access_key(id)], access_key(id), Expect::Refused("AccessKeyExists"));
    check(&[], access_key("short"), Expect::Refused("invalid access key id"));
    check(
        &[],
        access_key("floeabcdefgh2345"),
        Expect::Refused("invalid access key id"),
    );
    let mut bad_digest = access_key(id);
    if let Command::CreateAccessKey(key) = &mut bad_digest {
        key.secret_digest = "not hex".into();
    }
    check(&[], bad_digest, Expect::Refused("invalid sha256"));
    check(
        &[access_key(id)],
        Command::DeleteAccessKey { id: id.into() },
        Expect::Ok(|r| matches!(r, Response::None)),
    );
    check(
        &[],
        Command::DeleteAccessKey { id: id.into() },
        Expect::Refused("AccessKeyNotFound"),
    );
}
