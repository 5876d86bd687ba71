//! The records `bench produce --record` and `bench consume --record` write for `mqadmin
//! check`: one line per event, fields separated by single spaces, times in microseconds
//! since the Unix epoch.
//!
//! ```text
//! A <start_us> <end_us> <producer> <seq> <queue> <offset> <message_id>   acknowledged send
//! F <start_us> <end_us> <producer> <seq> <error…>                          failed send (outcome unknown)
//! D <time_us> <consumer> <queue> <offset> <message_id> <attempt> <body>    delivery; body: ok | bad | foreign
//! K <time_us> <consumer> <queue> <offset> <message_id>                     ack confirmed by the broker
//! C <time_us> <node> <applied_index> <queue> <consumer_offset>             a node's committed offset, sampled
//! ```
//!
//! A queue is `<broker group>/<queue id>` (a topic's queue ids repeat in each group that
//! serves it); a bare `<queue id>` is a queue of an unnamed group.

use std::fs::File;
use std::io::{BufRead as _, BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use bytes::Bytes;

/// A queue of a topic: the broker group serving it and its id there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueRef {
    /// The broker group (empty: not recorded).
    pub broker: String,
    /// The queue id within the group.
    pub id: u32,
}

impl QueueRef {
    /// Queue `id` of `broker`.
    pub fn new(broker: &str, id: u32) -> Self {
        Self { broker: broker.to_string(), id }
    }
}

impl std::fmt::Display for QueueRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.broker.is_empty() { write!(f, "{}", self.id) } else { write!(f, "{}/{}", self.broker, self.id) }
    }
}

impl std::str::FromStr for QueueRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (broker, id) = s.rsplit_once('/').unwrap_or(("", s));
        let id = id.parse().map_err(|_| format!("{id:?} is not a queue id"))?;
        Ok(Self { broker: broker.to_string(), id })
    }
}

/// Longest record line accepted (a failed send's error text is cut to fit).
const MAX_LINE: usize = 4096;

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The body of message `seq` of producer `producer`: its name, then a pattern derived from
/// both, so a body that comes back altered or swapped is caught by [`check_body`].
pub fn pattern_body(producer: u32, seq: u64, size: usize) -> Bytes {
    let mut b = Vec::with_capacity(size.max(32));
    b.extend_from_slice(format!("p{producer}-s{seq}:").as_bytes());
    let mut x = (u64::from(producer) << 40) ^ seq ^ 0x9e37_79b9_7f4a_7c15;
    // Eight letters per step of the generator: the bodies are made on the benchmark's hot
    // path.
    while b.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let room = (size - b.len()).min(8);
        b.extend(x.to_le_bytes()[..room].iter().map(|byte| b'a' + byte % 26));
    }
    b.truncate(size.max(1));
    Bytes::from(b)
}

/// What a delivered body is: made by [`pattern_body`] and intact, made by it and altered, or
/// not made by it at all (another program's message on the topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyCheck {
    Ok,
    Bad,
    Foreign,
}

impl BodyCheck {
    fn word(self) -> &'static str {
        match self {
            BodyCheck::Ok => "ok",
            BodyCheck::Bad => "bad",
            BodyCheck::Foreign => "foreign",
        }
    }
}

/// Checks a delivered body against the pattern its head names.
pub fn check_body(body: &[u8]) -> BodyCheck {
    let Some(colon) = body.iter().take(48).position(|&c| c == b':') else { return BodyCheck::Foreign };
    let head = String::from_utf8_lossy(&body[..colon]);
    let parsed = head
        .strip_prefix('p')
        .and_then(|rest| rest.split_once("-s"))
        .and_then(|(p, s)| Some((p.parse::<u32>().ok()?, s.parse::<u64>().ok()?)));
    match parsed {
        Some((p, s)) if pattern_body(p, s, body.len()) == body => BodyCheck::Ok,
        Some(_) => BodyCheck::Bad,
        None => BodyCheck::Foreign,
    }
}

/// A record file being written; lines from many tasks, buffered, flushed on [`Recorder::finish`].
#[derive(Debug)]
pub struct Recorder {
    path: PathBuf,
    out: Mutex<BufWriter<File>>,
}

