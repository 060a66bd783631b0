//! flowtel exporter (placeholder).
