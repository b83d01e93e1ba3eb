//! Keyframe request throttling.