impl Recorder {
    /// Creates (or truncates) the file.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = File::create(path).with_context(|| format!("cannot create the record file {}", path.display()))?;
        Ok(Self { path: path.to_path_buf(), out: Mutex::new(BufWriter::with_capacity(1 << 20, file)) })
    }

    /// Appends one line (`fields` joined by spaces; newlines and over-long text cut).
    pub fn line(&self, fields: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
        let mut text = fields.to_string().replace(['\n', '\r'], " ");
        if text.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        let mut out = self.out.lock().map_err(|_| anyhow::anyhow!("the record writer panicked"))?;
        writeln!(out, "{text}").with_context(|| format!("cannot write to {}", self.path.display()))
    }

    /// An acknowledged send.
    #[allow(clippy::too_many_arguments)]
    pub fn acked(
        &self,
        start: u64,
        end: u64,
        producer: u32,
        seq: u64,
        queue: &QueueRef,
        offset: Option<u64>,
        id: &str,
    ) -> anyhow::Result<()> {
        let offset = offset.map_or_else(|| "-".to_string(), |o| o.to_string());
        self.line(format_args!("A {start} {end} {producer} {seq} {queue} {offset} {id}"))
    }

    /// A send that failed after the client's retries.
    pub fn failed(&self, start: u64, end: u64, producer: u32, seq: u64, error: &str) -> anyhow::Result<()> {
        self.line(format_args!("F {start} {end} {producer} {seq} {error}"))
    }

    /// A delivery.
    pub fn delivered(
        &self,
        consumer: u32,
        queue: &QueueRef,
        offset: u64,
        id: &str,
        attempt: u32,
        body: BodyCheck,
    ) -> anyhow::Result<()> {
        self.line(format_args!("D {} {consumer} {queue} {offset} {id} {attempt} {}", now_us(), body.word()))
    }

    /// An ack the broker confirmed.
    pub fn ack_confirmed(&self, consumer: u32, queue: &QueueRef, offset: u64, id: &str) -> anyhow::Result<()> {
        self.line(format_args!("K {} {consumer} {queue} {offset} {id}", now_us()))
    }

    /// A node's committed offset of a queue, at its applied index.
    pub fn committed(&self, node: u64, applied: u64, queue: &QueueRef, offset: u64) -> anyhow::Result<()> {
        self.line(format_args!("C {} {node} {applied} {queue} {offset}", now_us()))
    }

    /// Writes out what is buffered and syncs the file.
    pub fn finish(&self) -> anyhow::Result<()> {
        let mut out = self.out.lock().map_err(|_| anyhow::anyhow!("the record writer panicked"))?;
        out.flush().with_context(|| format!("cannot write to {}", self.path.display()))?;
        out.get_ref().sync_all().with_context(|| format!("cannot sync {}", self.path.display()))
    }
}

/// One record line, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Acked { start: u64, end: u64, producer: u32, seq: u64, queue: QueueRef, offset: Option<u64>, id: String },
    Failed { start: u64, end: u64, producer: u32, seq: u64, error: String },
    Delivered { time: u64, consumer: u32, queue: QueueRef, offset: u64, id: String, attempt: u32, body: BodyCheck },
    AckConfirmed { time: u64, consumer: u32, queue: QueueRef, offset: u64, id: String },
    Committed { time: u64, node: u64, applied: u64, queue: QueueRef, offset: u64 },
}

fn field<'a>(it: &mut impl Iterator<Item = &'a str>, name: &str) -> anyhow::Result<&'a str> {
    it.next().with_context(|| format!("the {name} field is missing"))
}

fn number<T: std::str::FromStr>(it: &mut std::str::SplitN<'_, char>, name: &str) -> anyhow::Result<T> {
    let text = field(it, name)?;
    text.parse().map_err(|_| anyhow::anyhow!("the {name} field {text:?} is not a number"))
}

fn queue(it: &mut std::str::SplitN<'_, char>) -> anyhow::Result<QueueRef> {
    let text = field(it, "queue")?;
    text.parse().map_err(|e| anyhow::anyhow!("the queue field: {e}"))
}

/// Parses one line.
pub fn parse_line(line: &str) -> anyhow::Result<Event> {
    let (kind, rest) = line.split_once(' ').with_context(|| "a record has a kind and fields")?;
    let fields = match kind {
        "A" => 7,
        "F" => 5,
        "D" => 7,
        "K" => 5,
        "C" => 5,
        _ => bail!("unknown record kind {kind:?}"),
    };
    let it = &mut rest.splitn(fields, ' ');
    Ok(match kind {
        "A" => Event::Acked {
            start: number(it, "start")?,
            end: number(it, "end")?,
            producer: number(it, "producer")?,
            seq: number(it, "seq")?,
            queue: queue(it)?,
            offset: match field(it, "offset")? {
                "-" => None,
                o => Some(o.parse().map_err(|_| anyhow::anyhow!("the offset field {o:?} is not a number"))?),
            },
            id: field(it, "message id")?.to_string(),
        },
        "F" => Event::Failed {
            start: number(it, "start")?,
            end: number(it, "end")?,
            producer: number(it, "producer")?,
            seq: number(it, "seq")?,
            error: field(it, "error").unwrap_or_default().to_string(),
        },
        "D" => Event::Delivered {
            time: number(it, "time")?,
            consumer: number(it, "consumer")?,
            queue: queue(it)?,
            offset: number(it, "offset")?,
            id: field(it, "message id")?.to_string(),
            attempt: number(it, "attempt")?,
            body: match field(it, "body")? {
                "ok" => BodyCheck::Ok,
                "bad" => BodyCheck::Bad,
                "foreign" => BodyCheck::Foreign,
                other => bail!("the body field {other:?} is not ok, bad or foreign"),
            },
        },
        "K" => Event::AckConfirmed {
            time: number(it, "time")?,
            consumer: number(it, "consumer")?,
            queue: queue(it)?,
            offset: number(it, "offset")?,
            id: field(it, "message id")?.to_string(),
        },
        _ => Event::Committed {
            time: number(it, "time")?,
            node: number(it, "node")?,
            applied: number(it, "applied index")?,
            queue: queue(it)?,
            offset: number(it, "offset")?,
        },
    })
}

