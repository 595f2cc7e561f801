//! Lambda's REST API: boto3 and the aws CLI against a real node (the
//! assertions live in `python/test_lambda_api.py`), and a listener that
//! survives malformed, oversized and slow clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use chaos_tests::{TestCluster, TEST_ACCESS_KEY_ID, TEST_CONFIG, TEST_SECRET_ACCESS_KEY};
use floe_client::proto::ReadConsistency;

/// Functions reach the test's listener (async invocations report to it);
/// short HTTP timeouts so the slow-client checks stay quick.
fn config() -> String {
    format!(
        "{TEST_CONFIG}\n[executor]\nnetwork = \"host\"\n\n[api]\nhttp_header_timeout = \"1s\"\nhttp_body_timeout = \"1s\"\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn boto3_and_the_aws_cli_work_unchanged() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(1, &config()).await?;
    let script_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/python");
    let output = tokio::process::Command::new("python3")
        .args(["-m", "unittest", "-v", "test_lambda_api"])
        .current_dir(script_dir)
        .env("FLOE_HTTP", cluster.http_address(0))
        .env("FLOE_ACCESS_KEY_ID", TEST_ACCESS_KEY_ID)
        .env("FLOE_SECRET_ACCESS_KEY", TEST_SECRET_ACCESS_KEY)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .await?;
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "boto3/aws CLI suite failed:\n{report}\n{}\n--- node log ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        cluster.logs()
    );
    assert!(report.contains("OK"), "{report}");
    Ok(())
}

/// Sends `request` raw and returns what came back (until the server closes,
/// or `wait` passes).
fn exchange(address: &str, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(wait)).unwrap();
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// The request line and headers of a request signed as botocore signs it
/// (over `body`), ending with the blank line; `extra` goes before the signature's headers.
fn signed_head(address: &str, method: &str, path: &str, body: &[u8], extra: &str) -> String {
    let mut headers = http::HeaderMap::new();
    headers.insert("host", address.parse().unwrap());
    chaos_tests::sign_rest(&mut headers, method, path, &floe_proto::sigv4::sha256_hex(body));
    let mut head = format!("{method} {path} HTTP/1.1\r\n{extra}");
    for (name, value) in &headers {
        head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
    }
    head.push_str("\r\n");
    head
}

/// A signed `GET /2016-08-19/account-settings`, as botocore would send it.
fn signed_account_settings(address: &str) -> String {
    let request = signed_head(
        address,
        "GET",
        "/2016-08-19/account-settings",
        b"",
        "connection: close\r\n",
    );
    exchange(address, request.as_bytes(), Duration::from_secs(10))
}

