//! Multi-process cluster tests: a harness that runs real `mqbroker` processes
//! ([`cluster`]) and a workload that records what was acknowledged and checks it
//! ([`workload`]), used by the tests under `tests/tests/`.

pub mod cluster;
pub mod workload;
