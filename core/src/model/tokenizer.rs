//! The tokenizer as transformers sees it: a `tokenizers::Tokenizer` (tokenizer.json) plus what
//! `tokenizer_config.json` adds on top, i.e. the special tokens and the chat template.
//!
//! Two things must match transformers exactly, or logits and generations drift from the
//! reference: the ids of `tokenizer(text)` (the post-processor decides whether a BOS is added,
//! so we always go through it) and `apply_chat_template(..., tokenize=False)`, which transformers
//! renders with jinja2 (`trim_blocks`, `lstrip_blocks`, a `raise_exception` function, the special
//! tokens as variables, a Python-flavoured `tojson`). minijinja with its pycompat method callback
//! covers the Python string and dict methods templates call (`.strip()`, `.items()`, ...).

use crate::error::{CoreError, Result};
use minijinja::value::{Kwargs, Value, ValueKind};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use tokenizers::Tokenizer;

/// One turn of a conversation, as `apply_chat_template` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// The special tokens `tokenizer_config.json` names, as strings (their ids come from the vocab).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<String>,
    pub eos: Option<String>,
    pub pad: Option<String>,
    pub unk: Option<String>,
}

/// End-of-turn markers that chat templates close a turn with; when the template writes one,
/// generation must stop on it even if the config's eos is another token.
const TURN_END_MARKERS: &[&str] = &["<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"];

/// A tokenizer with its chat template and special tokens, loaded from an HF directory or built
/// from GGUF metadata.
#[derive(Debug, Clone)]
pub struct SoupTokenizer {
    inner: Tokenizer,
    chat_template: Option<String>,
    special: SpecialTokens,
    /// Extra eos ids from `generation_config.json` / `config.json` (or GGUF eot ids).
    config_eos_ids: Vec<u32>,
    model_max_length: Option<usize>,
    /// The rest of `tokenizer_config.json`, kept so that `save_hf` round-trips it.
    extra_config: serde_json::Map<String, serde_json::Value>,
}

impl SoupTokenizer {
    /// Builds a tokenizer from parts (the GGUF loader uses this).
    pub fn from_parts(
        inner: Tokenizer,
        chat_template: Option<String>,
        special: SpecialTokens,
        config_eos_ids: Vec<u32>,
        model_max_length: Option<usize>,
    ) -> Self {
        SoupTokenizer {
            inner,
            chat_template,
            special,
            config_eos_ids,
            model_max_length,
            extra_config: serde_json::Map::new(),
        }
    }

