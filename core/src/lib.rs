//! The soup engine.
