//! `mqadmin message query`: finds messages by id, key or queue offset and prints each one's
//! properties and the start of its body.

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{ArgGroup, Args};
use raftmq_client::{Admin, MessageQuery, QueriedMessage};

/// Bytes of a body that is not printable text shown, as hex.
const HEX_BYTES: usize = 64;

/// `message query` arguments: one of `--id`, `--key` or `--queue` (with `--offset` and `--topic`).
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("by").required(true).args(["id", "key", "queue"])))]
pub struct QueryArgs {
    /// Find the messages with this message id.
    #[arg(long)]
    id: Option<String>,
    /// Find the messages carrying this key, newest first.
    #[arg(long)]
    key: Option<String>,
    /// Only messages of this topic; with --queue, the topic to read.
    #[arg(long)]
    topic: Option<String>,
    /// With --key: stored at or after TIME (RFC 3339 like 2026-12-06T10:00:00Z, or
    /// milliseconds since the epoch).
    #[arg(long, value_name = "TIME", requires = "key", value_parser = parse_time)]
    begin: Option<i64>,
    /// With --key: stored at or before TIME.
    #[arg(long, value_name = "TIME", requires = "key", value_parser = parse_time)]
    end: Option<i64>,
    /// Read the message at --offset of this queue of --topic.
    #[arg(long, requires_all = ["topic", "offset"])]
    queue: Option<u32>,
    /// The queue offset to read (with --queue).
    #[arg(long, requires = "queue")]
    offset: Option<u64>,
    /// Show at most this many messages (1 to 64; default 32).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    max: Option<u32>,
}

impl QueryArgs {
    fn query(self) -> anyhow::Result<MessageQuery> {
        let QueryArgs { id, key, topic, begin, end, queue, offset, .. } = self;
        match (id, key, queue, offset, topic) {
            (Some(message_id), None, None, None, topic) => Ok(MessageQuery::Id { message_id, topic }),
            (None, Some(key), None, None, topic) => Ok(MessageQuery::Key { key, topic, begin_ms: begin, end_ms: end }),
            (None, None, Some(queue), Some(offset), Some(topic)) => {
                Ok(MessageQuery::QueueOffset { topic, queue, offset })
            }
            _ => anyhow::bail!("give --id ID, --key KEY, or --topic TOPIC --queue QUEUE --offset OFFSET"),
        }
    }
}

/// A time given as RFC 3339 (`2026-12-06T10:00:00Z`, `2026-12-06T11:00:00.5+01:00`) or as
/// milliseconds since the epoch, in milliseconds since the epoch.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| format!("{text} milliseconds is out of range"));
    }
    DateTime::parse_from_rfc3339(text).map(|t| t.timestamp_millis()).map_err(|e| {
        format!("{text:?} is not a time ({e}); give RFC 3339 like 2026-12-06T10:00:00Z or milliseconds since the epoch")
    })
}

/// `message query`.
#[allow(clippy::print_stdout)]
pub async fn query(endpoints: &str, args: QueryArgs) -> anyhow::Result<()> {
    let max = args.max;
    let query = args.query()?;
    let admin = Admin::new(endpoints)?;
    let what = describe(&query);
    let messages = admin.query_messages(query, max).await.with_context(|| format!("cannot query messages {what}"))?;
    print!("{}", render(&messages));
    Ok(())
}

/// What a query looks for, for error messages.
fn describe(query: &MessageQuery) -> String {
    let topic = |t: &Option<String>| t.as_ref().map(|t| format!(" in topic {t}")).unwrap_or_default();
    match query {
        MessageQuery::Id { message_id, topic: t } => format!("by id {message_id:?}{}", topic(t)),
        MessageQuery::Key { key, topic: t, .. } => format!("by key {key:?}{}", topic(t)),
        MessageQuery::QueueOffset { topic, queue, offset } => format!("at offset {offset} of queue {queue} of {topic}"),
    }
}

/// The messages as text: a block of `name: value` lines each.
pub fn render(messages: &[QueriedMessage]) -> String {
    if messages.is_empty() {
        return "no messages found\n".to_string();
    }
    let mut out = String::new();
    for (i, m) in messages.iter().enumerate() {
        out.push_str(&format!("message {} of {}\n", i + 1, messages.len()));
        let offset = m.queue_offset.map_or_else(|| "-".to_string(), |o| o.to_string());
        let mut lines = vec![
            ("topic", m.topic.clone()),
            ("queue", m.queue.to_string()),
            ("queue offset", offset),
            ("message id", m.message_id.clone()),
            ("tag", m.tag.clone().unwrap_or_else(|| "-".to_string())),
            ("keys", m.keys.join(" ")),
            ("born", format!("{} from {}", time_text(m.born_time_ms), m.born_host)),
            ("stored", time_text(m.store_time_ms)),
            ("log index", format!("{} slot {}", m.log_index, m.slot)),
            ("body size", format!("{} bytes{}", m.body_size_bytes, if m.body_gzip { " (gzip)" } else { "" })),
        ];
        lines.extend(m.properties.iter().map(|(k, v)| ("property", format!("{k}={v}"))));
        lines.push(body_line(m));
        for (name, value) in lines {
            out.push_str(&format!("  {:<13} {value}\n", format!("{name}:")));
        }
    }
    out
}

