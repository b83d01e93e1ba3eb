//! Forwarding decisions.
