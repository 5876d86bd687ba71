//! The ids a client hands back: receipt handles (`raftmq_machine::Receipt`,
//! `r1.<queue>.<offset>.<pop id>.<broker group>`, and the broker's check of the group in
//! `parse_receipt`) and transaction ids (`broker::service::transaction`,
//! `t1.<log index>.<slot>.<broker group>`).
//!
//! Checked: nothing panics; an accepted handle or id names what it was made from, so
//! printing it again gives one that parses to the same; one made from any values parses
//! back to them whenever it is within the length limit and names a broker group.
//!
//! Input: a mode byte, then for modes 0 and 1 the text (seeds: valid handles and ids), for
//! modes 2 and 3 (through `arbitrary`) the values to make one from.

#![no_main]

use arbitrary::Unstructured;
use broker::service::fuzzing::parse_receipt;
use broker::service::transaction;
use libfuzzer_sys::fuzz_target;
use raftmq_machine::receipt::MAX_RECEIPT_LEN;
use raftmq_machine::{LogIndex, PopId, QueueId, QueueOffset, Receipt, Slot};
use raftmq_proto::rocketmq::v2::Code;

/// The limit of `transaction::parse`.
const MAX_TRANSACTION_ID_BYTES: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let _ = match mode % 4 {
        0 => {
            receipt_text(&text);
            Ok(())
        }
        1 => {
            transaction_text(&text);
            Ok(())
        }
        2 => receipt_values(&mut Unstructured::new(rest)),
        _ => transaction_values(&mut Unstructured::new(rest)),
    };
});

fn receipt_text(text: &str) {
    let parsed = text.parse::<Receipt>();
    let checked = parse_receipt(text, "broker-a");
    let Ok(r) = parsed else {
        let refusal = checked.expect_err("a handle that does not parse is refused");
        assert_eq!(refusal.code, Code::InvalidReceiptHandle);
        return;
    };
    assert!(!r.broker_group.is_empty(), "{text:?} names no broker group");
    let printed = r.to_string();
    assert!(printed.len() <= text.len(), "{text:?} prints longer, as {printed:?}");
    assert_eq!(printed.parse::<Receipt>().as_ref(), Ok(&r), "{text:?} printed as {printed:?}");
    match checked {
        Ok(c) => assert!(c == r && r.broker_group == "broker-a"),
        Err(refusal) => assert!(r.broker_group != "broker-a" && refusal.code == Code::InvalidReceiptHandle),
    }
}

fn transaction_text(text: &str) {
    let Ok((group, key)) = transaction::parse(text) else { return };
    assert!(!group.is_empty() && key.0.0 != 0, "{text:?} names no broker group or log entry");
    let printed = transaction::encode(&group, key);
    assert!(printed.len() <= text.len(), "{text:?} prints longer, as {printed:?}");
    let again = transaction::parse(&printed).expect("a printed transaction id parses");
    assert_eq!(again, (group, key), "{text:?} printed as {printed:?}");
}

fn receipt_values(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let r = Receipt {
        queue: QueueId(u.arbitrary()?),
        offset: QueueOffset(u.arbitrary()?),
        pop_id: PopId(u.arbitrary()?),
        broker_group: u.arbitrary()?,
    };
    let printed = r.to_string();
    let parsed = printed.parse::<Receipt>();
    if printed.len() <= MAX_RECEIPT_LEN && !r.broker_group.is_empty() {
        assert_eq!(parsed, Ok(r), "{printed:?}");
    } else {
        assert!(parsed.is_err(), "{printed:?} parsed as {parsed:?}");
    }
    receipt_text(&printed);
    Ok(())
}

fn transaction_values(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let group: String = u.arbitrary()?;
    let key = (LogIndex(u.arbitrary()?), Slot(u.arbitrary()?));
    let printed = transaction::encode(&group, key);
    let parsed = transaction::parse(&printed);
    if printed.len() <= MAX_TRANSACTION_ID_BYTES && !group.is_empty() && key.0.0 != 0 {
        assert_eq!(parsed.as_ref().ok(), Some(&(group, key)), "{printed:?}: {parsed:?}");
    } else {
        let refusal = parsed.expect_err("an id past its limits is refused");
        assert_eq!(refusal.code, Code::InvalidTransactionId);
    }
    transaction_text(&printed);
    Ok(())
}
