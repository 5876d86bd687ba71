//! A bounded cache of the newest records, which serves reads of the tail (replication,
//! consumers that keep up) without touching the files. Records not yet written to a file
//! are always in it; written ones are evicted oldest first beyond the byte budget.

use std::collections::VecDeque;

use crate::record::Record;

#[derive(Debug)]
pub(crate) struct TailCache {
    entries: VecDeque<Record>,
    bytes: usize,
    capacity: usize,
}

impl TailCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { entries: VecDeque::new(), bytes: 0, capacity }
    }

    /// Index of the oldest cached record.
    pub(crate) fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|r| r.index)
    }

    pub(crate) fn push(&mut self, record: Record) {
        if let Some(last) = self.entries.back()
            && last.index + 1 != record.index
        {
            self.clear();
        }
        self.bytes += record.payload.len();
        self.entries.push_back(record);
    }

    /// Cached records in `from..to`, in order.
    pub(crate) fn range(&self, from: u64, to: u64) -> impl Iterator<Item = &Record> {
        let skip = self.first_index().map_or(0, |f| from.saturating_sub(f) as usize);
        self.entries.iter().skip(skip).take_while(move |r| r.index < to)
    }

    pub(crate) fn truncate_after(&mut self, last_kept: Option<u64>) {
        while let Some(back) = self.entries.back() {
            if last_kept.is_some_and(|k| back.index <= k) {
                break;
            }
            self.bytes -= back.payload.len();
            self.entries.pop_back();
        }
    }

    /// Drops the oldest records that are already in a file while over budget.
    pub(crate) fn evict(&mut self, written: Option<u64>) {
        let Some(written) = written else { return };
        while self.bytes > self.capacity {
            match self.entries.front() {
                Some(front) if front.index <= written => {
                    self.bytes -= front.payload.len();
                    self.entries.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Drops every record up to and including `index` (they must all be written).
    pub(crate) fn drop_through(&mut self, index: u64) {
        while let Some(front) = self.entries.front() {
            if front.index > index {
                break;
            }
            self.bytes -= front.payload.len();
            self.entries.pop_front();
        }
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn rec(index: u64, len: usize) -> Record {
        Record { index, term: 1, payload: Bytes::from(vec![0u8; len]) }
    }

    #[test]
    fn evicts_only_written_records_and_keeps_order() {
        let mut c = TailCache::new(250);
        for i in 1..=5 {
            c.push(rec(i, 100));
        }
        c.evict(Some(2));
        // Over budget, but only 1 and 2 are written.
        assert_eq!(c.first_index(), Some(3));
        c.evict(Some(5));
        assert_eq!(c.first_index(), Some(4));
        let got: Vec<u64> = c.range(0, 10).map(|r| r.index).collect();
        assert_eq!(got, vec![4, 5]);
    }

    #[test]
    fn truncate_and_gap_reset() {
        let mut c = TailCache::new(1 << 20);
        for i in 10..20 {
            c.push(rec(i, 1));
        }
        c.truncate_after(Some(14));
        assert_eq!(c.range(0, 100).map(|r| r.index).collect::<Vec<_>>(), (10..15).collect::<Vec<_>>());
        c.push(rec(30, 1));
        assert_eq!(c.first_index(), Some(30));
        c.truncate_after(None);
        assert_eq!(c.first_index(), None);
        assert_eq!(c.range(12, 13).count(), 0);
    }
}
