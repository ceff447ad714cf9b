//! `soup generate` (text from a model with an adapter stack, streamed as it is produced) and
//! `soup inspect logits` (the full logits of a text, for checking soup against transformers).

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use soup_core::generate::{generate_ids, SamplingConfig};
use soup_core::lora::{AdapterStack, StackWeights};
use soup_core::model::tokenizer::ChatMessage;
use soup_core::model::{ForwardInput, Mode};
use soup_core::runtime::{load_model_at, locate_model, LoadedModel};
use soup_store::Store;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// A model name (`soup model list`), `default`, an HF directory or a GGUF file.
    #[arg(long, default_value = "default")]
    model: String,
    /// A stored adapter name or a PEFT directory; repeat for a stack (weight 1 each). Without
    /// it: the base model alone.
    #[arg(long = "adapter", value_name = "A")]
    adapters: Vec<String>,
    #[arg(long)]
    prompt: String,
    /// Render the prompt with the model's chat template as one user message.
    #[arg(long)]
    chat: bool,
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(subcommand)]
    command: InspectCommand,
}

#[derive(Debug, Subcommand)]
enum InspectCommand {
    /// Write the logits of a text as one f32 tensor `logits` [tokens, vocab] (safetensors).
    Logits {
        #[arg(long, default_value = "default")]
        model: String,
        /// A stored adapter or PEFT directory; repeat for a stack. Without it: the base model.
        #[arg(long = "adapter", value_name = "A")]
        adapters: Vec<String>,
        /// Tokenized as transformers does (special tokens added as the tokenizer says).
        #[arg(long)]
        text: String,
        #[arg(long, value_name = "FILE.safetensors")]
        out: PathBuf,
    },
}