    /// Reads `tokenizer.json` and, when present, `tokenizer_config.json` (special tokens, chat
    /// template), `chat_template.jinja`, and the eos ids of `generation_config.json` and
    /// `config.json`.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(CoreError::bad_file(
                &tok_path,
                "missing: soup needs the fast tokenizer file tokenizer.json of the model",
            ));
        }
        let bytes = std::fs::read(&tok_path).map_err(|e| CoreError::io(&tok_path, e))?;
        let inner = tokenizer_from_json(&bytes)
            .map_err(|e| CoreError::bad_file(&tok_path, format!("not a valid tokenizer: {e}")))?;

        let cfg_path = dir.join("tokenizer_config.json");
        let mut config = serde_json::Map::new();
        if cfg_path.is_file() {
            let text =
                std::fs::read_to_string(&cfg_path).map_err(|e| CoreError::io(&cfg_path, e))?;
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(serde_json::Value::Object(m)) => config = m,
                Ok(_) => return Err(CoreError::bad_file(&cfg_path, "not a JSON object")),
                Err(e) => return Err(CoreError::bad_file(&cfg_path, format!("invalid JSON: {e}"))),
            }
        }
        let special = SpecialTokens {
            bos: config.get("bos_token").and_then(token_string),
            eos: config.get("eos_token").and_then(token_string),
            pad: config.get("pad_token").and_then(token_string),
            unk: config.get("unk_token").and_then(token_string),
        };
        let mut chat_template = match config.get("chat_template") {
            Some(v) => template_string(v).map_err(|m| CoreError::bad_file(&cfg_path, m))?,
            None => None,
        };
        // transformers >= 4.43 may save the template beside the config instead.
        let jinja_path = dir.join("chat_template.jinja");
        if chat_template.is_none() && jinja_path.is_file() {
            chat_template = Some(
                std::fs::read_to_string(&jinja_path).map_err(|e| CoreError::io(&jinja_path, e))?,
            );
        }
        let model_max_length = config
            .get("model_max_length")
            .and_then(|v| v.as_u64())
            .filter(|&n| n < (1 << 40)) // transformers writes 1e30 for "no limit".
            .map(|n| n as usize);

        let mut config_eos_ids = Vec::new();
        for name in ["generation_config.json", "config.json"] {
            let p = dir.join(name);
            if !p.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&p).map_err(|e| CoreError::io(&p, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| CoreError::bad_file(&p, format!("invalid JSON: {e}")))?;
            match v.get("eos_token_id") {
                Some(serde_json::Value::Number(n)) => config_eos_ids.extend(n.as_u64()),
                Some(serde_json::Value::Array(a)) => {
                    config_eos_ids.extend(a.iter().filter_map(|x| x.as_u64()))
                }
                _ => {}
            }
        }
        let config_eos_ids = config_eos_ids
            .into_iter()
            .filter_map(|i| u32::try_from(i).ok())
            .collect();

        Ok(SoupTokenizer {
            inner,
            chat_template,
            special,
            config_eos_ids,
            model_max_length,
            extra_config: config,
        })
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` into `dir`, so that a converted model
    /// is a complete HF directory (transformers loads it with `AutoTokenizer`).
    pub fn save_hf(&self, dir: &Path) -> Result<()> {
        let tok_path = dir.join("tokenizer.json");
        let json = self
            .inner
            .to_string(true)
            .map_err(|e| CoreError::Tokenizer(format!("cannot serialize the tokenizer: {e}")))?;
        std::fs::write(&tok_path, json).map_err(|e| CoreError::io(&tok_path, e))?;

        let mut cfg = self.extra_config.clone();
        for (key, value) in [
            ("bos_token", &self.special.bos),
            ("eos_token", &self.special.eos),
            ("pad_token", &self.special.pad),
            ("unk_token", &self.special.unk),
        ] {
            match value {
                Some(v) => cfg.insert(key.into(), v.clone().into()),
                None => cfg.insert(key.into(), serde_json::Value::Null),
            };
        }
        match &self.chat_template {
            Some(t) => cfg.insert("chat_template".into(), t.clone().into()),
            None => cfg.remove("chat_template"),
        };
        if let Some(n) = self.model_max_length {
            cfg.insert("model_max_length".into(), n.into());
        }
        cfg.entry("clean_up_tokenization_spaces")
            .or_insert(serde_json::Value::Bool(false));
        cfg.entry("tokenizer_class")
            .or_insert_with(|| "PreTrainedTokenizerFast".into());
        let cfg_path = dir.join("tokenizer_config.json");
        let text = serde_json::to_string_pretty(&serde_json::Value::Object(cfg))
            .map_err(|e| CoreError::Tokenizer(e.to_string()))?;
        std::fs::write(&cfg_path, text).map_err(|e| CoreError::io(&cfg_path, e))?;
        Ok(())
    }

    /// The ids of `tokenizer(text)` in transformers (with `add_special_tokens`, the
    /// post-processor adds what the model expects, e.g. Llama 3's BOS; SmolLM2 adds nothing).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| CoreError::Tokenizer(format!("cannot encode text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| CoreError::Tokenizer(format!("cannot decode ids: {e}")))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Every id that ends generation: the eos token, the config's eos ids, and the template's
    /// end-of-turn marker (ChatML's `<|im_end|>`) when the chat template writes one.
    pub fn eos_ids(&self) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut push = |id: u32| {
            if !ids.contains(&id) {
                ids.push(id)
            }
        };
        if let Some(id) = self
            .special
            .eos
            .as_deref()
            .and_then(|t| self.token_to_id(t))
        {
            push(id);
        }
        for &id in &self.config_eos_ids {
            push(id);
        }
        if let Some(t) = &self.chat_template {
            for marker in TURN_END_MARKERS {
                if t.contains(marker) {
                    if let Some(id) = self.token_to_id(marker) {
                        push(id);
                    }
                }
            }
        }
        ids
    }

    /// The pad token's id, or the first eos id when there is no pad token (as HF generation
    /// does), or 0.
    pub fn pad_id(&self) -> u32 {
        self.special
            .pad
            .as_deref()
            .and_then(|t| self.token_to_id(t))
            .or_else(|| self.eos_ids().first().copied())
            .unwrap_or(0)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.special
            .bos
            .as_deref()
            .and_then(|t| self.token_to_id(t))
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    pub fn model_max_length(&self) -> Option<usize> {
        self.model_max_length
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The wrapped `tokenizers::Tokenizer`.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)` as transformers
    /// renders it. Errors when the model has no chat template or the template raises.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or_else(|| {
            CoreError::Tokenizer(
                "this model has no chat template: run without --chat, or use an instruct model"
                    .into(),
            )
        })?;
        render_chat_template(template, messages, add_generation_prompt, &self.special)
    }
}

