//! Unit tests of the registry: routes, leader order, expiry, stale heartbeats and limits.

use super::*;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn topic(name: &str, queue_count: u32) -> TopicInfo {
    TopicInfo { name: name.into(), queue_count, message_types: vec!["NORMAL".into()], perm: 6 }
}

fn hb(group: &str, node_id: u64, role: Role, term: u64, leader_id: u64) -> BrokerHeartbeat {
    BrokerHeartbeat {
        cluster: "DefaultCluster".into(),
        group: group.into(),
        node_id,
        role: role as i32,
        term,
        leader_id,
        client_endpoint: format!("{group}-{node_id}:8081"),
        raft_endpoint: format!("{group}-{node_id}:9081"),
        topics: vec![topic("orders", 8)],
        commit_index: Some(10),
        last_log_index: Some(10),
        timestamp_ms: 1_000,
    }
}

/// `(node id, leader flag)` of each member of each route, by group.
fn members_of(routes: &[GroupRoute]) -> Vec<(&str, Vec<(u64, bool)>)> {
    routes.iter().map(|r| (r.group.as_str(), r.members.iter().map(|m| (m.node_id, m.leader)).collect())).collect()
}

fn accept(reg: &mut Registry, hb: BrokerHeartbeat, now: Instant) -> Accepted {
    reg.heartbeat(hb, now).expect("a valid heartbeat is accepted")
}

/// Group `g` with nodes 1..=3 at term 3, node 2 leading.
fn three_nodes(reg: &mut Registry, now: Instant) {
    accept(reg, hb("g", 1, Role::Follower, 3, 2), now);
    accept(reg, hb("g", 2, Role::Leader, 3, 2), now);
    accept(reg, hb("g", 3, Role::Follower, 3, 2), now);
}

#[test]
fn a_route_lists_the_leader_first_then_the_others_by_node_id() {
    let t0 = Instant::now();
    let mut reg = Registry::new(DEFAULT_EXPIRY);
    three_nodes(&mut reg, t0);
    let routes = reg.route("orders", t0);
    assert_eq!(members_of(&routes), [("g", vec![(2, true), (1, false), (3, false)])]);
    assert_eq!(routes[0].queue_count, 8);
    assert_eq!(routes[0].message_types, ["NORMAL"]);
    assert_eq!(routes[0].members[0].client_endpoint, "g-2:8081");
}

