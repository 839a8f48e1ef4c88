"""End-to-end decode benchmark: a Llama-shaped transformers model with random weights (built from
a config, nothing downloaded) generating through the ops, against the same model on
transformers' sdpa path.

Providers (each case runs every one its device has):
  ours              ascend_kernels.integrations.transformers.PagedRunner, eager decode steps
  ours-graph        the same, each decode step one CUDA-graph replay (cuda)
  sdpa              transformers' sdpa attention with its DynamicCache, eager
  sdpa-static-graph sdpa with transformers' StaticCache, each decode step one CUDA-graph replay
                    (cuda)
Every provider feeds the same random prompts (batch x context tokens), times the prefill (all
prompts in one forward, plus choosing the first token; the second of two runs, so no compile
time), then `steps` decode steps after one warm-up step. Token choice is greedy: ours through
`topk_topp_sampling` (temperature 0), sdpa through `argmax`.
Rows: provider, model, layers, batch, context, steps, prefill_ms, decode_ms_per_step,
tokens_per_s (batch / decode step time), decode_speedup_vs_sdpa (the sdpa row of the same
case and graph mode over this one), device, dtype, error (a provider that failed).
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional

import torch

import ascend_kernels.integrations.transformers as ak_hf

MODELS = {
    # Llama-3-8B's shape; layers come from the case (the time budget), rope without scaling.
    "llama-3-8b": dict(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                       intermediate_size=14336, vocab_size=128256, rope_theta=500000.0,
                       rms_norm_eps=1e-5, max_position_embeddings=8192),
    "tiny": dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                 intermediate_size=128, vocab_size=256, max_position_embeddings=512),
}
GPU_LAYERS = 8
PROVIDERS = ("ours", "ours-graph", "sdpa", "sdpa-static-graph")


def default_cases(device: str) -> list[dict]:
    """GPU/NPU: Llama-3-8B-shaped, GPU_LAYERS layers, batch 1/16/64 x context 1k/4k, 32 steps.
    CPU (interpreter): one tiny case."""
    if torch.device(device).type == "cpu":
        return [{"model": "tiny", "layers": 2, "batch": 2, "context": 24, "steps": 3}]
    return [{"model": "llama-3-8b", "layers": GPU_LAYERS, "batch": b, "context": c, "steps": 32}
            for b in (1, 16, 64) for c in (1024, 4096)]


def providers_for(device: torch.device) -> list[str]:
    graphs = device.type == "cuda"
    return [p for p in PROVIDERS if graphs or not p.endswith("graph")]


def build_model(name: str, layers: int, device: torch.device, dtype: torch.dtype):
    """A LlamaForCausalLM of MODELS[name]'s shape with `layers` layers, random weights, on device."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(num_hidden_layers=layers, tie_word_embeddings=False, **MODELS[name])
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg)
    return model.to(dtype).eval()


def _timed(fn: Callable, device: torch.device):
    """(milliseconds, result) of fn(), the device synchronised on both sides."""
    sync = getattr(torch, device.type).synchronize if device.type != "cpu" else (lambda: None)
    sync()
    start = time.perf_counter()
    result = fn()
    sync()
    return (time.perf_counter() - start) * 1e3, result


def _ours(model, prompts: torch.Tensor, steps: int, graph: bool) -> tuple[float, float]:
    model.set_attn_implementation(ak_hf.register())
    runner = ak_hf.PagedRunner(model, prompts.tolist(), steps + 2, temperature=0.0, seeds=0,
                               cuda_graph=graph)
    runner.prefill()  # warm-up; the second prefill rewrites the same slots and state
    prefill_ms, _ = _timed(runner.prefill, model.device)
    runner.decode()  # warm-up (and the capture, with graph)
    decode_ms, _ = _timed(lambda: [runner.decode() for _ in range(steps)], model.device)
    return prefill_ms, decode_ms / steps