fn assert_serving(address: &str) {
    let answer = signed_account_settings(address);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("ConcurrentExecutions"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rest_listener_survives_abuse() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(1, &config()).await?;
    let address = cluster.http_address(0);
    assert_serving(&address);

    // Malformed HTTP and binary garbage: 400 or a closed connection.
    for garbage in [
        b"NOT HTTP AT ALL\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
    ] {
        let answer = exchange(&address, &garbage, Duration::from_secs(5));
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    assert_serving(&address);

    // Headers past 64 KiB: 431.
    let huge = format!(
        "GET /2015-03-31/functions HTTP/1.1\r\nhost: x\r\nx-filler: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let answer = exchange(&address, huge.as_bytes(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // A declared body over Invoke's 6 MB limit: 413 at once, before any body is read.
    let oversized = "POST /2015-03-31/functions/f/invocations HTTP/1.1\r\nhost: x\r\ncontent-length: 7340032\r\n\r\n";
    let answer = exchange(&address, oversized.as_bytes(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("RequestEntityTooLargeException"), "{answer}");

    // Unsigned requests are refused before their body is read.
    let unsigned = "POST /2015-03-31/functions/f/invocations HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}";
    let answer = exchange(&address, unsigned.as_bytes(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("MissingAuthenticationTokenException"), "{answer}");

    // A client that never finishes its headers is cut off after the header timeout (1 s here).
    let started = Instant::now();
    let answer = exchange(
        &address,
        b"GET /2015-03-31/functions HTTP/1.1\r\nhost: x\r\n",
        Duration::from_secs(10),
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "slow headers held for {:?}",
        started.elapsed()
    );
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A signed request whose body trickles in too slowly: 408 after the body timeout.
    let mut slow = signed_head(
        &address,
        "POST",
        "/2015-03-31/functions/f/invocations",
        b"{}",
        "content-length: 100\r\n",
    );
    slow.push('{');
    let started = Instant::now();
    let answer = exchange(&address, slow.as_bytes(), Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(8));

    // Many idle connections at once do not stop others being served.
    let idle: Vec<TcpStream> = (0..50).filter_map(|_| TcpStream::connect(&address).ok()).collect();
    assert_serving(&address);
    drop(idle);

    // The gRPC API refuses unsigned and wrongly signed calls too.
    let unsigned = floe_client::Client::connect_with([cluster.address(0)], None).await?;
    let error = unsigned
        .list_functions(floe_client::proto::ReadConsistency::Linearizable)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::Unauthenticated), "{error}");
    assert!(
        error.to_string().contains("MissingAuthenticationTokenException"),
        "{error}"
    );
    let wrong = floe_client::Client::connect_with(
        [cluster.address(0)],
        Some(floe_client::Credentials {
            access_key_id: TEST_ACCESS_KEY_ID.into(),
            secret_access_key: "w".repeat(64),
        }),
    )
    .await?;
    let error = wrong
        .list_functions(floe_client::proto::ReadConsistency::Linearizable)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::Unauthenticated), "{error}");
    assert!(error.to_string().contains("InvalidSignatureException"), "{error}");
    assert_serving(&address);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn access_keys_are_managed_with_the_cli_and_sign_every_api() -> anyhow::Result<()> {
    let cluster = TestCluster::start(2).await?;
    let endpoint = cluster.address(1);
    let run = |args: &[&str]| chaos_tests::run_floe(&[&["--endpoint", endpoint.as_str(), "--json"], args].concat());
    let (code, stdout, stderr) = run(&["auth", "key", "create", "--description", "ci"]);
    assert_eq!(code, 0, "{stderr}");
    let created: serde_json::Value = serde_json::from_str(&stdout)?;
    let id = created["access_key_id"].as_str().unwrap().to_string();
    let secret = created["secret_access_key"].as_str().unwrap().to_string();
    assert_eq!(secret.len(), 64);
    let (_, stdout, _) = run(&["auth", "key", "list"]);
    assert!(stdout.contains(&id) && stdout.contains(TEST_ACCESS_KEY_ID), "{stdout}");
    assert!(!stdout.contains(&secret), "secrets are never listed");

    // The new key signs gRPC calls (through a follower) and REST calls.
    let client = floe_client::Client::connect_with(
        [cluster.address(1)],
        Some(floe_client::Credentials {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
        }),
    )
    .await?;
    client.cluster_status().await?;
    client
        .list_functions(floe_client::proto::ReadConsistency::Linearizable)
        .await?;

    let (code, _, stderr) = run(&["auth", "key", "delete", &id]);
    assert_eq!(code, 0, "{stderr}");
    let error = client
        .list_functions(floe_client::proto::ReadConsistency::Linearizable)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::Unauthenticated), "{error}");
    assert!(error.to_string().contains("UnrecognizedClientException"), "{error}");

    // The CLI without credentials: exit code 9 and a message that says what to do.
    let output = std::process::Command::new(chaos_tests::binary("floe"))
        .args(["--endpoint", &endpoint, "function", "list"])
        .env_remove("FLOE_ACCESS_KEY_ID")
        .env_remove("FLOE_SECRET_ACCESS_KEY")
        .env_remove("FLOE_CREDENTIALS")
        .current_dir(std::env::temp_dir())
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(9), "{stderr}");
    assert!(stderr.contains("--credentials FILE"), "{stderr}");
    let (code, _, stderr) = run(&["auth", "key", "delete", "FLOENOSUCHKEY0000000"]);
    assert_eq!(code, 3, "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_node_writes_usable_credentials() -> anyhow::Result<()> {
    // Without a bootstrap key: node 1 makes a random one and writes it down.
    let root = tempfile::tempdir()?;
    let data_dir = root.path().join("node");
    let mut child = std::process::Command::new(chaos_tests::binary("floed"))
        .args([
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--peer-listen",
            "127.0.0.1:0",
        ])
        .env_remove("FLOE_BOOTSTRAP_ACCESS_KEY_ID")
        .env_remove("FLOE_BOOTSTRAP_SECRET_ACCESS_KEY")
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let credentials = data_dir.join("credentials");
    let result = async {
        chaos_tests::wait_for("the credentials file", Duration::from_secs(30), || {
            let exists = credentials.exists();
            async move { exists }
        })
        .await?;
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&credentials)?.permissions().mode() & 0o777, 0o600);
        let address = std::fs::read_to_string(data_dir.join("floed.addr"))?;
        // The CLI finds it with --credentials (and in ./floe-data/credentials by default).
        let output = std::process::Command::new(chaos_tests::binary("floe"))
            .args([
                "--endpoint",
                &address,
                "--credentials",
                credentials.to_str().unwrap(),
                "function",
                "list",
            ])
            .env_remove("FLOE_ACCESS_KEY_ID")
            .env_remove("FLOE_SECRET_ACCESS_KEY")
            .output()?;
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let text = std::fs::read_to_string(&credentials)?;
        assert!(!text.contains(TEST_SECRET_ACCESS_KEY));
        anyhow::Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// One node reading `config`, with a function `f` that returns 1.
