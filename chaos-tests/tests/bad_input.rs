//! Bad input against a real node: each validation rule is refused with a
//! clear message and the right gRPC status, and garbage on the port harms nothing.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use chaos_tests::TestCluster;
use floe_client::proto::{self, FunctionConfig, ReadConsistency};
use tonic::Code;

fn config() -> FunctionConfig {
    chaos_tests::python_config()
}

fn package() -> Vec<u8> {
    chaos_tests::python_package("return 1")
}

/// Asserts a call failed with `code` and a message containing `text`.
fn refused<T: std::fmt::Debug>(result: Result<T, floe_client::Error>, code: Code, text: &str) {
    let error = result.expect_err("the call should fail");
    assert_eq!(error.code(), Some(code), "{error}");
    assert!(error.to_string().contains(text), "expected {text:?} in {error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_rules_map_to_grpc_statuses() -> anyhow::Result<()> {
    let cluster = TestCluster::start(1).await?;
    let client = chaos_tests::connect([cluster.address(0)])
        .await?
        .with_retry_for(Duration::from_secs(1));
    let create = |name: &str, config: FunctionConfig, zip: Vec<u8>| {
        let client = &client;
        let name = name.to_string();
        async move { client.create_function(&name, config, zip).await }
    };

    refused(
        create("has space", config(), package()).await,
        Code::InvalidArgument,
        "invalid function name",
    );
    refused(
        create(&"x".repeat(65), config(), package()).await,
        Code::InvalidArgument,
        "invalid function name",
    );
    refused(
        create(
            "f",
            FunctionConfig {
                memory_mb: 64,
                ..config()
            },
            package(),
        )
        .await,
        Code::InvalidArgument,
        "memory 64 MB",
    );
    refused(
        create(
            "f",
            FunctionConfig {
                memory_mb: 20_000,
                ..config()
            },
            package(),
        )
        .await,
        Code::InvalidArgument,
        "memory",
    );
    refused(
        create(
            "f",
            FunctionConfig {
                timeout_s: 0,
                ..config()
            },
            package(),
        )
        .await,
        Code::InvalidArgument,
        "timeout 0 s",
    );
    refused(
        create(
            "f",
            FunctionConfig {
                timeout_s: 901,
                ..config()
            },
            package(),
        )
        .await,
        Code::InvalidArgument,
        "timeout 901 s",
    );
    refused(
        create(
            "f",
            FunctionConfig {
                runtime: "ruby9".into(),
                ..config()
            },
            package(),
        )
        .await,
        Code::InvalidArgument,
        "unknown runtime",
    );
    let mut environment = BTreeMap::new();
    environment.insert("9LIVES".to_string(), "x".to_string());
    refused(
        create(
            "f",
            FunctionConfig {
                environment,
                ..config()
            },
            package(),
        )
        .await,
        Code::InvalidArgument,
        "environment variable name",
    );
    let mut environment = BTreeMap::new();
    environment.insert("BIG".to_string(), "x".repeat(5000));
    refused(
        create(
            "f",
            FunctionConfig {
                environment,
                ..config()
            },
            package(),
        )
        .await,
        Code::InvalidArgument,
        "the limit is 4096",
    );
    refused(
        create("f", config(), b"not a zip".to_vec()).await,
        Code::InvalidArgument,
        "not a valid zip",
    );
    refused(
        create("f", config(), hostile_zip()).await,
        Code::InvalidArgument,
        "unsafe path",
    );

    create("f", config(), package()).await?;
    refused(
        create("f", config(), package()).await,
        Code::AlreadyExists,
        "already exists",
    );
    refused(
        client.get_function("nope", ReadConsistency::Linearizable).await,
        Code::NotFound,
        "function nope not found",
    );
    refused(
        client.invoke("f", "7", b"{}".to_vec()).await,
        Code::NotFound,
        "version 7",
    );
    refused(
        client.invoke("f", "nosuchalias", b"{}".to_vec()).await,
        Code::NotFound,
        "alias nosuchalias",
    );
    refused(
        client.invoke("f", "", b"{not json".to_vec()).await,
        Code::InvalidArgument,
        "not valid JSON",
    );
    // The client context is checked by the service, so gRPC refuses what REST refuses.
    for (context, why) in [
        ("[1]", "must be a JSON object"),
        ("{\"open\": ", "must be a JSON object"),
    ] {
        refused(
            client
                .invoke_with(proto::InvokeRequest {
                    function: "f".into(),
                    payload: b"{}".to_vec(),
                    client_context: context.into(),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            why,
        );
    }
    refused(
        client
            .invoke_with(proto::InvokeRequest {
                function: "f".into(),
                payload: b"{}".to_vec(),
                client_context: format!("{{\"x\": \"{}\"}}", "a".repeat(4000)),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "the limit is 2685 bytes",
    );
    refused(
        client.invoke("f", "", vec![b' '; 7 * 1024 * 1024]).await,
        Code::ResourceExhausted,
        "limit is 6291456",
    );
    let stale_update = proto::UpdateFunctionRequest {
        name: "f".into(),
        memory_mb: Some(256),
        expected_revision_id: Some("not-the-revision".into()),
        ..Default::default()
    };
    refused(
        client.update_function(stale_update).await,
        Code::FailedPrecondition,
        "revision",
    );
    refused(
        client
            .create_alias(proto::CreateAliasRequest {
                function: "f".into(),
                name: "live".into(),
                version: "3".into(),
                routing: None,
                description: String::new(),
            })
            .await,
        Code::NotFound,
        "version 3",
    );
    refused(
        client
            .create_alias(proto::CreateAliasRequest {
                function: "f".into(),
                name: "42".into(),
                version: "$LATEST".into(),
                routing: None,
                description: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "invalid alias name",
    );
    // Scheduling and asynchronous invocations.
    refused(
        client
            .invoke_with(proto::InvokeRequest {
                function: "f".into(),
                region: "no such region!".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "invalid region",
    );
    refused(
        client
            .invoke_with(proto::InvokeRequest {
                function: "f".into(),
                invocation_type: 7,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "unknown invocation type",
    );
    refused(
        client
            .invoke_with(proto::InvokeRequest {
                function: "f".into(),
                region: "empty".into(),
                ..Default::default()
            })
            .await,
        Code::ResourceExhausted,
        "no live node of region empty",
    );
    refused(
        client.put_function_concurrency("f", Some(95)).await,
        Code::InvalidArgument,
        "minimum unreserved",
    );
    let policy = |retries: u32, age: Option<u32>, on_failure: &str| proto::PutEventInvokeConfigRequest {
        function: "f".into(),
        qualifier: String::new(),
        max_retry_attempts: Some(retries),
        max_event_age_s: age,
        on_success: None,
        on_failure: Some(on_failure.into()),
    };
    refused(
        client.put_event_invoke_config(policy(3, None, "")).await,
        Code::InvalidArgument,
        "MaximumRetryAttempts",
    );
    refused(
        client.put_event_invoke_config(policy(1, Some(30), "")).await,
        Code::InvalidArgument,
        "MaximumEventAgeInSeconds",
    );
    refused(
        client.put_event_invoke_config(policy(1, None, "arn:aws:sqs:x")).await,
        Code::InvalidArgument,
        "not a function ARN",
    );
    refused(
        client.get_event_invoke_config("f", "").await,
        Code::NotFound,
        "no event invoke config",
    );
    refused(
        client.list_failed_events("bad name").await,
        Code::InvalidArgument,
        "invalid function name",
    );
    // Nothing already stored was harmed by any of it.
    assert_eq!(client.list_functions(ReadConsistency::Linearizable).await?.len(), 1);
    Ok(())
}

fn hostile_zip() -> Vec<u8> {
    let mut buffer = std::io::Cursor::new(Vec::new());
    let mut writer = zip::ZipWriter::new(&mut buffer);
    writer
        .start_file("../../escape.py", zip::write::SimpleFileOptions::default())
        .unwrap();
    writer.write_all(b"x").unwrap();
    writer.finish().unwrap();
    buffer.into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_the_grpc_port_does_not_harm_the_node() -> anyhow::Result<()> {
    let cluster = TestCluster::start(1).await?;
    let address = cluster.address(0);
    for garbage in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0xff; 64 * 1024],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x08\x00\x00\x00\x00\x00garbage".to_vec(),
    ] {
        let mut stream = std::net::TcpStream::connect(&address)?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let _ = stream.write_all(&garbage);
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
    }
    let client = chaos_tests::connect([address]).await?;
    client.create_function("still-serving", config(), package()).await?;
    assert_eq!(
        client
            .get_function("still-serving", ReadConsistency::Linearizable)
            .await?
            .name,
        "still-serving"
    );
    Ok(())
}
