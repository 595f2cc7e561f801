//! Lambda's REST API next to gRPC, on one warm function.

use std::time::Instant;

use anyhow::bail;

use chaos_tests::TestCluster;

use crate::common::{ms, summarize, DEFAULT_CONFIG};

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

/// One REST invoke over `sender`, signed as botocore signs it.
async fn rest_invoke(sender: &mut Sender, host: &str, path: &str, payload: &'static [u8]) -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    let mut headers = http::HeaderMap::new();
    headers.insert("host", host.parse()?);
    chaos_tests::sign_rest(&mut headers, "POST", path, &floe_proto::sigv4::sha256_hex(payload));
    let mut request = http::Request::post(path).body(http_body_util::Full::new(bytes::Bytes::from_static(payload)))?;
    *request.headers_mut() = headers;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if status != http::StatusCode::OK {
        bail!("REST invoke answered {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

fn noop() -> chaos_tests::TestFunction<'static> {
    chaos_tests::TestFunction {
        name: "noop",
        runtime: "python3.11",
        handler: "app.handler",
        files: &[("app.py", "def handler(event, context):\n    return event\n")],
        memory_mb: 128,
        timeout_s: 10,
        environment: &[],
    }
}

pub async fn rest_bench(calls: usize) -> anyhow::Result<()> {
    println!("== warm invoke latency: Lambda REST vs gRPC, one node, python3.11 no-op ==");
    let cluster = TestCluster::start_with(1, DEFAULT_CONFIG).await?;
    let client = cluster.client_of(0).await?;
    noop().deploy(&client).await?;
    let host = cluster.http_address(0);
    let stream = tokio::net::TcpStream::connect(&host).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let path = "/2015-03-31/functions/noop/invocations";
    for _ in 0..50 {
        rest_invoke(&mut sender, &host, path, b"{}").await?;
        client.invoke("noop", "", b"{}".to_vec()).await?;
    }
    // Alternate the two paths so both see the same machine state.
    let (mut rest, mut grpc) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
    for _ in 0..calls {
        let started = Instant::now();
        rest_invoke(&mut sender, &host, path, b"{}").await?;
        rest.push(started.elapsed());
        let started = Instant::now();
        client.invoke("noop", "", b"{}".to_vec()).await?;
        grpc.push(started.elapsed());
    }
    let (rest_p50, rest_p99) = summarize(rest);
    let (grpc_p50, grpc_p99) = summarize(grpc);
    println!(
        "REST (SigV4, HTTP/1.1 keep-alive)  p50 {}  p99 {}",
        ms(rest_p50),
        ms(rest_p99)
    );
    println!(
        "gRPC (SigV4, HTTP/2)               p50 {}  p99 {}",
        ms(grpc_p50),
        ms(grpc_p99)
    );
    println!(
        "REST - gRPC                        p50 {:+.2} ms  p99 {:+.2} ms   ({calls} calls each)",
        (rest_p50.as_secs_f64() - grpc_p50.as_secs_f64()) * 1000.0,
        (rest_p99.as_secs_f64() - grpc_p99.as_secs_f64()) * 1000.0
    );
    Ok(())
}

/// An HTTP/1.1 connection to `host`, over TLS trusting `ca` (PEM) when given.
async fn rest_connection(host: &str, ca: Option<&[u8]>) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(host).await?;
    stream.set_nodelay(true)?;
    let Some(ca) = ca else {
        let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        return Ok(sender);
    };
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_slice(ca)?)?;
    let config = rustls::ClientConfig::builder_with_provider(floe_node::shared::tls_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, stream)
        .await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// TLS on the public APIs: two one-node clusters, one plain and one with
/// `--tls-cert`, and the four paths (REST and gRPC, each plain and over TLS)
/// alternated call by call on warm sandboxes.
pub async fn tls_bench(calls: usize) -> anyhow::Result<()> {
    println!("== warm invoke latency with and without TLS on the public APIs, python3.11 no-op ==");
    let plain = TestCluster::start_with(1, DEFAULT_CONFIG).await?;
    let mut secure = TestCluster::empty(DEFAULT_CONFIG)?;
    let (ca_path, certificate, key) = chaos_tests::write_public_pki(secure.scratch_dir())?;
    secure
        .start_node(vec![
            "--tls-cert".into(),
            certificate.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ])
        .await?;
    let ca = std::fs::read(&ca_path)?;
    let plain_client = plain.client_of(0).await?;
    let secure_client =
        floe_client::Client::connect_tls([secure.address(0)], Some(chaos_tests::test_credentials()), Some(&ca)).await?;
    chaos_tests::wait_for(
        "the TLS node to take writes",
        std::time::Duration::from_secs(30),
        || async { noop().deploy(&secure_client).await.is_ok() },
    )
    .await?;
    noop().deploy(&plain_client).await?;
    let path = "/2015-03-31/functions/noop/invocations";
    let (plain_host, secure_host) = (plain.http_address(0), secure.http_address(0));
    let mut plain_rest = rest_connection(&plain_host, None).await?;
    let mut secure_rest = rest_connection(&secure_host, Some(&ca)).await?;
    let mut samples: [Vec<std::time::Duration>; 4] = Default::default();
    for round in 0..calls + 50 {
        let timings = [
            {
                let started = Instant::now();
                rest_invoke(&mut plain_rest, &plain_host, path, b"{}").await?;
                started.elapsed()
            },
            {
                let started = Instant::now();
                rest_invoke(&mut secure_rest, &secure_host, path, b"{}").await?;
                started.elapsed()
            },
            {
                let started = Instant::now();
                plain_client.invoke("noop", "", b"{}".to_vec()).await?;
                started.elapsed()
            },
            {
                let started = Instant::now();
                secure_client.invoke("noop", "", b"{}".to_vec()).await?;
                started.elapsed()
            },
        ];
        // The first 50 rounds warm up.
        if round >= 50 {
            for (sample, timing) in samples.iter_mut().zip(timings) {
                sample.push(timing);
            }
        }
    }
    let [rest_plain, rest_tls, grpc_plain, grpc_tls] = samples.map(summarize);
    for (label, (p50, p99)) in [
        ("REST, plain HTTP/1.1        ", rest_plain),
        ("REST, TLS                   ", rest_tls),
        ("gRPC, plain HTTP/2          ", grpc_plain),
        ("gRPC, TLS                   ", grpc_tls),
    ] {
        println!("{label} p50 {}  p99 {}", ms(p50), ms(p99));
    }
    println!(
        "TLS ÷ plain, p50: REST {:.3}, gRPC {:.3}   ({calls} calls each)",
        rest_tls.0.as_secs_f64() / rest_plain.0.as_secs_f64(),
        grpc_tls.0.as_secs_f64() / grpc_plain.0.as_secs_f64()
    );
    Ok(())
}
