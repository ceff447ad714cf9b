//! soup tasks.
