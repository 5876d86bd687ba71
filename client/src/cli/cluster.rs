//! `mqadmin cluster ...`: the group's members and their Raft state; leader transfer.

use std::time::Duration;

use anyhow::Context as _;
use raftmq_client::proto::admin::v1::NewMember;
use raftmq_client::{Admin, ClusterStatus, Role};

use super::table::{Table, opt};

fn role_name(role: i32) -> &'static str {
    match Role::try_from(role) {
        Ok(Role::Leader) => "LEADER",
        Ok(Role::Follower) => "FOLLOWER",
        Ok(Role::Candidate) => "CANDIDATE",
        Ok(Role::Learner) => "LEARNER",
        Ok(Role::Unspecified) | Err(_) => "UNKNOWN",
    }
}

/// The `cluster list` table, then the members that did not answer.
pub fn render(status: &ClusterStatus) -> String {
    let mut t = Table::new(&[
        "GROUP", "NODE", "ROLE", "TERM", "LEADER", "COMMIT", "LAST LOG", "APPLIED", "PURGED", "CLIENT", "RAFT",
    ]);
    for n in &status.nodes {
        t.row(vec![
            n.group.clone(),
            n.node_id.to_string(),
            role_name(n.role).to_string(),
            n.term.to_string(),
            if n.leader_id == 0 { "-".to_string() } else { n.leader_id.to_string() },
            opt(n.commit_index),
            opt(n.last_log_index),
            opt(n.last_applied_index),
            opt(n.purged_index),
            n.client_endpoint.clone(),
            n.raft_endpoint.clone(),
        ]);
    }
    let mut out = t.render();
    for u in &status.unreachable {
        out.push_str(&format!("unreachable: node {}: {}\n", u.node_id, u.message));
    }
    out
}

/// `cluster list`.
#[allow(clippy::print_stdout)]
pub async fn list(endpoints: &str) -> anyhow::Result<()> {
    let admin = Admin::new(endpoints)?;
    let status = admin.cluster_status().await.context("cannot read the cluster status")?;
    print!("{}", render(&status));
    Ok(())
}

/// `cluster transfer-leader`.
#[allow(clippy::print_stdout)]
pub async fn transfer_leader(endpoints: &str, group: &str, to: u64) -> anyhow::Result<()> {
    let admin = Admin::new(endpoints)?;
    admin
        .transfer_leader(group, to)
        .await
        .with_context(|| format!("cannot move the leadership of group {group} to node {to}"))?;
    println!("node {to} now leads group {group}");
    Ok(())
}

/// The node a membership change adds.
#[derive(clap::Args, Debug)]
pub struct NewNodeArgs {
    /// Id of the new node: one this group has never used.
    #[arg(long)]
    pub node_id: u64,
    /// Its client endpoint (host:port), as clients and the other members reach it.
    #[arg(long)]
    pub client: String,
    /// Its Raft endpoint (host:port), as the other members reach it.
    #[arg(long)]
    pub raft: String,
    /// How long the new node may take to copy the log and every retained message.
    #[arg(long, default_value_t = 600)]
    pub catch_up_secs: u64,
}

/// `cluster add-node`, `remove-node` and `replace-node`: one membership change (`remove`
/// 0: none).
#[allow(clippy::print_stdout)]
pub async fn change(endpoints: &str, group: &str, add: Option<NewNodeArgs>, remove: u64) -> anyhow::Result<()> {
    let admin = Admin::new(endpoints)?;
    let catch_up = Duration::from_secs(add.as_ref().map_or(0, |a| a.catch_up_secs));
    let what = match (&add, remove) {
        (Some(a), 0) => format!("add node {} to group {group}", a.node_id),
        (Some(a), old) => format!("replace node {old} of group {group} with node {}", a.node_id),
        (None, old) => format!("remove node {old} from group {group}"),
    };
    let add = add.map(|a| NewMember { node_id: a.node_id, client_endpoint: a.client, raft_endpoint: a.raft });
    let done = admin.change_members(group, add, remove, catch_up).await.with_context(|| format!("cannot {what}"))?;
    println!("done: {what}");
    println!("voters: {:?}", done.voters);
    if !done.retired.is_empty() {
        println!("retired ids (never used again): {:?}", done.retired);
    }
    Ok(())
}
