//! Fuzz tests of the model's file parsers (GGUF, safetensors weights, `config.json`, the
//! tokenizer files): thousands of mutated files each, no panic, no hang, no allocation out of
//! proportion to the file (see `fuzz/harness.rs`), plus one test per length field that a small
//! file claiming a huge size is refused at once.

use super::config::{Llama3RopeScaling, ModelConfig};
use super::gguf::{read_gguf, write_gguf};
use super::load::read_safetensors;
use super::tokenizer::{ChatMessage, SoupTokenizer};
use crate::fuzz_harness::{fuzz, run_guarded, Target};
use candle_core::quantized::{gguf_file, QTensor};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/reference")
}

fn fixture_tokenizer() -> SoupTokenizer {
    SoupTokenizer::from_hf_dir(&fixtures().join("tokenizer")).expect("fixture tokenizer")
}

/// A one-layer model small enough that the tokenizer metadata is most of the file.
fn tiny_gguf(arch: &str, llama3_rope: bool) -> Vec<u8> {
    let dev = Device::Cpu;
    let mut config = ModelConfig::from_json(&format!(
        r#"{{"architectures":["{arch}"],"hidden_size":8,"intermediate_size":8,
        "vocab_size":16,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,
        "rms_norm_eps":1e-6,"rope_theta":10000.0,"max_position_embeddings":64,
        "tie_word_embeddings":true,"bos_token_id":1,"eos_token_id":2}}"#
    ))
    .expect("tiny config");
    if llama3_rope {
        config.rope_scaling = Some(Llama3RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 16,
        });
    }
    let mut t = HashMap::new();
    let mut add = |name: &str, shape: &[usize]| {
        let x = Tensor::randn(0f32, 1f32, shape, &dev).expect("randn");
        t.insert(name.to_string(), x);
    };
    add("model.embed_tokens.weight", &[16, 8]);
    add("model.norm.weight", &[8]);
    let p = "model.layers.0";
    for (name, shape) in [
        ("self_attn.q_proj.weight", &[8, 8][..]),
        ("self_attn.k_proj.weight", &[4, 8]),
        ("self_attn.v_proj.weight", &[4, 8]),
        ("self_attn.o_proj.weight", &[8, 8]),
        ("mlp.gate_proj.weight", &[8, 8]),
        ("mlp.up_proj.weight", &[8, 8]),
        ("mlp.down_proj.weight", &[8, 8]),
        ("input_layernorm.weight", &[8]),
        ("post_attention_layernorm.weight", &[8]),
    ] {
        add(&format!("{p}.{name}"), shape);
    }
    if config.attention_bias {
        add(&format!("{p}.self_attn.q_proj.bias"), &[8]);
        add(&format!("{p}.self_attn.k_proj.bias"), &[4]);
        add(&format!("{p}.self_attn.v_proj.bias"), &[4]);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tiny.gguf");
    write_gguf(&path, &config, &t, &fixture_tokenizer()).expect("writes");
    std::fs::read(&path).expect("reads back")
}

fn parse_gguf(bytes: &[u8]) -> crate::Result<super::gguf::GgufModel> {
    read_gguf(
        &mut Cursor::new(bytes),
        Path::new("fuzz.gguf"),
        &Device::Cpu,
        &|_, _, _| {},
    )
}

/// Where the tensor data of a GGUF starts: everything before is header.
fn header_len(bytes: &[u8]) -> usize {
    gguf_file::Content::read(&mut Cursor::new(bytes))
        .map(|c| c.tensor_data_offset as usize)
        .unwrap_or(0)
}

#[test]
fn fuzz_gguf() {
    let seeds = vec![
        tiny_gguf("LlamaForCausalLM", true),
        tiny_gguf("Qwen2ForCausalLM", false),
    ];
    let hot_len = header_len(&seeds[0]);
    assert!(parse_gguf(&seeds[0]).is_ok() && parse_gguf(&seeds[1]).is_ok());
    fuzz(
        Target {
            name: "gguf",
            seeds,
            hot_len,
            json: false,
            cases: 3000,
        },
        |bytes| match parse_gguf(bytes) {
            Ok(m) => {
                let _ = m.tokenizer.encode("Hello, world 12345 <|im_start|>", true);
                true
            }
            Err(_) => false,
        },
    );
}

