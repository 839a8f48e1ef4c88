"""Paged decode B64 x 4096, 32/8 heads, d128, page 16, int8 against bf16 cache (random codes,
per-kv-head scales), graph replay, over launch configs forced with `force_config`: warps,
tokens per step, stages, then split counts and programs per core around the best (CUDA).

    PYTHONPATH=. python3 bench/gpu/quant_sweep.py
"""
import itertools

import torch

import ascend_kernels as ak
from bench.gpu._timing import decode_batch, graph_of, median_ms

KVH, D, BS = 8, 128, 16


def main():
    dev = "cuda"
    q, table, lens, pages = decode_batch(kv_heads=KVH, head=D, block=BS)
    kb = torch.randn(pages, BS, KVH, D, device=dev, dtype=torch.bfloat16)
    ki = torch.randint(-127, 128, kb.shape, device=dev, dtype=torch.int8)
    sc = torch.full((KVH,), 0.01, device=dev)
    out = torch.empty_like(q)
    cases = {"bf16": (kb, torch.randn_like(kb), {}),
             "int8": (ki, torch.randint_like(ki, -127, 128), dict(k_scale=sc, v_scale=sc))}

    def us(kind, cfg):
        kc, vc, s = cases[kind]
        with ak.force_config("paged_attention", cfg):
            try:
                g = graph_of(lambda: ak.paged_attention(q, kc, vc, table, lens, out=out, **s))
            except Exception as e:  # a config over the shared memory
                return f"{type(e).__name__}"
            return f"{median_ms(g.replay, rep=60) * 1e3:.1f}"

    print("| cache | config | µs |\n|---|---|---:|")
    for kind in cases:
        print(f"| {kind} | default (tuned) | {us(kind, {})} |", flush=True)
    best = []
    for step, warps, stages in itertools.product([32, 64, 128, 256], [1, 2, 4, 8], [2, 3, 4]):
        cfg = dict(grid_step_tokens=step, num_warps=warps, num_stages=stages)
        t = us("int8", cfg)
        print(f"| int8 | {cfg} | {t} |", flush=True)
        if t[0].isdigit():
            best.append((float(t), cfg))
    for _, cfg in sorted(best, key=lambda b: b[0])[:3]:
        for extra in ({}, {"grid_programs_per_core": 4}, {"grid_programs_per_core": 32}, {"grid_num_splits": 2},
                      {"grid_num_splits": 4}, {"FP16_DOTS": False}):
            for kind in ("int8", "bf16"):
                print(f"| {kind} | {dict(cfg, **extra)} | {us(kind, dict(cfg, **extra))} |", flush=True)


if __name__ == "__main__":
    main()
