//! Subscription filters: RocketMQ's SQL92 filter (`raftmq_machine::sql`: lexer, parser,
//! evaluator), tag expressions (`TagFilter`) and the broker's choice between them
//! (`Filter::of`).
//!
//! Checked: nothing panics and the evaluation ends for any text and properties; an error
//! names a column inside the text; a condition and its negation never both match a message
//! (three-valued logic: an unknown or stopped evaluation matches neither), and `(C) AND (C)`
//! matches exactly when `C` does; `Filter::of` accepts exactly what the parsers accept; a
//! tag expression matches each tag it lists.
//!
//! Input: the expression, then NUL-separated `name=value` properties of the message judged
//! (seeds: plain SQL92 text).

#![no_main]

use std::collections::BTreeMap;

use broker::service::filter::Filter;
use libfuzzer_sys::fuzz_target;
use raftmq_machine::sql::{MAX_SQL_LEN, SqlError, SqlFilter};
use raftmq_machine::types::{TagFilter, tag_hash};
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::Code;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let text = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let properties: BTreeMap<String, String> = parts
        .take(16)
        .map(|p| {
            let p = String::from_utf8_lossy(p);
            match p.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (p.to_string(), String::new()),
            }
        })
        .collect();
    sql(&text, &properties);
    tags(&text);
});

fn sql(text: &str, properties: &BTreeMap<String, String>) {
    let parsed = SqlFilter::parse(text);
    let of = Filter::of(Some(&pb::FilterExpression { r#type: pb::FilterType::Sql as i32, expression: text.into() }));
    assert_eq!(parsed.is_ok(), of.is_ok(), "SqlFilter::parse and Filter::of disagree on {text:?}");
    if let Err(refusal) = &of {
        assert_eq!(refusal.code, Code::IllegalFilterExpression);
    }
    let filter = match parsed {
        Ok(f) => f,
        Err(e) => {
            if let SqlError::Invalid { column, .. } = &e {
                assert!(*column >= 1 && *column <= text.chars().count() + 1, "column {column} of {text:?}: {e}");
            }
            if let SqlError::TooLong(len) = e {
                assert!(len > MAX_SQL_LEN && len == text.len());
            }
            return;
        }
    };
    assert_eq!(filter.text(), text);
    let get = |name: &str| properties.get(name).map(String::as_str);
    let matched = filter.matches(get);
    assert_eq!(filter.matches(get), matched, "two evaluations of {text:?} differ");
    // The line break ends a trailing `--` comment.
    if let Ok(negated) = SqlFilter::parse(&format!("NOT ({text}\n)")) {
        assert!(!(matched && negated.matches(get)), "{text:?} and its negation both match {properties:?}");
    }
    if let Ok(twice) = SqlFilter::parse(&format!("({text}\n) AND ({text}\n)")) {
        assert_eq!(twice.matches(get), matched, "(C) AND (C) differs from C = {text:?} on {properties:?}");
    }
}

fn tags(text: &str) {
    let of = Filter::of(Some(&pb::FilterExpression { r#type: pb::FilterType::Tag as i32, expression: text.into() }));
    let Ok(filter) = TagFilter::parse(text) else {
        assert!(of.is_err(), "Filter::of accepts the tag expression {text:?} TagFilter refuses");
        return;
    };
    assert!(of.is_ok(), "Filter::of refuses the tag expression {text:?} TagFilter accepts");
    for tag in text.split("||").map(str::trim).filter(|t| !t.is_empty()) {
        assert!(filter.matches(Some(tag_hash(tag))), "{text:?} does not match its own tag {tag:?}");
    }
}