/// A GGUF header with the given metadata (key, type, encoded value) and tensor infos (name,
/// dims, ggml type, offset), version 3, and `tail` bytes after it.
fn gguf_header(kvs: &[(&str, u32, Vec<u8>)], tensors: &[(&str, &[u64], u32, u64)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0x4655_4747u32.to_le_bytes());
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    b.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    let string = |b: &mut Vec<u8>, s: &str| {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    for (k, ty, v) in kvs {
        string(&mut b, k);
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(v);
    }
    for (name, dims, ty, offset) in tensors {
        string(&mut b, name);
        b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in *dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
    }
    b.extend_from_slice(&[0u8; 64]);
    b
}

/// Asserts that parsing `bytes` returns an error mentioning `needle`, quickly and without a
/// large allocation.
fn refused(bytes: Vec<u8>, needle: &'static str) {
    let outcome = run_guarded(bytes, |b| {
        parse_gguf(b).map(|_| ()).map_err(|e| e.to_string())
    });
    match outcome {
        Ok(Err(msg)) => assert!(msg.contains(needle), "{msg}"),
        Ok(Ok(())) => panic!("accepted; expected an error about {needle}"),
        Err(why) => panic!("{why}"),
    }
}

#[test]
fn gguf_huge_claimed_lengths_are_refused_before_allocating() {
    // A key of 2^40 bytes.
    let mut b = gguf_header(&[], &[]);
    b[16..24].copy_from_slice(&1u64.to_le_bytes());
    b.splice(24..24, (1u64 << 40).to_le_bytes());
    refused(b, "claims");
    // A string value of 2^40 bytes.
    let mut v = (1u64 << 40).to_le_bytes().to_vec();
    v.extend_from_slice(b"abc");
    refused(gguf_header(&[("general.name", 8, v)], &[]), "claims");
    // An array of 2^60 u32 and one of 2^60 strings.
    for item in [4u32, 8] {
        let mut v = item.to_le_bytes().to_vec();
        v.extend_from_slice(&(1u64 << 60).to_le_bytes());
        refused(gguf_header(&[("a", 9, v)], &[]), "claims");
    }
    // 2^60 metadata entries in the counts.
    let mut b = gguf_header(&[], &[]);
    b[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
    refused(b, "more than");
    // A tensor of 2^60 elements, and one whose dims overflow u64.
    refused(
        gguf_header(&[], &[("token_embd.weight", &[1 << 30, 1 << 30], 0, 0)]),
        "more elements",
    );
    refused(
        gguf_header(&[], &[("token_embd.weight", &[u64::MAX, 3], 0, 0)]),
        "more elements",
    );
    // Nested arrays deeper than any file has.
    let mut v = Vec::new();
    for _ in 0..40 {
        v.extend_from_slice(&9u32.to_le_bytes());
        v.extend_from_slice(&1u64.to_le_bytes());
    }
    v.extend_from_slice(&4u32.to_le_bytes());
    v.extend_from_slice(&0u64.to_le_bytes());
    refused(gguf_header(&[("a", 9, v)], &[]), "nest");
}

/// Regression (found by `fuzz_gguf` at 25k cases): a tensor with a dimension of 0 made
/// candle build a slice from the dangling pointer of an empty Vec<u8> cast to its block type,
/// undefined behaviour that debug builds abort on.
#[test]
fn gguf_empty_tensor_is_an_error() {
    refused(
        gguf_header(&[], &[("token_embd.weight", &[0, 8], 1, 0)]),
        "dimension of 0",
    );
}

/// Regression: `general.alignment = 0` made candle's reader divide by zero (a panic).
#[test]
fn gguf_zero_alignment_is_an_error() {
    refused(
        gguf_header(
            &[("general.alignment", 4, 0u32.to_le_bytes().to_vec())],
            &[],
        ),
        "alignment",
    );
}

/// The seed's metadata, with `change` applied, written with the seed's tensors where
/// `tensors` does not replace them.
fn rewrite(
    seed: &[u8],
    change: impl FnOnce(&mut HashMap<String, gguf_file::Value>),
    tensors: Vec<(&str, QTensor)>,
) -> Vec<u8> {
    let mut r = Cursor::new(seed);
    let content = gguf_file::Content::read(&mut r).expect("seed reads");
    let mut md = content.metadata.clone();
    change(&mut md);
    let mut all: Vec<(String, QTensor)> = Vec::new();
    for name in content.tensor_infos.keys() {
        if tensors.iter().all(|(n, _)| n != name) {
            all.push((
                name.clone(),
                content.tensor(&mut r, name, &Device::Cpu).expect("t"),
            ));
        }
    }
    for (n, t) in tensors {
        all.push((n.to_string(), t));
    }
    let md_refs: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = all.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &md_refs, &t_refs).expect("writes");
    out.into_inner()
}

/// Regression: `unpermute_qk` (public, fed with what a GGUF header claims) indexed `dims[0]`
/// of a scalar and computed `n_head * 2` unchecked: both panicked.
#[test]
fn unpermute_refuses_scalars_and_absurd_head_counts() {
    use super::gguf::{permute_qk, unpermute_qk};
    let scalar = Tensor::new(1f32, &Device::Cpu).expect("scalar");
    assert!(unpermute_qk(&scalar, 1).is_err());
    assert!(permute_qk(&scalar, 1).is_err());
    let w = Tensor::zeros((4, 2), candle_core::DType::F32, &Device::Cpu).expect("zeros");
    assert!(unpermute_qk(&w, usize::MAX).is_err());
    assert!(permute_qk(&w, usize::MAX / 2 + 1).is_err());
    assert!(unpermute_qk(&w, 2).is_ok());
}

/// Regression: with `rope_freqs.weight` present, a huge `key_length` made the loader compute
/// 2^49 expected rope factors before comparing them with the two stored ones.
#[test]
fn gguf_huge_head_dim_with_rope_factors_is_an_error() {
    let seed = tiny_gguf("LlamaForCausalLM", true);
    let bytes = rewrite(
        &seed,
        |md| {
            md.insert(
                "llama.attention.key_length".into(),
                gguf_file::Value::U64(1 << 50),
            );
        },
        vec![],
    );
    refused(bytes, "rope factors");
}

/// Regression: a context length of 2^40 passed the GGUF loader and the decoder would then
/// build 2^40-row rotary tables.
#[test]
fn gguf_huge_context_length_is_an_error() {
    let seed = tiny_gguf("Qwen2ForCausalLM", false);
    let bytes = rewrite(
        &seed,
        |md| {
            md.insert(
                "qwen2.context_length".into(),
                gguf_file::Value::U64(1 << 40),
            );
        },
        vec![],
    );
    refused(bytes, "max_position_embeddings");
}

const SMOL_CONFIG: &str = r#"{"architectures":["LlamaForCausalLM"],"hidden_size":576,"intermediate_size":1536,
    "vocab_size":49152,"num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,
    "rms_norm_eps":1e-5,"rope_theta":100000,"max_position_embeddings":8192,"tie_word_embeddings":true,
    "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
    "original_max_position_embeddings":8192},"bos_token_id":1,"eos_token_id":[2, 3]}"#;

