//! soup store.
