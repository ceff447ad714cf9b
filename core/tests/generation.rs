//! Generation against transformers' greedy output, and batched greedy equal to unbatched.

use candle_core::{DType, Device};
use soup_core::generate::{generate_ids, SamplingConfig};
use soup_core::lora::peft::load_peft;
use soup_core::lora::AdapterStack;
use soup_core::model::load::load_hf_weights;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/reference")
}

fn ids(t: &candle_core::Tensor) -> Vec<u32> {
    t.to_dtype(DType::U32).unwrap().to_vec1::<u32>().unwrap()
}

#[test]
fn greedy_matches_transformers_generate() {
    let dev = Device::Cpu;
    let model = load_hf_weights(&fixtures().join("tiny-llama"), &dev).unwrap();
    let refs =
        candle_core::safetensors::load(fixtures().join("generate-tiny-llama.safetensors"), &dev)
            .unwrap();
    let prompt = ids(&refs["prompt_ids"]);
    let cfg = SamplingConfig {
        max_new_tokens: 10,
        ..Default::default()
    };
    let got = generate_ids(
        &model,
        &AdapterStack::base(),
        std::slice::from_ref(&prompt),
        &cfg,
        &[],
        0,
        &mut |_, _| false,
    )
    .unwrap();
    assert_eq!(got[0], ids(&refs["base_new_ids"]));
    let adapter = load_peft(&fixtures().join("adapter-a"), &dev).unwrap();
    let got = generate_ids(
        &model,
        &AdapterStack::single(adapter),
        &[prompt],
        &cfg,
        &[],
        0,
        &mut |_, _| false,
    )
    .unwrap();
    assert_eq!(got[0], ids(&refs["adapter-a_new_ids"]));
}

#[test]
fn batched_greedy_equals_unbatched() {
    let dev = Device::Cpu;
    let model = load_hf_weights(&fixtures().join("tiny-llama"), &dev).unwrap();
    let prompts: Vec<Vec<u32>> = vec![
        vec![5, 17, 90, 33],
        vec![200, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
        vec![42],
        vec![300, 301, 302, 303, 304, 305, 306],
    ];
    let cfg = SamplingConfig {
        max_new_tokens: 20,
        ..Default::default()
    };
    let stack = AdapterStack::single(load_peft(&fixtures().join("adapter-b"), &dev).unwrap());
    // Stop row 1 early through the callback, and treat one token as EOS, so rows leave the
    // batch at different steps.
    let eos = [7u32];
    let batched = generate_ids(&model, &stack, &prompts, &cfg, &eos, 0, &mut |r, t| {
        r == 1 && t.len() == 5
    })
    .unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let single = generate_ids(
            &model,
            &stack,
            std::slice::from_ref(p),
            &cfg,
            &eos,
            0,
            &mut |_, t| i == 1 && t.len() == 5,
        )
        .unwrap();
        assert_eq!(batched[i], single[0], "row {i}");
    }
    assert_eq!(batched[1].len(), 5);
}

#[test]
fn sampling_is_seeded_and_context_limit_is_enforced() {
    let dev = Device::Cpu;
    let model = load_hf_weights(&fixtures().join("tiny-llama"), &dev).unwrap();
    let cfg = SamplingConfig {
        max_new_tokens: 12,
        temperature: 1.0,
        top_p: Some(0.9),
        seed: 7,
    };
    let a = generate_ids(
        &model,
        &AdapterStack::base(),
        &[vec![1, 2, 3]],
        &cfg,
        &[],
        0,
        &mut |_, _| false,
    )
    .unwrap();
    let b = generate_ids(
        &model,
        &AdapterStack::base(),
        &[vec![1, 2, 3]],
        &cfg,
        &[],
        0,
        &mut |_, _| false,
    )
    .unwrap();
    assert_eq!(a, b);
    let long = vec![5u32; 250];
    let cfg = SamplingConfig {
        max_new_tokens: 10,
        ..Default::default()
    };
    let err = generate_ids(
        &model,
        &AdapterStack::base(),
        &[long],
        &cfg,
        &[],
        0,
        &mut |_, _| false,
    )
    .unwrap_err();
    assert!(err.to_string().contains("256"), "{err}");
}