#[test]
fn fuzz_config_json() {
    let qwen = std::fs::read(fixtures().join("tiny-qwen2/config.json")).expect("qwen2 config");
    let llama3 = std::fs::read(fixtures().join("tiny-llama3/config.json")).expect("llama3 config");
    fuzz(
        Target {
            name: "config.json",
            seeds: vec![SMOL_CONFIG.as_bytes().to_vec(), qwen, llama3],
            hot_len: 0,
            json: true,
            cases: 3000,
        },
        |bytes| {
            let text = String::from_utf8_lossy(bytes);
            let Ok(c) = ModelConfig::from_json(&text) else {
                return false;
            };
            // What the decoder allocates from the config alone must be what it claims.
            let freqs = c.rope_inv_freq();
            assert_eq!(freqs.len(), c.head_dim.div_ceil(2));
            let _ = ModelConfig::from_json(&c.to_hf_json().to_string());
            true
        },
    );
}

/// Regression: `max_position_embeddings: 2^40` (or a head_dim of 2^40) was accepted, and the
/// decoder sizes its rotary tables from them alone.
#[test]
fn config_huge_sizes_are_refused() {
    for (key, value) in [
        ("max_position_embeddings", "1099511627776"),
        ("num_hidden_layers", "1152921504606846976"),
        ("vocab_size", "18446744073709551615"),
        ("hidden_size", "1099511627776"),
    ] {
        let mut v: serde_json::Value = serde_json::from_str(SMOL_CONFIG).expect("json");
        v[key] = serde_json::from_str(value).expect("number");
        let err = ModelConfig::from_json(&v.to_string()).expect_err(key);
        assert!(err.to_string().contains(key), "{err}");
    }
    let mut v: serde_json::Value = serde_json::from_str(SMOL_CONFIG).expect("json");
    v["head_dim"] = (1u64 << 40).into();
    let err = ModelConfig::from_json(&v.to_string()).expect_err("head_dim");
    assert!(err.to_string().contains("head_dim"), "{err}");
}