async fn one_node_with_f(config: &str) -> anyhow::Result<TestCluster> {
    let cluster = TestCluster::start_with(1, config).await?;
    let client = cluster.client_of(0).await?;
    client
        .create_function(
            "f",
            chaos_tests::python_config(),
            chaos_tests::python_package("return 1"),
        )
        .await?;
    Ok(cluster)
}

/// Strict signatures: a captured, signed Invoke is refused when replayed
/// with an unsigned header added that changes its meaning or with another
/// body, and a body signed as `UNSIGNED-PAYLOAD` is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_captured_invoke_cannot_be_replayed_changed() -> anyhow::Result<()> {
    let cluster = one_node_with_f(&config()).await?;
    let address = cluster.http_address(0);
    let path = "/2015-03-31/functions/f/invocations";
    let captured = signed_head(
        &address,
        "POST",
        path,
        b"{}",
        "connection: close\r\ncontent-length: 2\r\n",
    );
    let answer = exchange(&address, format!("{captured}{{}}").as_bytes(), Duration::from_secs(30));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let with_event = captured.replacen("\r\n", "\r\nx-amz-invocation-type: Event\r\n", 1);
    let answer = exchange(
        &address,
        format!("{with_event}{{}}").as_bytes(),
        Duration::from_secs(10),
    );
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("x-amz-invocation-type"), "{answer}");

    let other_body = captured.replace("content-length: 2", "content-length: 7");
    let answer = exchange(
        &address,
        format!("{other_body}{{\"a\":1}}").as_bytes(),
        Duration::from_secs(10),
    );
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("InvalidSignatureException"), "{answer}");

    let mut headers = http::HeaderMap::new();
    headers.insert("host", address.parse()?);
    headers.insert("x-amz-content-sha256", floe_proto::sigv4::UNSIGNED_PAYLOAD.parse()?);
    chaos_tests::sign_rest(&mut headers, "POST", path, floe_proto::sigv4::UNSIGNED_PAYLOAD);
    let mut unsigned_body = format!("POST {path} HTTP/1.1\r\nconnection: close\r\ncontent-length: 2\r\n");
    for (name, value) in &headers {
        unsigned_body.push_str(&format!("{name}: {}\r\n", value.to_str()?));
    }
    unsigned_body.push_str("\r\n{}");
    let answer = exchange(&address, unsigned_body.as_bytes(), Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("UNSIGNED-PAYLOAD"), "{answer}");
    assert_serving(&address);
    Ok(())
}

