//! Core tests (simulated time, in-memory peers).
