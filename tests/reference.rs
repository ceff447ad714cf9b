//! The decoder and PEFT import against PyTorch/transformers/PEFT: logits of the committed tiny
//! models (tests/fixtures/make_reference.py) must match to 1e-4.

use candle_core::{DType, Device, Tensor};
use soup_core::lora::peft::load_peft;
use soup_core::lora::AdapterStack;
use soup_core::model::load::load_hf_weights;
use soup_core::model::{ForwardInput, Llama, Mode};
use soup_core::test_support::max_abs_diff;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/reference")
}

fn logits(model: &Llama, ids: &Tensor, stack: &AdapterStack, mode: Mode) -> Tensor {
    let ids = ids.to_dtype(DType::U32).unwrap().unsqueeze(0).unwrap();
    model
        .forward(&ids, &ForwardInput::default(), None, stack, mode)
        .unwrap()
        .squeeze(0)
        .unwrap()
}

fn check_model(name: &str, adapters: &[&str]) {
    let dev = Device::Cpu;
    let model = load_hf_weights(&fixtures().join(name), &dev).unwrap();
    let refs =
        candle_core::safetensors::load(fixtures().join(format!("logits-{name}.safetensors")), &dev)
            .unwrap();
    for i in 0..3 {
        let ids = &refs[&format!("ids_{i}")];
        let want = &refs[&format!("base_{i}")];
        for mode in [
            Mode::Infer,
            Mode::Train {
                dropout: 0.0,
                seed: 0,
            },
        ] {
            let got = logits(&model, ids, &AdapterStack::base(), mode);
            let d = max_abs_diff(&got, want);
            assert!(d < 1e-4, "{name} text {i} {mode:?}: max abs diff {d}");
        }
    }
    for a in adapters {
        let adapter = load_peft(&fixtures().join(name).join(a), &dev)
            .or_else(|_| load_peft(&fixtures().join(a), &dev))
            .unwrap();
        let stack = AdapterStack::single(adapter);
        let want = &refs[&format!("{a}_0")];
        for mode in [
            Mode::Infer,
            Mode::Train {
                dropout: 0.0,
                seed: 0,
            },
        ] {
            let got = logits(&model, &refs["ids_0"], &stack, mode);
            let d = max_abs_diff(&got, want);
            assert!(d < 1e-4, "{name}+{a} {mode:?}: max abs diff {d}");
        }
    }
}

#[test]
fn tiny_llama_matches_transformers() {
    check_model(
        "tiny-llama",
        &["adapter-a", "adapter-b", "adapter-c", "adapter-rs"],
    );
}

#[test]
fn sharded_llama3_rope_scaling_matches_transformers() {
    check_model("tiny-llama3", &[]);
}

#[test]
fn qwen2_with_biases_matches_transformers() {
    check_model("tiny-qwen2", &["adapter-qwen"]);
}
