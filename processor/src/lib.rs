//! flowtel processor (placeholder).