fn time_text(ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => format!("{} ({ms} ms)", t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        None => format!("{ms} ms"),
    }
}

/// The body preview: printable text as it is, else the hex of its first bytes.
fn body_line(m: &QueriedMessage) -> (&'static str, String) {
    let preview = &m.body_preview[..];
    if preview.is_empty() && m.body_size_bytes > 0 {
        return ("body", "(the gzip body does not inflate)".to_string());
    }
    if let Some(text) = printable(preview) {
        return ("body", text.to_string());
    }
    let shown = &preview[..preview.len().min(HEX_BYTES)];
    let hex: String = shown.iter().map(|b| format!("{b:02x}")).collect();
    ("body (hex)", format!("{hex}{}", if shown.len() < preview.len() { " ..." } else { "" }))
}

/// The bytes as text, when they are UTF-8 (perhaps cut inside a last character) without
/// control characters other than tab and line breaks.
fn printable(bytes: &[u8]) -> Option<&str> {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) if e.error_len().is_none() => bytes.get(..e.valid_up_to()).and_then(|b| std::str::from_utf8(b).ok())?,
        Err(_) => return None,
    };
    text.chars().all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t')).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_milliseconds() {
        assert_eq!(parse_time("2026-12-06T10:00:00Z"), Ok(1_796_551_200_000));
        assert_eq!(parse_time("2026-12-06T11:00:00.250+01:00"), Ok(1_796_551_200_250));
        assert_eq!(parse_time("1796551200000"), Ok(1_796_551_200_000));
        assert_eq!(parse_time("0"), Ok(0));
        for bad in ["", "yesterday", "2026-12-06", "2026-13-01T00:00:00Z", "-5", "99999999999999999999"] {
            let e = parse_time(bad).expect_err(bad);
            assert!(e.contains("RFC 3339") || e.contains("out of range"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn bodies_print_as_text_or_hex() {
        assert_eq!(printable(b"order 1\nline two"), Some("order 1\nline two"));
        assert_eq!(printable("caf\u{e9}".as_bytes()), Some("caf\u{e9}"));
        assert_eq!(printable(&"caf\u{e9}".as_bytes()[..4]), Some("caf"), "cut inside the last character");
        assert_eq!(printable(b"\x00\x01"), None);
        assert_eq!(printable(b"\xff\xfe"), None);
        let m = QueriedMessage {
            body_preview: (0..100u8).collect::<Vec<u8>>().into(),
            body_size_bytes: 100,
            ..Default::default()
        };
        let (name, value) = body_line(&m);
        let want: String = (0..64u8).map(|b| format!("{b:02x}")).collect();
        assert_eq!((name, value), ("body (hex)", format!("{want} ...")));
    }

    #[test]
    fn messages_render_as_blocks() {
        let m = QueriedMessage {
            topic: "orders".into(),
            queue: 2,
            queue_offset: Some(7),
            message_id: "id-1".into(),
            tag: Some("created".into()),
            keys: vec!["k1".into(), "shared".into()],
            properties: [("a".to_string(), "b".to_string())].into_iter().collect(),
            born_time_ms: 1_796_551_200_000,
            store_time_ms: 1_796_551_200_005,
            born_host: "host-1".into(),
            body_size_bytes: 7,
            body_preview: bytes::Bytes::from_static(b"order 1"),
            log_index: 45,
            slot: 3,
            ..Default::default()
        };
        let want = "message 1 of 1
  topic:        orders
  queue:        2
  queue offset: 7
  message id:   id-1
  tag:          created
  keys:         k1 shared
  born:         2026-12-06T10:00:00.000Z (1796551200000 ms) from host-1
  stored:       2026-12-06T10:00:00.005Z (1796551200005 ms)
  log index:    45 slot 3
  body size:    7 bytes
  property:     a=b
  body:         order 1
";
        assert_eq!(render(&[m]), want);
        assert_eq!(render(&[]), "no messages found\n");
    }
}