#[test]
fn fuzz_tokenizer_files() {
    let dir = fixtures().join("tokenizer");
    let tok = std::fs::read(dir.join("tokenizer.json")).expect("tokenizer.json");
    let cfg = std::fs::read(dir.join("tokenizer_config.json")).expect("tokenizer_config.json");
    // One seed per file; the first byte of the input says which file it replaces.
    let seeds = vec![
        [vec![b'T'], tok.clone()].concat(),
        [vec![b'C'], cfg.clone()].concat(),
    ];
    let tok_seed = tok.clone();
    let check = move |bytes: &[u8]| {
        let Some((&which, body)) = bytes.split_first() else {
            return false;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let (t, c) = if which == b'C' {
            (tok.as_slice(), body)
        } else {
            (body, cfg.as_slice())
        };
        std::fs::write(dir.path().join("tokenizer.json"), t).expect("write");
        std::fs::write(dir.path().join("tokenizer_config.json"), c).expect("write");
        let Ok(tk) = SoupTokenizer::from_hf_dir(dir.path()) else {
            return false;
        };
        if let Ok(ids) = tk.encode("Hello, world! 12345 <|im_start|>user\n", true) {
            let _ = tk.decode(&ids, false);
        }
        let _ = tk.eos_ids();
        let _ = tk.pad_id();
        let chat = [ChatMessage::new("user", "What is 2+2?")];
        let _ = tk.apply_chat_template(&chat, true);
        true
    };
    // The JSON-aware mutations need JSON seeds: fuzz each file's JSON on its own too.
    fuzz(
        Target {
            name: "tokenizer files",
            seeds,
            hot_len: 0,
            json: false,
            cases: 700,
        },
        check.clone(),
    );
    fuzz(
        Target {
            name: "tokenizer.json (structural)",
            seeds: vec![tok_seed],
            hot_len: 0,
            json: true,
            cases: 500,
        },
        move |bytes| check(&[&[b'T'][..], bytes].concat()),
    );
}

#[test]
fn fuzz_safetensors_weights() {
    let seed = std::fs::read(fixtures().join("adapter-a/adapter_model.safetensors")).expect("seed");
    let header = 8 + u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")) as usize;
    fuzz(
        Target {
            name: "safetensors (model weights)",
            seeds: vec![seed],
            hot_len: header,
            json: false,
            cases: 1500,
        },
        |bytes| {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("model.safetensors");
            std::fs::write(&path, bytes).expect("write");
            read_safetensors(&[path], &Device::Cpu).is_ok()
        },
    );
}

/// A safetensors header that claims a huge header length, or a tensor of 2^60 elements, is
/// refused without allocating for it.
#[test]
fn safetensors_huge_claims_are_refused() {
    let header = r#"{"t":{"dtype":"F32","shape":[1073741824,1073741824],"data_offsets":[0,4]}}"#;
    let mut claims_big_tensor = (header.len() as u64).to_le_bytes().to_vec();
    claims_big_tensor.extend_from_slice(header.as_bytes());
    claims_big_tensor.extend_from_slice(&[0; 4]);
    let mut claims_big_header = (1u64 << 60).to_le_bytes().to_vec();
    claims_big_header.extend_from_slice(b"{}");
    for bytes in [claims_big_tensor, claims_big_header] {
        let outcome = run_guarded(bytes, |b| {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("model.safetensors");
            std::fs::write(&path, b).expect("write");
            read_safetensors(&[path], &Device::Cpu)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        assert!(matches!(outcome, Ok(Err(_))), "{outcome:?}");
    }
}

/// Regression: the tokenizers crate panicked (an `expect` in its decoder and normalizer
/// deserializers) on a tokenizer.json with a bad `\u` escape inside `decoder`, or with a
/// `Precompiled` normalizer whose charsmap is not one; both are now errors naming the file.
#[test]
fn tokenizer_json_that_panicked_the_tokenizers_crate_is_an_error() {
    let base =
        std::fs::read_to_string(fixtures().join("tokenizer/tokenizer.json")).expect("fixture");
    let mut v: serde_json::Value = serde_json::from_str(&base).expect("json");
    v["normalizer"] = serde_json::json!({"type": "Precompiled", "precompiled_charsmap": 5});
    let precompiled = v.to_string();
    let mut v: serde_json::Value = serde_json::from_str(&base).expect("json");
    v["decoder"] = serde_json::json!({"type": "ByteLevel", "x": "PLACEHOLDER"});
    let bad_escape = v.to_string().replace("PLACEHOLDER", "\\udc00\\ud800");
    for text in [precompiled, bad_escape] {
        let outcome = run_guarded(text.into_bytes(), |b| {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("tokenizer.json"), b).expect("write");
            SoupTokenizer::from_hf_dir(dir.path())
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        match outcome {
            Ok(Err(msg)) => assert!(msg.contains("tokenizer.json"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }
}
