#!/usr/bin/env python3
"""../shared/bench/torch_reference.py for the GPU: the same figures (greedy generation at batch 1
and 16, a LoRA training step of batch 8 x 256, r 16 on q,k,v,up,down, AdamW, clipping at 1.0),
with --device cuda and --dtype, timed with the device synchronized, so that soup's `soup bench`
on the same GPU has a PyTorch+PEFT figure beside it from the same sitting.

Changes from the CPU script, and only these:
- `--device`, `--dtype` (f32 or bf16: the model's weights and activations; the LoRA factors are
  f32 as PEFT keeps them);
- `--config PATH`: an HF config.json; the model gets random weights of those shapes (the GPU
  machine's carry limit leaves no room for the real GGUF beside the binary; speed does not
  depend on the weights' values);
- `torch.cuda.synchronize()` before every clock reading; peak memory from the CUDA allocator.

Run on the device machine (no registry there): the wheels come from bench/gpu/wheels.sh, carried
in .gpu3/wheels and installed by bench/gpu/torch.sh.
"""
import argparse, json, os, statistics, sys, time

import torch


def load(a, dtype):
    from transformers import AutoModelForCausalLM, LlamaConfig
    if a.config:
        cfg = LlamaConfig.from_json_file(a.config)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg, torch_dtype=dtype)
        eos = cfg.eos_token_id if isinstance(cfg.eos_token_id, int) else 0
    else:
        d, f = os.path.dirname(a.model) or ".", os.path.basename(a.model)
        kw = {"gguf_file": f} if f.endswith(".gguf") else {}
        src = d if kw else a.model
        model = AutoModelForCausalLM.from_pretrained(src, torch_dtype=dtype, **kw)
        eos = model.config.eos_token_id if isinstance(model.config.eos_token_id, int) else 0
    return model.to(a.device).eval(), eos


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_mb(device):
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(a, **kw):
    kw.update(device=a.device, dtype=a.dtype, threads=torch.get_num_threads())
    if a.device.startswith("cuda"):
        kw["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(kw), flush=True)


def bench_generation(a, model, eos, batch, prompt_tokens, new_tokens):
    torch.manual_seed(0)
    ids = torch.randint(100, 1000, (batch, prompt_tokens), device=a.device)
    mask = torch.ones_like(ids)
    times = []
    for r in range(a.reps + 1):
        sync(a.device)
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, do_sample=False, pad_token_id=eos)
        sync(a.device)
        if r:
            times.append(time.perf_counter() - t)
        assert out.shape[1] == prompt_tokens + new_tokens
    med = statistics.median(times)
    emit(a, figure="generate_greedy", batch=batch, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
         seconds_median=med, new_tokens_per_s=batch * new_tokens / med, peak_mb=peak_mb(a.device))


def bench_training(a, model, batch, seq, steps, r, targets):
    from peft import LoraConfig, get_peft_model
    cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, lora_dropout=a.dropout,
                     init_lora_weights=False)
    pm = get_peft_model(model, cfg)
    for p in pm.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    pm.train()
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-4)
    torch.manual_seed(0)
    x = torch.randint(100, 1000, (batch, seq), device=a.device)
    times = []
    for s in range(steps + 1):
        sync(a.device)
        t = time.perf_counter()
        with torch.autocast(a.device.split(":")[0], dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
            loss = pm(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        sync(a.device)
        if s:
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    emit(a, figure="lora_train_step", batch=batch, seq=seq, rank=r, targets=targets, dropout=a.dropout,
         seconds_median=med, tokens_per_s=batch * seq / med, final_loss=float(loss), peak_mb=peak_mb(a.device))


def main():
    ap = argparse.ArgumentParser()
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="HF model directory or GGUF file")
    src.add_argument("--config", help="HF config.json: random weights of its shapes")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--only", default="gen,train")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--dropout", type=float, default=0.0)
    a = ap.parse_args()
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    only = set(a.only.split(","))
    targets = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
    if "gen" in only:
        model, eos = load(a, dtype)
        bench_generation(a, model, eos, 1, 64, 128)
        bench_generation(a, model, eos, 16, 64, 128)
        del model
    if "train" in only:
        if a.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        model, _ = load(a, dtype)
        bench_training(a, model, 8, 256, a.steps, 16, targets)


if __name__ == "__main__":
    sys.exit(main())
