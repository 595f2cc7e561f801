//! Lambda's REST API next to gRPC, on one warm function.

use std::time::Instant;

use anyhow::bail;

use chaos_tests::TestCluster;

use crate::common::{ms, summarize, DEFAULT_CONFIG};

/// One REST invoke over `sender`, signed as botocore signs it.
async fn rest_invoke(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    host: &str,
    path: &str,
    payload: &'static [u8],
) -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    let mut headers = http::HeaderMap::new();
    headers.insert("host", host.parse()?);
    floe_proto::sigv4::sign(
        &chaos_tests::test_credentials(),
        "local",
        floe_proto::sigv4::REST_SERVICE,
        "POST",
        path,
        "",
        &mut headers,
        &floe_proto::sigv4::sha256_hex(payload),
        std::time::SystemTime::now(),
    );
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

pub async fn rest_bench(calls: usize) -> anyhow::Result<()> {
    println!("== warm invoke latency: Lambda REST vs gRPC, one node, python3.11 no-op ==");
    let cluster = TestCluster::start_with(1, DEFAULT_CONFIG).await?;
    let client = cluster.client_of(0).await?;
    chaos_tests::TestFunction {
        name: "noop",
        runtime: "python3.11",
        handler: "app.handler",
        files: &[("app.py", "def handler(event, context):\n    return event\n")],
        memory_mb: 128,
        timeout_s: 10,
        environment: &[],
    }
    .deploy(&client)
    .await?;
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