/// Renders an HF chat template with transformers' jinja2 settings.
pub fn render_chat_template(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    special: &SpecialTokens,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_filter("tojson", tojson);
    env.add_template("chat", template)
        .map_err(|e| CoreError::Tokenizer(format!("the chat template does not parse: {e}")))?;

    let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
    ctx.insert("messages".into(), Value::from_serialize(messages));
    ctx.insert(
        "add_generation_prompt".into(),
        Value::from(add_generation_prompt),
    );
    // transformers passes these as None: templates test `tools is not none`, which an
    // undefined variable would pass.
    ctx.insert("tools".into(), Value::from(()));
    ctx.insert("documents".into(), Value::from(()));
    // Only the special tokens that are set: an unset one is undefined (renders empty), not None.
    for (name, value) in [
        ("bos_token", &special.bos),
        ("eos_token", &special.eos),
        ("pad_token", &special.pad),
        ("unk_token", &special.unk),
    ] {
        if let Some(v) = value {
            ctx.insert(name.into(), Value::from(v.as_str()));
        }
    }
    let tmpl = env
        .get_template("chat")
        .map_err(|e| CoreError::Tokenizer(format!("chat template: {e}")))?;
    tmpl.render(Value::from(ctx))
        .map_err(|e| CoreError::Tokenizer(format!("the chat template failed: {e:#}")))
}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        message,
    ))
}

/// `strftime_now(format)`: the current UTC time, for templates that print today's date (Llama
/// 3.1). Supports %Y %y %m %d %B %b %A %a %H %M %S %%.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime_utc(&format, secs)
}

fn strftime_utc(format: &str, secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('B') => out.push_str(month_name),
            Some('b') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(weekday),
            Some('a') => out.push_str(&weekday[..3]),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent)`, i.e. Python's
/// separators `", "` and `": "`, keys in insertion order, no HTML escaping (minijinja's own
/// `tojson` escapes `<`, `>`, `&` and `'`, which would change tool-calling prompts).
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_py_json(&value, indent, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn write_py_json(
    value: &Value,
    indent: Option<usize>,
    depth: usize,
    out: &mut String,
) -> std::result::Result<(), minijinja::Error> {
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if value.is_integer() {
                out.push_str(&value.to_string());
            } else {
                let f = f64::try_from(value.clone()).unwrap_or(f64::NAN);
                if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
                    out.push_str(&format!("{f:.1}"));
                } else if f.is_nan() {
                    out.push_str("NaN");
                } else if f.is_infinite() {
                    out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
                } else {
                    out.push_str(&f.to_string());
                }
            }
        }
        ValueKind::String => {
            let s = value.as_str().unwrap_or_default();
            out.push_str(&serde_json::to_string(s).map_err(json_err)?);
        }
        ValueKind::Map => {
            let keys: Vec<Value> = value.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                let k = match key.as_str() {
                    Some(s) => s.to_string(),
                    None => key.to_string(),
                };
                out.push_str(&serde_json::to_string(&k).map_err(json_err)?);
                out.push_str(": ");
                write_py_json(&value.get_item(key)?, indent, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_py_json(item, indent, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        _ => out.push_str(&serde_json::to_string(&value.to_string()).map_err(json_err)?),
    }
    Ok(())
}

fn json_err(e: serde_json::Error) -> minijinja::Error {
    minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
}

/// Parses the bytes of a tokenizer.json. The tokenizers crate panics on some malformed files
/// instead of returning an error (a JSON syntax error inside `decoder` hits an `expect`, so
/// does a `Precompiled` normalizer with a bad charsmap): the JSON is parsed first, so syntax
/// errors get serde's message with line and column, and a panic left inside the crate is
/// caught and returned as an error.
pub(crate) fn tokenizer_from_json(bytes: &[u8]) -> std::result::Result<Tokenizer, String> {
    serde_json::from_slice::<serde_json::Value>(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    match catch_quietly(|| Tokenizer::from_bytes(bytes)) {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(e.to_string()),
        Err(why) => Err(format!("the tokenizers library cannot read it ({why})")),
    }
}

thread_local! {
    /// Set while [`catch_quietly`] runs on this thread: the panic hook then stays silent.
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, returning a panic inside it as `Err(message)` without the panic hook printing
/// "thread panicked at ..." (which reads as a crash although the caller reports a clean
/// error). Other threads' panics are printed as before.
fn catch_quietly<T>(
    f: impl FnOnce() -> T + std::panic::UnwindSafe,
) -> std::result::Result<T, String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET_PANICS.try_with(|q| q.get()).unwrap_or(false) {
                previous(info)
            }
        }));
    });
    let _ = QUIET_PANICS.try_with(|q| q.set(true));
    let out = std::panic::catch_unwind(f);
    let _ = QUIET_PANICS.try_with(|q| q.set(false));
    out.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into())
    })
}