def _sdpa(model, prompts: torch.Tensor, steps: int, graph: bool) -> tuple[float, float]:
    from transformers import DynamicCache, StaticCache

    model.set_attn_implementation("sdpa")
    batch, context = prompts.shape
    dev = model.device
    # positions as static device tensors, advanced in place: the graph replays them
    tok = torch.zeros(batch, 1, dtype=torch.int64, device=dev)
    pos = torch.zeros(batch, 1, dtype=torch.int64, device=dev)
    cache_pos = torch.zeros(1, dtype=torch.int64, device=dev)
    cache = None

    @torch.inference_mode()
    def prefill():
        nonlocal cache
        cache = (StaticCache(config=model.config, max_cache_len=context + steps + 2) if graph
                 else DynamicCache(config=model.config))
        ar = torch.arange(context, device=dev)
        out = model(prompts, position_ids=ar[None].expand(batch, -1), cache_position=ar,
                    past_key_values=cache, use_cache=True, logits_to_keep=1)
        tok.copy_(out.logits[:, -1:].argmax(-1))
        pos.fill_(context)
        cache_pos.fill_(context)

    @torch.inference_mode()
    def step():
        out = model(tok, position_ids=pos, cache_position=cache_pos, past_key_values=cache,
                    use_cache=True)
        tok.copy_(out.logits[:, -1:].argmax(-1))
        pos.add_(1)
        cache_pos.add_(1)

    prefill()  # warm-up
    prefill_ms, _ = _timed(prefill, dev)
    if graph:
        with torch.inference_mode():
            cuda_graph = ak_hf.capture_cuda_graph(step, dev)  # the warm-up step runs here
        run = cuda_graph.replay
    else:
        step()  # warm-up
        run = step
    decode_ms, _ = _timed(lambda: [run() for _ in range(steps)], dev)
    return prefill_ms, decode_ms / steps


def _speedups(rows: list[dict]) -> None:
    """decode_speedup_vs_sdpa: the matching sdpa row's (same case, same graph mode) step time
    over this row's."""
    def key(r, provider):
        return (r["model"], r["layers"], r["batch"], r["context"], provider)

    base = {key(r, r["provider"]): r.get("decode_ms_per_step") for r in rows}
    for r in rows:
        peer = "sdpa-static-graph" if r["provider"].endswith("graph") else "sdpa"
        ref, ms = base.get(key(r, peer)), r.get("decode_ms_per_step")
        r["decode_speedup_vs_sdpa"] = round(ref / ms, 3) if ref and ms else None


def run_e2e(device: str, cases: list[dict], progress: bool) -> list[dict]:
    """Run every case with every provider of `device`; a case may name its own `providers`
    and `dtype` (default bfloat16). Returns one row per (case, provider)."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
    rows, models = [], {}
    for case in cases:
        dtype = getattr(torch, case.get("dtype", "bfloat16"))
        mkey = (case["model"], case["layers"], dtype)
        if mkey not in models:
            models.clear()  # one model in memory at a time
            models[mkey] = build_model(case["model"], case["layers"], dev, dtype)
        model = models[mkey]
        g = torch.Generator().manual_seed(case["batch"] * 100003 + case["context"])
        prompts = torch.randint(0, model.config.vocab_size, (case["batch"], case["context"]),
                                generator=g).to(dev)
        for provider in case.get("providers") or providers_for(dev):
            row = {"provider": provider, "model": case["model"], "layers": case["layers"],
                   "batch": case["batch"], "context": case["context"], "steps": case["steps"],
                   "device": name, "dtype": str(dtype).replace("torch.", "")}
            run = _ours if provider.startswith("ours") else _sdpa
            try:
                prefill_ms, step_ms = run(model, prompts, case["steps"], provider.endswith("graph"))
                row.update(prefill_ms=round(prefill_ms, 3), decode_ms_per_step=round(step_ms, 4),
                           tokens_per_s=round(case["batch"] * 1e3 / step_ms, 1))
            except Exception as exc:  # noqa: BLE001 -- one provider failing keeps the others
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            rows.append(row)
            if progress:
                print(" ".join(f"{k}={v}" for k, v in row.items()), file=sys.stderr, flush=True)
    _speedups(rows)
    return rows


def format_table(rows: list[dict]) -> str:
    """A markdown table of the rows."""
    cols = ["provider", "layers", "batch", "context", "prefill_ms", "decode_ms_per_step",
            "tokens_per_s", "decode_speedup_vs_sdpa"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [r.get("error", "-") if c == "prefill_ms" and "error" in r else r.get(c, "-")
                 for c in cols]
        lines.append("| " + " | ".join("-" if v is None else str(v) for v in cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str, title: Optional[str] = None) -> None:
    """Decode ms per step against batch, one line per (provider, context); needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for provider in dict.fromkeys(r["provider"] for r in rows):
        for context in sorted({r["context"] for r in rows}):
            pts = sorted((r["batch"], r["decode_ms_per_step"]) for r in rows
                         if r["provider"] == provider and r["context"] == context
                         and r.get("decode_ms_per_step"))
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"{provider}, context {context}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch")
    ax.set_ylabel("decode ms per step (lower is better)")
    ax.set_title(title or f"{rows[0]['model']} x {rows[0]['layers']} layers, {rows[0]['device']}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
