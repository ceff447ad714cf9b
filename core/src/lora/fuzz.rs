//! Fuzz tests of PEFT adapter import: `adapter_config.json` and `adapter_model.safetensors`,
//! read from a directory (`soup adapter import`) and from the store's bytes (`from_bytes`,
//! what every run does with a stored adapter). No panic, no hang, no allocation out of
//! proportion to the input (see `fuzz/harness.rs`).

use super::peft::{from_bytes, load_peft, CONFIG_FILE, WEIGHTS_FILE};
use crate::fuzz_harness::{fuzz, run_guarded, Target};
use candle_core::Device;
use std::path::PathBuf;

fn fixture(file: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/reference/adapter-a")
        .join(file);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The fixture's config with an alpha pattern and a rank pattern, so the regex path runs.
fn config_with_patterns() -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixture(CONFIG_FILE)).expect("fixture config is JSON");
    v["alpha_pattern"] = serde_json::json!({"q_proj": 32, "layers\\.1\\..*": 4});
    v["rank_pattern"] = serde_json::json!({"v_proj": 8});
    serde_json::to_vec(&v).expect("serializes")
}

fn load_dir(config: &[u8], weights: &[u8]) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(CONFIG_FILE), config).expect("write");
    std::fs::write(dir.path().join(WEIGHTS_FILE), weights).expect("write");
    let Ok(a) = load_peft(dir.path(), &Device::Cpu) else {
        return false;
    };
    let _ = a.num_params();
    for p in a.pairs.values() {
        let _ = p.delta();
    }
    true
}

#[test]
fn fuzz_peft_adapter_config() {
    let weights = fixture(WEIGHTS_FILE);
    fuzz(
        Target {
            name: "adapter_config.json",
            seeds: vec![fixture(CONFIG_FILE), config_with_patterns()],
            hot_len: 0,
            json: true,
            cases: 1500,
        },
        move |config| load_dir(config, &weights),
    );
}

#[test]
fn fuzz_peft_adapter_safetensors() {
    let seed = fixture(WEIGHTS_FILE);
    let header = 8 + u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")) as usize;
    let config: serde_json::Value =
        serde_json::from_slice(&config_with_patterns()).expect("config is JSON");
    fuzz(
        Target {
            name: "adapter_model.safetensors (store bytes)",
            seeds: vec![seed],
            hot_len: header,
            json: false,
            cases: 1500,
        },
        move |bytes| {
            let Ok(a) = from_bytes("fuzzed", bytes, &config, &Device::Cpu) else {
                return false;
            };
            for p in a.pairs.values() {
                let _ = p.delta();
            }
            true
        },
    );
}

/// An adapter file whose header claims a tensor of 2^60 elements, or a header of 2^60 bytes,
/// is an error before anything is allocated for it.
#[test]
fn peft_huge_claims_are_refused() {
    let config: serde_json::Value =
        serde_json::from_slice(&fixture(CONFIG_FILE)).expect("config is JSON");
    let header = r#"{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight":{"dtype":"F32","shape":[1073741824,1073741824],"data_offsets":[0,4]}}"#;
    let mut big_tensor = (header.len() as u64).to_le_bytes().to_vec();
    big_tensor.extend_from_slice(header.as_bytes());
    big_tensor.extend_from_slice(&[0; 4]);
    let mut big_header = (1u64 << 60).to_le_bytes().to_vec();
    big_header.extend_from_slice(b"{}");
    for bytes in [big_tensor, big_header] {
        let c = config.clone();
        let outcome = run_guarded(bytes, move |b| {
            from_bytes("huge", b, &c, &Device::Cpu)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        assert!(matches!(outcome, Ok(Err(_))), "{outcome:?}");
    }
}
