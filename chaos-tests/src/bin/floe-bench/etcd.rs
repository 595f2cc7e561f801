//! A three-member etcd on loopback, driven through its own gRPC protocol:
//! the baseline of the metadata and rpc benchmarks.

use std::time::Duration;

use anyhow::{bail, Context};
use chaos_tests::{free_address, wait_for};

use crate::metadata::Writer;

/// etcd's own protocol, as etcdctl and its client libraries speak it: gRPC
/// over HTTP/2, like floe's SDK. Only the fields the benchmark uses are
/// declared (prost skips the others); numbers from etcd's `rpc.proto`.
mod etcd_wire {
    /// `etcdserverpb.PutRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }
    /// `etcdserverpb.PutResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }
    /// `etcdserverpb.ResponseHeader`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseHeader {
        #[prost(uint64, tag = "2")]
        pub member_id: u64,
        #[prost(int64, tag = "3")]
        pub revision: i64,
    }
    /// `etcdserverpb.RangeRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RangeRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        /// A read of the member's own state, without a quorum round (floe's stale read).
        #[prost(bool, tag = "7")]
        pub serializable: bool,
    }
    /// `etcdserverpb.RangeResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RangeResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }
    /// `etcdserverpb.StatusRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusRequest {}
    /// `etcdserverpb.StatusResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(uint64, tag = "4")]
        pub leader: u64,
    }
}

/// An etcd member's client port, over one HTTP/2 connection.
pub struct EtcdClient {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
}

impl EtcdClient {
    pub async fn connect(address: &str) -> anyhow::Result<EtcdClient> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connect to etcd at {address}"))?;
        Ok(EtcdClient {
            grpc: tonic::client::Grpc::new(channel),
        })
    }

    async fn call<Request, Reply>(&self, path: &'static str, request: Request) -> anyhow::Result<Reply>
    where
        Request: prost::Message + Send + 'static,
        Reply: prost::Message + Default + Send + 'static,
    {
        // A clone shares the connection (as tonic's generated clients do).
        let mut grpc = self.grpc.clone();
        grpc.ready().await?;
        let codec = tonic_prost::ProstCodec::<Request, Reply>::default();
        let path = http::uri::PathAndQuery::from_static(path);
        Ok(grpc
            .unary(tonic::Request::new(request), path, codec)
            .await?
            .into_inner())
    }

    /// Reads one key, locally (`serializable`) or linearizably.
    pub async fn read(&self, key: &str, serializable: bool) -> anyhow::Result<()> {
        let request = etcd_wire::RangeRequest {
            key: key.as_bytes().to_vec(),
            serializable,
        };
        let _: etcd_wire::RangeResponse = self.call("/etcdserverpb.KV/Range", request).await?;
        Ok(())
    }

    /// Whether this member leads.
    pub async fn leads(&self) -> anyhow::Result<bool> {
        let status: etcd_wire::StatusResponse = self
            .call("/etcdserverpb.Maintenance/Status", etcd_wire::StatusRequest {})
            .await?;
        Ok(status.header.is_some_and(|header| header.member_id == status.leader))
    }
}

impl Writer for EtcdClient {
    async fn write(&mut self, key: &str, value: u32) -> anyhow::Result<()> {
        let request = etcd_wire::PutRequest {
            key: format!("quota/{key}").into_bytes(),
            value: value.to_string().into_bytes(),
        };
        let reply: etcd_wire::PutResponse = self.call("/etcdserverpb.KV/Put", request).await?;
        anyhow::ensure!(
            reply.header.is_some_and(|header| header.revision > 0),
            "etcd answered a put without a revision"
        );
        Ok(())
    }
}

/// Three etcd members on loopback, killed on drop.
pub struct Etcd {
    children: Vec<std::process::Child>,
    clients: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A CA and one certificate per member (for 127.0.0.1) in `dir`, for
/// etcd's mutual peer TLS: `ca.crt`, `e{i}.crt`, `e{i}.key`.
fn write_peer_pki(dir: &std::path::Path, members: usize) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "etcd peer CA");
    let ca = ca_params.self_signed(&ca_key)?;
    std::fs::write(dir.join("ca.crt"), ca.pem())?;
    let issuer = Issuer::from_ca_cert_der(ca.der(), &ca_key)?;
    for i in 0..members {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("etcd member e{i}"));
        let certificate = params.signed_by(&key, &issuer)?;
        std::fs::write(dir.join(format!("e{i}.crt")), certificate.pem())?;
        std::fs::write(dir.join(format!("e{i}.key")), key.serialize_pem())?;
    }
    Ok(())
}

/// Three members whose peer traffic is mutual TLS (as floe's always is);
/// clients speak plain gRPC to both systems.
pub async fn start_etcd() -> anyhow::Result<Etcd> {
    let dir = tempfile::tempdir()?;
    write_peer_pki(dir.path(), 3)?;
    let clients: Vec<String> = (0..3).map(|_| free_address().to_string()).collect();
    let peers: Vec<String> = (0..3).map(|_| free_address().to_string()).collect();
    let initial: Vec<String> = (0..3).map(|i| format!("e{i}=https://{}", peers[i])).collect();
    let mut children = Vec::new();
    for i in 0..3 {
        let log = std::fs::File::create(dir.path().join(format!("e{i}.log")))?;
        children.push(
            std::process::Command::new("etcd")
                .args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(dir.path().join(format!("e{i}")))
                .args(["--listen-client-urls", &format!("http://{}", clients[i])])
                .args(["--advertise-client-urls", &format!("http://{}", clients[i])])
                .args(["--listen-peer-urls", &format!("https://{}", peers[i])])
                .args(["--initial-advertise-peer-urls", &format!("https://{}", peers[i])])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new"])
                .arg("--peer-client-cert-auth")
                .arg("--peer-trusted-ca-file")
                .arg(dir.path().join("ca.crt"))
                .arg("--peer-cert-file")
                .arg(dir.path().join(format!("e{i}.crt")))
                .arg("--peer-key-file")
                .arg(dir.path().join(format!("e{i}.key")))
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .context("start etcd (apt-get install etcd-server)")?,
        );
    }
    let etcd = Etcd {
        children,
        clients,
        _dir: dir,
    };
    let first = etcd.clients[0].clone();
    wait_for("etcd to elect a leader", Duration::from_secs(30), || {
        let first = first.clone();
        async move {
            let Ok(mut writer) = EtcdClient::connect(&first).await else {
                return false;
            };
            writer.write("probe", 1).await.is_ok()
        }
    })
    .await?;
    Ok(etcd)
}

/// The etcd member that leads, so etcd writes skip the forwarding hop as floe's do.
pub async fn etcd_leader(etcd: &Etcd) -> anyhow::Result<String> {
    for address in &etcd.clients {
        if EtcdClient::connect(address).await?.leads().await? {
            return Ok(address.clone());
        }
    }
    bail!("no etcd leader")
}