/// Reads every event of a record file, calling `f` on each; a malformed line is an error
/// naming the file and line.
pub fn read(path: &Path, mut f: impl FnMut(Event)) -> anyhow::Result<u64> {
    let file = File::open(path).with_context(|| format!("cannot open the record file {}", path.display()))?;
    let mut lines = 0;
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {} at line {}", path.display(), n + 1))?;
        if line.is_empty() {
            continue;
        }
        f(parse_line(&line).with_context(|| format!("{} line {}: {line:?}", path.display(), n + 1))?);
        lines += 1;
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_checked_against_their_pattern() {
        let b = pattern_body(3, 77, 1024);
        assert_eq!(b.len(), 1024);
        assert_eq!(check_body(&b), BodyCheck::Ok);
        let mut altered = b.to_vec();
        altered[500] ^= 1;
        assert_eq!(check_body(&altered), BodyCheck::Bad);
        // Another message's body under this one's name.
        let mut swapped = pattern_body(3, 78, 1024).to_vec();
        swapped[..7].copy_from_slice(b"p3-s77:");
        assert_eq!(check_body(&swapped), BodyCheck::Bad);
        assert_eq!(check_body(b"hello"), BodyCheck::Foreign);
        assert_eq!(check_body(&pattern_body(1, 2, 3)), BodyCheck::Foreign, "too short to hold its name");
    }

    #[test]
    fn lines_read_back_as_written() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("r");
        let r = Recorder::create(&path)?;
        let q = QueueRef::new("broker-a", 5);
        r.acked(1, 2, 3, 4, &q, Some(6), "ID1")?;
        r.acked(1, 2, 3, 5, &QueueRef::new("", 5), None, "ID2")?;
        r.failed(7, 8, 9, 10, "deadline exceeded\nafter 3 attempts")?;
        r.delivered(1, &q, 6, "ID1", 1, BodyCheck::Ok)?;
        r.ack_confirmed(1, &q, 6, "ID1")?;
        r.committed(2, 100, &q, 7)?;
        r.finish()?;
        let mut events = Vec::new();
        assert_eq!(read(&path, |e| events.push(e))?, 6);
        assert_eq!(
            events[0],
            Event::Acked { start: 1, end: 2, producer: 3, seq: 4, queue: q.clone(), offset: Some(6), id: "ID1".into() }
        );
        assert!(matches!(&events[1], Event::Acked { offset: None, queue: QueueRef { id: 5, .. }, .. }));
        assert!(matches!(&events[1], Event::Acked { queue, .. } if queue.broker.is_empty()));
        assert_eq!(
            events[2],
            Event::Failed {
                start: 7,
                end: 8,
                producer: 9,
                seq: 10,
                error: "deadline exceeded after 3 attempts".into()
            }
        );
        assert!(
            matches!(&events[3], Event::Delivered { queue, offset: 6, attempt: 1, body: BodyCheck::Ok, .. } if *queue == q)
        );
        assert!(matches!(&events[4], Event::AckConfirmed { queue, offset: 6, .. } if *queue == q));
        assert!(matches!(&events[5], Event::Committed { node: 2, applied: 100, queue, offset: 7, .. } if *queue == q));
        Ok(())
    }

    #[test]
    fn malformed_lines_are_refused_with_the_field() -> anyhow::Result<()> {
        let e = parse_line("A 1 2 x 4 5 6 ID").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("producer"), "{e}");
        let e = parse_line("D 1 2 3 4 ID 1").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("body"), "{e}");
        assert!(parse_line("Z 1").err().is_some_and(|e| e.to_string().contains("unknown record kind")));
        let e = parse_line("K 1 2 broker-a/x 4 ID").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("queue") && e.contains("\"x\""), "{e}");
        assert!(parse_line("").is_err());
        Ok(())
    }
}
