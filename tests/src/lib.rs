//! Multi-process cluster tests and the history checker (not built yet).
