//! Helpers for flowtel end-to-end tests (placeholder).
