//! `mqadmin health`: whether the process at the endpoint serves, for container health
//! checks and scripts (the image has no curl). A broker node is healthy when it answers
//! and knows its group's leader; a nameserver when it answers.

use std::time::Duration;

use anyhow::{Context as _, bail};
use raftmq_client::{Admin, ClientOptions};
use raftmq_proto::namesrv::v1 as namesrv;
use raftmq_proto::namesrv::v1::name_service_client::NameServiceClient;

/// How long the whole check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

fn quick() -> ClientOptions {
    ClientOptions {
        request_timeout: CHECK_TIMEOUT,
        retry_deadline: CHECK_TIMEOUT,
        connect_timeout: Duration::from_millis(500),
        ..ClientOptions::default()
    }
}

/// Asks a nameserver for its view.
async fn namesrv_health(endpoint: &str) -> anyhow::Result<usize> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
        .with_context(|| format!("{endpoint} is not host:port"))?
        .connect_timeout(Duration::from_millis(500))
        .timeout(CHECK_TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {endpoint}"))?;
    let view = NameServiceClient::new(channel)
        .cluster_view(namesrv::ClusterViewRequest {})
        .await
        .with_context(|| format!("{endpoint} did not answer as a nameserver"))?;
    Ok(view.into_inner().nodes.len())
}

/// `health`: prints one line and fails unless the process at the (single) endpoint serves.
#[allow(clippy::print_stdout)]
pub async fn health(endpoints: &str) -> anyhow::Result<()> {
    let endpoint = endpoints.split([';', ',']).map(str::trim).find(|e| !e.is_empty()).unwrap_or_default();
    let admin = Admin::with_options(endpoint, quick())?;
    match tokio::time::timeout(CHECK_TIMEOUT * 2, admin.node_status()).await {
        Ok(Ok(node)) if node.leader_id != 0 => {
            println!("ok: node {} of {} (leader {}, term {})", node.node_id, node.group, node.leader_id, node.term);
            Ok(())
        }
        Ok(Ok(node)) => bail!("node {} of {} knows no leader (term {})", node.node_id, node.group, node.term),
        Ok(Err(e)) if e.grpc_code() == Some(tonic::Code::Unimplemented) => {
            let nodes = tokio::time::timeout(CHECK_TIMEOUT * 2, namesrv_health(endpoint))
                .await
                .with_context(|| format!("{endpoint} did not answer within {:?}", CHECK_TIMEOUT * 2))??;
            println!("ok: nameserver, {nodes} live broker nodes");
            Ok(())
        }
        Ok(Err(e)) => Err(e).with_context(|| format!("{endpoint} is not serving")),
        Err(_) => bail!("{endpoint} did not answer within {:?}", CHECK_TIMEOUT * 2),
    }
}