/// 200 connections declaring 6 MB invocations, signed with a known key id
/// but not its secret, each send 200 KB and stall: the node holds at most
/// its budget for their bodies (4 MiB here; past each request's first 64
/// KiB), serves a legitimate client meanwhile, refuses them once their time
/// is up, and then has the budget for a legitimate 1 MB request.
#[tokio::test(flavor = "multi_thread")]
async fn unverified_bodies_stay_within_the_budget() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = format!("{TEST_CONFIG}\n[api]\nhttp_body_timeout = \"6s\"\nunverified_body_budget = \"4MiB\"\n");
    let cluster = one_node_with_f(&config).await?;
    let address = cluster.http_address(0);
    let path = "/2015-03-31/functions/f/invocations";
    // Signed over another body: the signature cannot match what they send.
    let head = signed_head(&address, "POST", path, b"other", "content-length: 6000000\r\n");
    let mut attackers = Vec::new();
    for _ in 0..200 {
        let (address, head) = (address.clone(), head.clone());
        attackers.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(&address).await?;
            stream.write_all(head.as_bytes()).await?;
            let _ = tokio::time::timeout(Duration::from_secs(10), stream.write_all(&vec![b'x'; 200 * 1024])).await;
            let mut answer = vec![0u8; 512];
            let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut answer)).await??;
            anyhow::Ok(String::from_utf8_lossy(&answer[..read]).into_owned())
        }));
    }
    let budget = 4 * 1024 * 1024;
    wait_for_peak(&cluster, budget * 3 / 4).await?;

    // Meanwhile a legitimate client is served (its bodies are within the free part).
    let served = address.clone();
    tokio::task::spawn_blocking(move || {
        assert_serving(&served);
        let invoke = signed_head(
            &served,
            "POST",
            path,
            b"{}",
            "connection: close\r\ncontent-length: 2\r\n",
        );
        let answer = exchange(&served, format!("{invoke}{{}}").as_bytes(), Duration::from_secs(30));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    })
    .await?;

    let mut refused = std::collections::BTreeMap::new();
    for attacker in attackers {
        let answer = attacker.await??;
        let status = answer.lines().next().unwrap_or("").to_string();
        assert!(
            status.starts_with("HTTP/1.1 408") || status.starts_with("HTTP/1.1 429"),
            "{answer}"
        );
        *refused.entry(status).or_insert(0) += 1;
    }
    let peak = cluster.status(0).await?.unverified_body_bytes_peak;
    assert!(
        peak <= budget,
        "held {peak} bytes of unverified bodies, over the budget of {budget}"
    );
    println!("200 stalled attackers: {refused:?}; peak of unverified body bytes held {peak} (budget {budget})");

    // The budget is free again: a legitimate 1 MB invocation goes through.
    let payload = format!("{{\"pad\":\"{}\"}}", "p".repeat(1024 * 1024));
    let served = address.clone();
    tokio::task::spawn_blocking(move || {
        let invoke = signed_head(
            &served,
            "POST",
            path,
            payload.as_bytes(),
            &format!("connection: close\r\ncontent-length: {}\r\n", payload.len()),
        );
        let answer = exchange(
            &served,
            format!("{invoke}{payload}").as_bytes(),
            Duration::from_secs(30),
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    })
    .await?;
    Ok(())
}

/// Waits until node 1 has held at least `bytes` of unverified bodies at once.
async fn wait_for_peak(cluster: &TestCluster, bytes: u64) -> anyhow::Result<()> {
    chaos_tests::wait_for("the attackers to fill the budget", Duration::from_secs(20), || async {
        matches!(cluster.status(0).await, Ok(status) if status.unverified_body_bytes_peak >= bytes)
    })
    .await
}

