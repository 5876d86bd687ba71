//! `mqadmin cluster ...`: the group's members and their Raft state; leader transfer.

use anyhow::Context as _;
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
