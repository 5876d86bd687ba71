//! `mqadmin topic ...`: create, update, list, route and delete topics.

use anyhow::Context as _;
use raftmq_client::proto::rocketmq::v2 as pb;
use raftmq_client::{Admin, TopicInfo, TopicSpec, TopicUpdate};

use super::table::Table;

fn permission_name(p: pb::Permission) -> &'static str {
    match p {
        pb::Permission::ReadWrite => "read-write",
        pb::Permission::Read => "read",
        pb::Permission::Write => "write",
        pb::Permission::None | pb::Permission::Unspecified => "none",
    }
}

fn perm_name(bits: u32) -> &'static str {
    match bits {
        6 => "read-write",
        4 => "read",
        2 => "write",
        _ => "none",
    }
}

fn topic_table(topics: &[TopicInfo]) -> String {
    let mut t = Table::new(&["TOPIC", "QUEUES", "PERM", "MESSAGE TYPES"]);
    for topic in topics {
        t.row(vec![
            topic.name.clone(),
            topic.queue_count.to_string(),
            format!("{} ({})", topic.perm, perm_name(topic.perm)),
            topic.message_types.join(","),
        ]);
    }
    t.render()
}

/// `topic create`.
#[allow(clippy::print_stdout)]
pub async fn create(
    endpoints: &str,
    name: String,
    queues: Option<u32>,
    types: Vec<String>,
    perm: Option<u32>,
) -> anyhow::Result<()> {
    let admin = Admin::new(endpoints)?;
    let spec = TopicSpec { name: name.clone(), queue_count: queues, message_types: types, perm };
    let topic = admin.create_topic(spec).await.with_context(|| format!("cannot create topic {name}"))?;
    println!("created topic {}", topic.name);
    print!("{}", topic_table(&[topic]));
    Ok(())
}

/// `topic update`.
#[allow(clippy::print_stdout)]
pub async fn update(
    endpoints: &str,
    name: String,
    queues: Option<u32>,
    types: Vec<String>,
    perm: Option<u32>,
) -> anyhow::Result<()> {
    let admin = Admin::new(endpoints)?;
    let change = TopicUpdate { name: name.clone(), queue_count: queues, message_types: types, perm };
    let topic = admin.update_topic(change).await.with_context(|| format!("cannot update topic {name}"))?;
    println!("updated topic {}", topic.name);
    print!("{}", topic_table(&[topic]));
    Ok(())
}

/// `topic list`.
#[allow(clippy::print_stdout)]
pub async fn list(endpoints: &str) -> anyhow::Result<()> {
    let admin = Admin::new(endpoints)?;
    let topics = admin.list_topics().await.context("cannot list topics")?;
    if topics.is_empty() {
        println!("no topics");
    } else {
        print!("{}", topic_table(&topics));
    }
    Ok(())
}

/// `topic route`.
#[allow(clippy::print_stdout)]
pub async fn route(endpoints: &str, name: &str) -> anyhow::Result<()> {
    let admin = Admin::new(endpoints)?;
    let route = admin.route(name).await.with_context(|| format!("cannot route topic {name}"))?;
    let mut t = Table::new(&["QUEUE", "BROKER", "PERM", "MESSAGE TYPES", "ENDPOINTS (LEADER FIRST)"]);
    for q in &route.queues {
        t.row(vec![
            q.id.to_string(),
            q.broker.clone(),
            permission_name(q.permission).to_string(),
            q.message_types.iter().map(|m| m.as_str_name()).collect::<Vec<_>>().join(","),
            q.endpoints.join(";"),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

/// `topic delete`.
#[allow(clippy::print_stdout)]
pub async fn delete(endpoints: &str, name: &str) -> anyhow::Result<()> {
    let admin = Admin::new(endpoints)?;
    admin.delete_topic(name).await.with_context(|| format!("cannot delete topic {name}"))?;
    println!("deleted topic {name}");
    Ok(())
}