/// `--tls-cert/--tls-key`: both public APIs speak TLS, to the SDK and
/// `floe --ca`, to boto3 (`verify=`) and the aws CLI (`--ca-bundle`); a
/// client that does not trust the CA, or speaks plain HTTP, gets nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_public_apis_speak_tls_to_every_client() -> anyhow::Result<()> {
    let mut cluster = TestCluster::empty(&config())?;
    let (ca_path, certificate, key) = chaos_tests::write_public_pki(cluster.scratch_dir())?;
    let path = |p: &std::path::Path| p.display().to_string();
    cluster
        .start_node(vec![
            "--tls-cert".into(),
            path(&certificate),
            "--tls-key".into(),
            path(&key),
        ])
        .await?;
    let (grpc, http) = (cluster.address(0), cluster.http_address(0));
    let ca = std::fs::read(&ca_path)?;

    let client =
        floe_client::Client::connect_tls([grpc.clone()], Some(chaos_tests::test_credentials()), Some(&ca)).await?;
    chaos_tests::wait_for("the node to take writes over TLS", Duration::from_secs(30), || async {
        client
            .create_function(
                "f",
                chaos_tests::python_config(),
                chaos_tests::python_package("return 1"),
            )
            .await
            .is_ok()
    })
    .await?;
    let response = client.invoke("f", "", b"{}".to_vec()).await?;
    assert_eq!(response.payload, b"1");

    // Plain HTTP/2, and TLS with a CA that did not sign the node's certificate: refused.
    let plain = floe_client::Client::connect_with([grpc.clone()], Some(chaos_tests::test_credentials()))
        .await?
        .with_retry_for(Duration::ZERO);
    assert!(plain.list_functions(ReadConsistency::Stale).await.is_err());
    let other_dir = cluster.scratch_dir().join("other-ca");
    std::fs::create_dir_all(&other_dir)?;
    let (other_ca, _, _) = chaos_tests::write_public_pki(&other_dir)?;
    let distrusting = floe_client::Client::connect_tls(
        [grpc.clone()],
        Some(chaos_tests::test_credentials()),
        Some(&std::fs::read(&other_ca)?),
    )
    .await?
    .with_retry_for(Duration::ZERO);
    assert!(distrusting.list_functions(ReadConsistency::Stale).await.is_err());

    // The CLI.
    let (code, stdout, stderr) =
        chaos_tests::run_floe(&["--endpoint", &grpc, "--ca", &path(&ca_path), "function", "list"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains('f'), "{stdout}");
    let (code, _, _) = chaos_tests::run_floe(&["--endpoint", &grpc, "--wait", "0s", "function", "list"]);
    assert_ne!(code, 0, "plain HTTP/2 to a TLS listener worked");

    // boto3 and the aws CLI, trusting the CA.
    let script = "import boto3, sys\n\
        c = boto3.client('lambda', endpoint_url='https://' + sys.argv[1], region_name='local', verify=sys.argv[2])\n\
        r = c.invoke(FunctionName='f', Payload=b'{}')\n\
        assert r['StatusCode'] == 200, r\n\
        print(r['Payload'].read().decode())\n";
    let aws_env = [
        ("AWS_ACCESS_KEY_ID", chaos_tests::TEST_ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", chaos_tests::TEST_SECRET_ACCESS_KEY),
    ];
    let output = std::process::Command::new("python3")
        .args(["-c", script, &http, &path(&ca_path)])
        .envs(aws_env)
        .output()?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "1");
    let output = std::process::Command::new("aws")
        .args(["lambda", "list-functions", "--region", "local", "--output", "json"])
        .args([
            "--endpoint-url",
            &format!("https://{http}"),
            "--ca-bundle",
            &path(&ca_path),
        ])
        .envs(aws_env)
        .output()?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("\"FunctionName\": \"f\""));

    // Plain HTTP to the TLS REST port gets no HTTP answer.
    let answer = exchange(
        &http,
        b"GET /2016-08-19/account-settings HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    Ok(())
}