/// A special token in tokenizer_config.json: a string, or an AddedToken object `{content: ...}`.
fn token_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(m) => m.get("content").and_then(|c| c.as_str()).map(Into::into),
        _ => None,
    }
}

/// `chat_template` is a string, or a list of `{name, template}` of which transformers uses the
/// one named "default" (or the only one).
fn template_string(v: &serde_json::Value) -> std::result::Result<Option<String>, String> {
    match v {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s.clone())),
        serde_json::Value::Array(list) => {
            let named = |want: &str| {
                list.iter().find_map(|t| {
                    (t.get("name")?.as_str()? == want)
                        .then(|| t.get("template")?.as_str().map(String::from))
                        .flatten()
                })
            };
            match named("default") {
                Some(t) => Ok(Some(t)),
                None if list.len() == 1 => Ok(list[0]
                    .get("template")
                    .and_then(|t| t.as_str())
                    .map(String::from)),
                None if list.is_empty() => Ok(None),
                None => Err("chat_template is a list without a template named \"default\"".into()),
            }
        }
        _ => Err("chat_template is neither a string nor a list of {name, template}".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/reference")
    }

    fn reference() -> serde_json::Value {
        let text = std::fs::read_to_string(fixture_dir().join("reference.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn ids_of(v: &serde_json::Value) -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    }

    #[test]
    fn fixture_ids_and_special_tokens_match_transformers() {
        let tok = SoupTokenizer::from_hf_dir(&fixture_dir().join("tiny-llama")).unwrap();
        let r = reference();
        for t in r["texts"].as_array().unwrap() {
            let text = t["text"].as_str().unwrap();
            assert_eq!(
                tok.encode(text, true).unwrap(),
                ids_of(&t["ids"]),
                "{text:?}"
            );
            let back = tok.decode(&ids_of(&t["ids"]), false).unwrap();
            assert_eq!(back, text);
        }
        assert_eq!(tok.bos_id(), Some(1));
        assert_eq!(tok.eos_ids(), vec![2]);
        assert_eq!(tok.pad_id(), 2);
        assert_eq!(tok.vocab_size(), 400);
        assert!(tok.has_chat_template());
    }

    #[test]
    fn chatml_template_renders_like_transformers() {
        let tok = SoupTokenizer::from_hf_dir(&fixture_dir().join("tokenizer")).unwrap();
        let r = reference();
        for c in r["chat"].as_array().unwrap() {
            let messages: Vec<ChatMessage> = serde_json::from_value(c["messages"].clone()).unwrap();
            let add = c["add_generation_prompt"].as_bool().unwrap();
            let rendered = tok.apply_chat_template(&messages, add).unwrap();
            assert_eq!(rendered, c["rendered"].as_str().unwrap());
            assert_eq!(tok.encode(&rendered, false).unwrap(), ids_of(&c["ids"]));
        }
    }

    #[test]
    fn jinja_settings_match_transformers() {
        let special = SpecialTokens {
            bos: Some("<s>".into()),
            eos: Some("</s>".into()),
            ..Default::default()
        };
        let msgs = [
            ChatMessage::new("system", "  be brief  "),
            ChatMessage::new("user", "hi"),
        ];
        // trim_blocks + lstrip_blocks, .strip() via pycompat, bos/eos variables, loop controls,
        // and tools defined as none.
        let t = "{{ bos_token }}\n{% for m in messages %}\n    {% if m.role == 'system' %}\n[{{ m.content.strip() }}]\n    {% else %}\n{{ m.role }}: {{ m.content }}{{ eos_token }}\n{% break %}\n    {% endif %}\n{% endfor %}\n{% if tools is not none %}TOOLS{% endif %}{{ pad_token }}";
        let out = render_chat_template(t, &msgs, false, &special).unwrap();
        // Expected strings below are jinja2's output with transformers' settings.
        assert_eq!(out, "<s>\n[be brief]\nuser: hi</s>\n");
        let err = render_chat_template(
            "{{ raise_exception('roles must alternate') }}",
            &msgs,
            false,
            &special,
        )
        .unwrap_err();
        assert!(err.to_string().contains("roles must alternate"), "{err}");
        let json = render_chat_template(
            "{{ {'b': 1, 'a': [1.0, '<x>', none, true]} | tojson }}",
            &msgs,
            false,
            &special,
        )
        .unwrap();
        assert_eq!(json, r#"{"b": 1, "a": [1.0, "<x>", null, true]}"#);
        let json = render_chat_template(
            "{{ {'b': {'c': []}, 'a': [1, 2]} | tojson(indent=2) }}",
            &msgs,
            false,
            &special,
        )
        .unwrap();
        assert_eq!(
            json,
            "{\n  \"b\": {\n    \"c\": []\n  },\n  \"a\": [\n    1,\n    2\n  ]\n}"
        );
    }

    #[test]
    fn config_forms_and_save_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let src = fixture_dir().join("tokenizer");
        std::fs::copy(
            src.join("tokenizer.json"),
            dir.path().join("tokenizer.json"),
        )
        .unwrap();
        // AddedToken objects and a list of named templates.
        let cfg = serde_json::json!({
            "bos_token": {"__type": "AddedToken", "content": "<|im_start|>", "lstrip": false},
            "eos_token": {"content": "<|endoftext|>"},
            "chat_template": [
                {"name": "tool_use", "template": "TOOLS"},
                {"name": "default", "template": "{{ messages[0].content }}<|im_end|>"}
            ]
        });
        std::fs::write(dir.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();
        std::fs::write(
            dir.path().join("generation_config.json"),
            r#"{"eos_token_id": [0, 7]}"#,
        )
        .unwrap();
        let tok = SoupTokenizer::from_hf_dir(dir.path()).unwrap();
        assert_eq!(tok.bos_id(), Some(1));
        // eos token, the config's eos ids, then <|im_end|> because the template writes it.
        assert_eq!(tok.eos_ids(), vec![0, 7, 2]);
        assert_eq!(tok.pad_id(), 0);
        let msgs = [ChatMessage::new("user", "x")];
        assert_eq!(tok.apply_chat_template(&msgs, true).unwrap(), "x<|im_end|>");

        let out = tempfile::tempdir().unwrap();
        tok.save_hf(out.path()).unwrap();
        let again = SoupTokenizer::from_hf_dir(out.path()).unwrap();
        assert_eq!(again.special_tokens(), tok.special_tokens());
        assert_eq!(
            again.chat_template(),
            Some("{{ messages[0].content }}<|im_end|>")
        );
        let text = "Hello, world!  It costs $12.50";
        assert_eq!(
            again.encode(text, true).unwrap(),
            tok.encode(text, true).unwrap()
        );
    }

    #[test]
    fn missing_tokenizer_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = SoupTokenizer::from_hf_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
        std::fs::write(dir.path().join("tokenizer.json"), "{").unwrap();
        let err = SoupTokenizer::from_hf_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
    }

    #[test]
    fn strftime_formats_a_known_date() {
        // 2024-11-28 13:05:09 UTC, a Thursday.
        let secs = 1_732_799_109;
        assert_eq!(
            strftime_utc("%d %b %Y %H:%M:%S %A %B %y %%", secs),
            "28 Nov 2024 13:05:09 Thursday November 24 %"
        );
    }
}
