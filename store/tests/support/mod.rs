//! Helpers shared by the integration tests.
pub mod crash_record;
