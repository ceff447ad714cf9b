//! End-to-end tests across crates: the job engine and recipes driving core, store and evals
//! together on the tiny fixture models, and the decoder against PyTorch's logits
//! (`fixtures/make_reference.py`). The tests are the `[[test]]` targets beside this file; tests
//! that need the `soup` binary itself live in the binary's crate (`tui/tests`), where Cargo
//! provides its path. Shared helpers come from `soup_core::test_support`.