/// The store, unless another soup process holds the data dir and the model and adapters are
/// all given as paths (or the fetched default): then generation needs no store and runs
/// beside the dashboard instead of being refused.
fn store_if_needed(
    ctx: &super::Ctx,
    model: &str,
    adapters: &[String],
) -> Result<Option<std::sync::Arc<Store>>> {
    match ctx.store() {
        Ok(s) => Ok(Some(s)),
        Err(e) => {
            let locked = matches!(
                e.downcast_ref::<soup_store::StoreError>(),
                Some(soup_store::StoreError::Locked { .. })
            );
            let model_ok = std::path::Path::new(model).exists()
                || ((model == "default" || model == soup_core::runtime::DEFAULT_MODEL)
                    && soup_core::model::fetch::is_fetched(&ctx.data_dir));
            let adapters_ok = adapters.iter().all(|a| {
                std::path::Path::new(a)
                    .join(soup_core::lora::peft::CONFIG_FILE)
                    .is_file()
            });
            if locked && model_ok && adapters_ok {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

/// The model and adapter stack a command runs with.
pub fn load_with_stack(
    store: Option<&Store>,
    data_dir: &std::path::Path,
    device: &candle_core::Device,
    precision: soup_core::device::Precision,
    model: &str,
    adapters: &[String],
) -> Result<(LoadedModel, AdapterStack)> {
    let (name, path) = locate_model(store, data_dir, model)?;
    let model = load_model_at(&name, &path, device, precision)
        .with_context(|| format!("loading model {}", path.display()))?;
    let mut loaded = Vec::new();
    for a in adapters {
        loaded.push(model.adapter(store, a)?);
    }
    let stack = match loaded.len() {
        0 => AdapterStack::base(),
        1 => AdapterStack::single(loaded.remove(0)),
        _ => AdapterStack {
            adapters: loaded,
            weights: StackWeights::Ones,
            layers: model.model.layers.len(),
        },
    };
    Ok((model, stack))
}

pub fn generate(ctx: &super::Ctx, args: GenerateArgs) -> Result<()> {
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        bail!("--top-p {} must be in (0, 1]", args.top_p);
    }
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        bail!("--temperature {} must be >= 0", args.temperature);
    }
    let store = store_if_needed(ctx, &args.model, &args.adapters)?;
    let device = ctx.device()?;
    let (model, stack) = load_with_stack(
        store.as_deref(),
        &ctx.data_dir,
        &device,
        ctx.precision(&device),
        &args.model,
        &args.adapters,
    )?;
    let tok = &model.tokenizer;
    let prompt = if args.chat {
        if !model.is_chat() {
            bail!(
                "model {} has no chat template: drop --chat to use the prompt as plain text",
                model.name
            );
        }
        model.render_chat(&[ChatMessage::new("user", args.prompt.clone())])?
    } else {
        args.prompt.clone()
    };
    let ids = tok.encode(&prompt, !args.chat)?;
    if ids.is_empty() {
        bail!("the prompt is empty after tokenization");
    }
    let cfg = SamplingConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: (args.top_p < 1.0).then_some(args.top_p),
        seed: args.seed,
    };
    super::jobs::watch_interrupt();
    let stream = !ctx.json;
    let mut printed = String::new();
    let mut stdout = std::io::stdout();
    let t0 = Instant::now();
    let mut on_token = |_row: usize, new: &[u32]| -> bool {
        if stream {
            if let Ok(text) = tok.decode(new, true) {
                // Hold back a trailing partial UTF-8 character until it is complete.
                let text = text.trim_end_matches('\u{FFFD}');
                if let Some(rest) = text.strip_prefix(printed.as_str()) {
                    let _ = write!(stdout, "{rest}");
                    let _ = stdout.flush();
                    printed = text.to_string();
                }
            }
        }
        super::jobs::interrupted()
    };
    let out = generate_ids(
        &model.model,
        &stack,
        std::slice::from_ref(&ids),
        &cfg,
        &tok.eos_ids(),
        tok.pad_id(),
        &mut on_token,
    )
    .with_context(|| format!("generating with {}", model.name))?;
    let seconds = t0.elapsed().as_secs_f64();
    let new_ids = out.into_iter().next().unwrap_or_default();
    let text = tok.decode(&new_ids, true)?;
    if ctx.json {
        super::print_json(&serde_json::json!({
            "model": model.name,
            "adapters": args.adapters,
            "prompt": prompt,
            "text": text,
            "prompt_tokens": ids.len(),
            "new_tokens": new_ids.len(),
            "seconds": seconds,
            "tokens_per_s": new_ids.len() as f64 / seconds.max(1e-9),
        }))?;
    } else {
        match text.strip_prefix(printed.as_str()) {
            Some(rest) => println!("{rest}"),
            None => println!("\n{text}"),
        }
        eprintln!(
            "{} new tokens in {seconds:.2} s ({:.1} tokens/s)",
            new_ids.len(),
            new_ids.len() as f64 / seconds.max(1e-9)
        );
    }
    if super::jobs::interrupted() {
        return Err(super::jobs::Cancelled { run: None }.into());
    }
    Ok(())
}

pub fn inspect(ctx: &super::Ctx, args: InspectArgs) -> Result<()> {
    let InspectCommand::Logits {
        model,
        adapters,
        text,
        out,
    } = args.command;
    // Checked before the model loads: --out may not be one of the model's files.
    let rules = super::output_rules(ctx, false, [std::path::Path::new(&model)]);
    soup_core::output::check_file(&out, &rules)?;
    let store = store_if_needed(ctx, &model, &adapters)?;
    let device = ctx.device()?;
    let (model, stack) = load_with_stack(
        store.as_deref(),
        &ctx.data_dir,
        &device,
        ctx.precision(&device),
        &model,
        &adapters,
    )?;
    let ids = model.tokenizer.encode(&text, true)?;
    if ids.is_empty() {
        bail!("--text is empty after tokenization");
    }
    let n = ids.len();
    let input = candle_core::Tensor::from_vec(ids, (1, n), &device)?;
    // logits: (1, tokens, vocab) -> (tokens, vocab)
    let logits = model
        .model
        .forward(&input, &ForwardInput::default(), None, &stack, Mode::Infer)?
        .squeeze(0)?
        .to_dtype(candle_core::DType::F32)?
        .to_device(&candle_core::Device::Cpu)?;
    let (tokens, vocab) = logits.dims2()?;
    // Written aside and renamed: never a half-written file under the requested name, and
    // never over one of the model's own files.
    let staged = soup_core::output::StagedFile::new(&out, &rules)?;
    let tensors: HashMap<String, candle_core::Tensor> =
        HashMap::from([("logits".to_string(), logits)]);
    candle_core::safetensors::save(&tensors, staged.path())
        .with_context(|| format!("{}: cannot write", out.display()))?;
    staged.commit()?;
    if ctx.json {
        super::print_json(&serde_json::json!({
            "out": out, "tokens": tokens, "vocab": vocab, "model": model.name,
        }))?;
    } else {
        println!("wrote logits [{tokens}, {vocab}] to {}", out.display());
    }
    Ok(())
}