#[test]
fn a_node_expires_after_the_expiry_and_not_before() {
    let t0 = Instant::now();
    let mut reg = Registry::new(DEFAULT_EXPIRY);
    three_nodes(&mut reg, t0);
    // Nodes 1 and 2 keep heartbeating; node 3 falls silent at t0.
    accept(&mut reg, hb("g", 1, Role::Follower, 3, 2), t0 + 3 * SEC);
    accept(&mut reg, hb("g", 2, Role::Leader, 3, 2), t0 + 3 * SEC);

    let at_expiry = t0 + 5 * SEC;
    assert_eq!(members_of(&reg.route("orders", at_expiry)), [("g", vec![(2, true), (1, false), (3, false)])]);
    assert_eq!(reg.expire(at_expiry), []);
    assert_eq!(reg.cluster_view(at_expiry).len(), 3);

    let past = at_expiry + MS;
    assert_eq!(members_of(&reg.route("orders", past)), [("g", vec![(2, true), (1, false)])]);
    assert_eq!(reg.cluster_view(past).iter().map(|h| h.node_id).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(reg.expire(past), [("g".to_string(), NodeId(3))]);
    assert_eq!(reg.len(), 2);

    // When the whole group is silent, the topic has no route and the group is forgotten.
    let later = t0 + 8 * SEC + MS;
    assert_eq!(reg.route("orders", later), []);
    assert_eq!(reg.expire(later).len(), 2);
    assert!(reg.is_empty());
}

#[test]
fn a_leader_change_reorders_the_members() {
    let t0 = Instant::now();
    let mut reg = Registry::new(DEFAULT_EXPIRY);
    three_nodes(&mut reg, t0);
    // Node 3 wins term 4; node 2 has not heard of it yet and still claims term 3.
    let t1 = t0 + SEC;
    accept(&mut reg, hb("g", 3, Role::Leader, 4, 3), t1);
    assert_eq!(members_of(&reg.route("orders", t1)), [("g", vec![(3, true), (1, false), (2, false)])]);
    // Then node 2 steps down.
    let t2 = t1 + SEC;
    accept(&mut reg, hb("g", 2, Role::Follower, 4, 3), t2);
    accept(&mut reg, hb("g", 1, Role::Follower, 4, 3), t2);
    assert_eq!(members_of(&reg.route("orders", t2)), [("g", vec![(3, true), (1, false), (2, false)])]);
}

#[test]
fn without_a_reporting_leader_the_latest_leader_id_of_the_highest_term_goes_first() {
    let t0 = Instant::now();
    let mut reg = Registry::new(DEFAULT_EXPIRY);
    // Node 3 leads term 5 but its own heartbeat is lost; 1 and 2 say so, node 2 most recently.
    accept(&mut reg, hb("g", 1, Role::Follower, 5, 3), t0);
    accept(&mut reg, hb("g", 2, Role::Follower, 5, 3), t0 + MS);
    assert_eq!(members_of(&reg.route("orders", t0 + MS)), [("g", vec![(1, false), (2, false)])]);
    // Node 3 comes back lagging at term 4 naming node 1; a lower term's leader id does not count.
    accept(&mut reg, hb("g", 3, Role::Follower, 4, 1), t0 + 2 * MS);
    assert_eq!(members_of(&reg.route("orders", t0 + 2 * MS)), [("g", vec![(3, false), (1, false), (2, false)])]);
    // Node 1 now reports no known leader in term 6: order by node id.
    accept(&mut reg, hb("g", 1, Role::Candidate, 6, 0), t0 + 3 * MS);
    assert_eq!(members_of(&reg.route("orders", t0 + 3 * MS)), [("g", vec![(1, false), (2, false), (3, false)])]);
}

#[test]
fn an_unknown_topic_has_no_route() {
    let t0 = Instant::now();
    let mut reg = Registry::new(DEFAULT_EXPIRY);
    three_nodes(&mut reg, t0);
    assert_eq!(reg.route("payments", t0), []);
    assert_eq!(Registry::new(DEFAULT_EXPIRY).route("orders", t0), []);
}

#[test]
fn routes_cover_every_group_serving_the_topic_sorted_by_name() {
    let t0 = Instant::now();
    let mut reg = Registry::new(DEFAULT_EXPIRY);
    let mut b1 = hb("broker-b", 1, Role::Leader, 1, 1);
    b1.topics = vec![topic("orders", 4), topic("only-b", 2)];
    accept(&mut reg, b1, t0);
    accept(&mut reg, hb("broker-a", 7, Role::Leader, 2, 7), t0);
    let mut c1 = hb("broker-c", 1, Role::Leader, 1, 1);
    c1.topics = vec![topic("other", 1)];
    accept(&mut reg, c1, t0);

    let routes = reg.route("orders", t0);
    assert_eq!(members_of(&routes), [("broker-a", vec![(7, true)]), ("broker-b", vec![(1, true)])]);
    assert_eq!(routes.iter().map(|r| r.queue_count).collect::<Vec<_>>(), [8, 4]);
    assert_eq!(members_of(&reg.route("only-b", t0)), [("broker-b", vec![(1, true)])]);
}

#[test]
fn the_topic_table_comes_from_the_leader_or_else_the_most_advanced_node() {
    let t0 = Instant::now();
    let mut reg = Registry::new(DEFAULT_EXPIRY);
    // Only followers have the new topic applied, with different progress.
    let mut f1 = hb("g", 1, Role::Follower, 3, 2);
    f1.topics.push(topic("new", 2));
    f1.commit_index = Some(20);
    let mut f3 = hb("g", 3, Role::Follower, 3, 2);
    f3.topics.push(topic("new", 3));
    f3.commit_index = Some(30);
    accept(&mut reg, f1, t0);
    accept(&mut reg, hb("g", 2, Role::Leader, 3, 2), t0);
    accept(&mut reg, f3, t0);
    let routes = reg.route("new", t0);
    assert_eq!(members_of(&routes), [("g", vec![(2, true), (1, false), (3, false)])]);
    assert_eq!(routes[0].queue_count, 3);

    // Once the leader lists it, its table wins.
    let mut leader = hb("g", 2, Role::Leader, 3, 2);
    leader.topics.push(topic("new", 5));
    leader.timestamp_ms += 1;
    accept(&mut reg, leader, t0 + MS);
    assert_eq!(reg.route("new", t0 + MS)[0].queue_count, 5);
}

#[test]
fn a_stale_heartbeat_does_not_roll_back_the_view() {
    let t0 = Instant::now();
    let mut reg = Registry::new(DEFAULT_EXPIRY);
    three_nodes(&mut reg, t0);
    let mut new_leader = hb("g", 2, Role::Leader, 4, 2);
    new_leader.timestamp_ms = 2_000;
    assert_eq!(accept(&mut reg, new_leader, t0 + SEC), Accepted::Updated);

    // A delayed heartbeat from term 3 with a later timestamp: the term decides.
    let mut old_term = hb("g", 2, Role::Follower, 3, 1);
    old_term.timestamp_ms = 9_000;
    assert_eq!(accept(&mut reg, old_term, t0 + 2 * SEC), Accepted::Stale);
    // Same term, earlier timestamp.
    let mut earlier = hb("g", 2, Role::Follower, 4, 3);
    earlier.timestamp_ms = 1_999;
    assert_eq!(accept(&mut reg, earlier, t0 + 2 * SEC), Accepted::Stale);

    let view = reg.cluster_view(t0 + 2 * SEC);
    assert_eq!((view[1].node_id, view[1].term, view[1].timestamp_ms, view[1].role()), (2, 4, 2_000, Role::Leader));
    assert_eq!(members_of(&reg.route("orders", t0 + 2 * SEC)), [("g", vec![(2, true), (1, false), (3, false)])]);
    // A stale heartbeat is no sign of life: node 2 drops out 5 s after its last accepted one.
    let node_2_live = |reg: &Registry, now| reg.cluster_view(now).iter().any(|h| h.node_id == 2);
    assert!(node_2_live(&reg, t0 + 6 * SEC));
    assert!(!node_2_live(&reg, t0 + 6 * SEC + MS));

    // Same term, later timestamp: accepted.
    let mut newer = hb("g", 2, Role::Follower, 4, 3);
    newer.timestamp_ms = 2_001;
    assert_eq!(accept(&mut reg, newer, t0 + 3 * SEC), Accepted::Updated);
    assert_eq!(reg.cluster_view(t0 + 3 * SEC)[1].role(), Role::Follower);
}

#[test]
fn an_expired_node_comes_back_even_with_an_older_timestamp() {
    let t0 = Instant::now();
    let mut reg = Registry::new(DEFAULT_EXPIRY);
    let mut first = hb("g", 1, Role::Leader, 3, 1);
    first.timestamp_ms = 50_000;
    assert_eq!(accept(&mut reg, first.clone(), t0), Accepted::Registered);
    assert_eq!(accept(&mut reg, first, t0 + SEC), Accepted::Updated);
    // Its clock went back an hour; until the stored heartbeat expires it is stale, then it counts.
    let back = hb("g", 1, Role::Leader, 3, 1);
    assert_eq!(accept(&mut reg, back.clone(), t0 + 2 * SEC), Accepted::Stale);
    assert_eq!(accept(&mut reg, back, t0 + 6 * SEC + MS), Accepted::Registered);
    assert_eq!(reg.cluster_view(t0 + 6 * SEC + MS)[0].timestamp_ms, 1_000);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let t0 = Instant::now();
    let mut reg = Registry::new(DEFAULT_EXPIRY);
    let mut bad = hb("g", 0, Role::Leader, 1, 0);
    assert_eq!(reg.heartbeat(bad.clone(), t0), Err(HeartbeatError::Invalid(InvalidHeartbeat::ZeroNodeId)));
    bad.node_id = 1;
    bad.group = String::new();
    let err = reg.heartbeat(bad.clone(), t0).expect_err("an empty group is refused");
    assert_eq!(
        err.to_string(),
        "group name \"\" is invalid: the name is empty; configure the broker's group as 1 to 127 of [%|a-zA-Z0-9_-]"
    );
    bad.group = "g".into();
    bad.client_endpoint = "nowhere".into();
    assert!(matches!(
        reg.heartbeat(bad.clone(), t0),
        Err(HeartbeatError::Invalid(InvalidHeartbeat::BadEndpoint { field: "client_endpoint", .. }))
    ));
    bad.client_endpoint = "h:1".into();
    bad.topics[0].queue_count = 2000;
    assert!(matches!(reg.heartbeat(bad, t0), Err(HeartbeatError::Invalid(InvalidHeartbeat::BadQueueCount { .. }))));
    assert!(reg.is_empty());
}

#[test]
fn the_registry_refuses_groups_beyond_its_limit_until_some_expire() {
    let t0 = Instant::now();
    let mut reg = Registry::new(DEFAULT_EXPIRY);
    for i in 0..MAX_GROUPS {
        accept(&mut reg, hb(&format!("g{i}"), 1, Role::Leader, 1, 1), t0);
    }
    // Group g0 keeps heartbeating, the others fall silent.
    accept(&mut reg, hb("g0", 1, Role::Leader, 1, 1), t0 + SEC);
    assert_eq!(
        reg.heartbeat(hb("extra", 1, Role::Leader, 1, 1), t0 + SEC),
        Err(HeartbeatError::TooManyGroups { group: "extra".into() })
    );
    // A known group still heartbeats.
    assert_eq!(accept(&mut reg, hb("g5", 1, Role::Leader, 1, 1), t0 + SEC), Accepted::Updated);
    let later = t0 + 5 * SEC + MS;
    assert_eq!(accept(&mut reg, hb("extra", 1, Role::Leader, 1, 1), later), Accepted::Registered);
    assert_eq!(reg.cluster_view(later).iter().map(|h| h.group.as_str()).collect::<Vec<_>>(), ["extra", "g0", "g5"]);
}

#[test]
fn a_group_refuses_nodes_beyond_its_limit() {
    let t0 = Instant::now();
    let mut reg = Registry::new(DEFAULT_EXPIRY);
    for id in 1..=MAX_NODES_PER_GROUP as u64 {
        accept(&mut reg, hb("g", id, Role::Follower, 1, 0), t0);
    }
    let err = reg.heartbeat(hb("g", 17, Role::Follower, 1, 0), t0).expect_err("a 17th node is refused");
    assert_eq!(err, HeartbeatError::TooManyNodes { group: "g".into(), node_id: NodeId(17) });
    assert!(err.to_string().contains("group \"g\" has 16 live nodes, the limit; node 17 is refused"), "{err}");
    assert_eq!(reg.len(), MAX_NODES_PER_GROUP);
    // Another group is not affected.
    assert_eq!(accept(&mut reg, hb("h", 1, Role::Leader, 1, 1), t0), Accepted::Registered);
}

#[test]
fn the_cluster_view_is_sorted_by_group_and_node_id() {
    let t0 = Instant::now();
    let mut reg = Registry::new(DEFAULT_EXPIRY);
    accept(&mut reg, hb("b", 2, Role::Follower, 1, 1), t0);
    accept(&mut reg, hb("a", 3, Role::Leader, 1, 3), t0);
    accept(&mut reg, hb("b", 1, Role::Leader, 1, 1), t0);
    accept(&mut reg, hb("a", 1, Role::Follower, 1, 3), t0);
    let view = reg.cluster_view(t0);
    let keys: Vec<(&str, u64)> = view.iter().map(|h| (h.group.as_str(), h.node_id)).collect();
    assert_eq!(keys, [("a", 1), ("a", 3), ("b", 1), ("b", 2)]);
}
