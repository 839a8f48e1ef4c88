"""paged_attention on one CUDA GPU: correctness, graph replay, bandwidth vs copy and vs
gather-then-SDPA, all in one run.

    PYTHONPATH=. python3 bench/gpu/paged_attention_check.py [--sweep]

bf16, 32 query heads over 8 kv heads, head size 128, block sizes 16 and 128.
Bytes counted: the K and V pages read (num_seqs * context * kv_heads * head_size * 2 * 2).
Times: triton.testing.do_bench medians. "op" = the public eager call (Python dispatch
included), "graph" = replay of a CUDA graph holding one call (the serving path), "kernel" =
the launch function with the config fixed (no dispatch).
"""
import json
import math
import os
import sys

import ascend_kernels as ak  # noqa: F401  (before triton)
import torch
import torch.nn.functional as F
import triton
import triton.testing

from ascend_kernels.launcher import device as _device
from ascend_kernels.ops import paged_attention as pa
from ascend_kernels.reference.paged_attention import paged_attention as ref_pa
from bench.gpu._timing import graph_of, median_ms as bench

SWEEP = "--sweep" in sys.argv
OUT = os.environ.get("OUT", "/tmp")
H, KVH, D = 32, 8, 128
DT = torch.bfloat16
dev = torch.device("cuda")
rows, log = [], {}


def rel_err(out, expect):
    return float((out.float() - expect).norm() / expect.norm())


def make(seqs, ctx, bs, lens=None):
    mb = ctx // bs
    nb = seqs * mb
    q = torch.randn(seqs, H, D, device=dev, dtype=DT)
    kc = torch.randn(nb, bs, KVH, D, device=dev, dtype=DT)
    vc = torch.randn(nb, bs, KVH, D, device=dev, dtype=DT)
    bt = torch.randperm(nb, device=dev).to(torch.int32).reshape(seqs, mb)
    lens = torch.full((seqs,), ctx, dtype=torch.int32, device=dev) if lens is None else \
        torch.tensor(lens, dtype=torch.int32, device=dev)
    return q, kc, vc, bt, lens


def reference(q, kc, vc, bt, lens, chunk=8):
    outs = []
    for i in range(0, q.shape[0], chunk):  # chunks keep the fp32 gather small
        outs.append(ref_pa(q[i:i + chunk], kc, vc, bt[i:i + chunk], lens[i:i + chunk], 1 / math.sqrt(D)))
    return torch.cat(outs)


def gather_sdpa(q, kc, vc, bt):
    s, mb = bt.shape
    bs = kc.shape[1]
    k = kc[bt.long()].view(s, mb * bs, KVH, D).transpose(1, 2)
    v = vc[bt.long()].view(s, mb * bs, KVH, D).transpose(1, 2)
    return F.scaled_dot_product_attention(q.unsqueeze(2), k, v, enable_gqa=True).squeeze(2)


# --- copy bandwidth --------------------------------------------------------------------------
x = torch.empty(2 ** 30 // 2, dtype=DT, device=dev).normal_()
y = torch.empty_like(x)
copy_ms = bench(lambda: y.copy_(x))
copy_gbs = 2 * x.numel() * 2 / copy_ms / 1e6
del x, y
print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
print(f"copy bandwidth: 1 GiB d2d in {copy_ms:.3f} ms -> {copy_gbs:.0f} GB/s (read + write)")
log["copy_gbs"] = copy_gbs


def kv_bytes(seqs, ctx):
    return seqs * ctx * KVH * D * 2 * 2


def row(name, seqs, ctx, bs, ms, extra=""):
    gbs = kv_bytes(seqs, ctx) / ms / 1e6
    rows.append((name, seqs, ctx, bs, ms, gbs, gbs / copy_gbs, extra))
    print(f"  {name:34s} b={seqs:3d} ctx={ctx:6d} bs={bs:3d}: {ms * 1e3:9.1f} us {gbs:7.0f} GB/s "
          f"{100 * gbs / copy_gbs:5.1f}% of copy {extra}", flush=True)
    return gbs


def short(cfg_json):
    c = json.loads(cfg_json)
    return (f"step{c['grid_step_tokens']} w{c['num_warps']} st{c['num_stages']}"
            + (f" splits{c['grid_num_splits']}" if "grid_num_splits" in c else ""))


def kernel_fn(q, kc, vc, bt, lens, out, cfg):
    p = pa._validate(q, kc, vc, bt, lens, out=out)
    return lambda: pa._launch(p, cfg)


cores = _device.grid_cap(dev, cube=True)
default = pa._default_config("cuda")
print(f"SMs {cores}")
best_cfg = {}
for bs in (16, 128):
    # ---- batch 64 x 4096: no split -------------------------------------------------------
    seqs, ctx = 64, 4096
    q, kc, vc, bt, lens = make(seqs, ctx, bs)
    out = torch.full_like(q, float("nan"))
    default = pa._default_config("cuda", pa._validate(q, kc, vc, bt, lens))
    print(f"  default config b={seqs} bs={bs}: {default}")
    ak.paged_attention(q, kc, vc, bt, lens, out=out)
    err = rel_err(out, reference(q, kc, vc, bt, lens))
    print(f"bs={bs} b={seqs} ctx={ctx}: rel err vs fp32 reference {err:.2e}", flush=True)
    assert err < 1e-2, err
    if SWEEP:
        res = {}
        for t, w, st in ((256, 8, 3), (256, 8, 2), (128, 8, 2), (128, 4, 3), (64, 4, 3)):
            cfg = {**default, "grid_step_tokens": t, "num_warps": w, "num_stages": st}
            try:
                res[json.dumps(cfg)] = bench(kernel_fn(q, kc, vc, bt, lens, out, cfg), rep=60)
            except Exception as e:  # noqa: BLE001
                print("  failed", cfg, type(e).__name__, str(e)[:120])
        best = min(res, key=res.get)
        log[f"sweep_b64_bs{bs}"] = res
        best_cfg[(seqs, bs)] = json.loads(best)
        for k in sorted(res, key=res.get)[:5]:
            row("  sweep " + short(k), seqs, ctx, bs, res[k])
    ms_op = bench(lambda: ak.paged_attention(q, kc, vc, bt, lens, out=out))
    g = graph_of(lambda: ak.paged_attention(q, kc, vc, bt, lens, out=out))
    ms_graph = bench(g.replay)
    ms_base = bench(lambda: gather_sdpa(q, kc, vc, bt))
    row("paged_attention op (eager)", seqs, ctx, bs, ms_op, f"x{ms_base / ms_op:.2f} vs gather+SDPA")
    row("paged_attention (graph replay)", seqs, ctx, bs, ms_graph, f"x{ms_base / ms_graph:.2f} vs gather+SDPA")
    row("gather-then-SDPA baseline", seqs, ctx, bs, ms_base)
    del q, kc, vc, bt, lens, out, g
    torch.cuda.empty_cache()

    # ---- batch 1..4 x 32768: split-KV ----------------------------------------------------
    for seqs in (1, 2, 4):
        ctx = 32768
        q, kc, vc, bt, lens = make(seqs, ctx, bs)
        out = torch.full_like(q, float("nan"))
        prob = pa._validate(q, kc, vc, bt, lens)
        default = pa._default_config("cuda", prob)
        plan = pa.plan(prob.dims, default, "cuda", cores)
        print(f"  default config b={seqs} bs={bs}: {default}, {plan['num_splits']} splits")
        ak.paged_attention(q, kc, vc, bt, lens, out=out)
        err = rel_err(out, reference(q, kc, vc, bt, lens, chunk=1))
        assert err < 1e-2, err
        if SWEEP:
            res = {}
            for t in (64, 128):
                for st in (2, 3):
                    for ns in (0, 16, 24, 33, 48, 64):
                        cfg = {**default, "grid_step_tokens": t, "num_warps": 4, "num_stages": st}
                        if ns:
                            cfg["grid_num_splits"] = ns
                        res[json.dumps(cfg)] = bench(kernel_fn(q, kc, vc, bt, lens, out, cfg), rep=60)
            log[f"sweep_b{seqs}_bs{bs}"] = res
            best = min(res, key=res.get)
            for k in sorted(res, key=res.get)[:4]:
                row("  sweep " + short(k), seqs, ctx, bs, res[k])
        ms_op = bench(lambda: ak.paged_attention(q, kc, vc, bt, lens, out=out))
        g = graph_of(lambda: ak.paged_attention(q, kc, vc, bt, lens, out=out))
        ms_graph = bench(g.replay)
        ms_kernel = bench(kernel_fn(q, kc, vc, bt, lens, out, default))
        ms_base = bench(lambda: gather_sdpa(q, kc, vc, bt))
        sp = f"splits={plan['num_splits']} err={err:.1e}"
        row("paged_attention op (eager)", seqs, ctx, bs, ms_op, sp)
        row("paged_attention (graph replay)", seqs, ctx, bs, ms_graph, f"x{ms_base / ms_graph:.2f} vs gather+SDPA")
        row("paged_attention (kernel launch)", seqs, ctx, bs, ms_kernel)
        row("gather-then-SDPA baseline", seqs, ctx, bs, ms_base)

        # ---- graph captured once, replayed with new seq_lens and block tables --------------
        if seqs == 4:
            static_bt, static_lens = bt.clone(), lens.clone()
            gr = graph_of(lambda: ak.paged_attention(q, kc, vc, static_bt, static_lens, out=out))
            for new in ([32768, 1, 0, 20001], [17, 32000, 4097, 9]):
                perm = torch.randperm(seqs, device=dev)
                static_bt.copy_(bt[perm])
                static_lens.copy_(torch.tensor(new, dtype=torch.int32, device=dev))
                out.fill_(float("nan"))
                gr.replay()
                torch.cuda.synchronize()
                e = rel_err(out, reference(q, kc, vc, static_bt, static_lens, chunk=1))
                zero_ok = all(bool((out[i] == 0).all()) for i in range(seqs) if new[i] == 0)
                print(f"  graph replay bs={bs} new seq_lens {new}: rel err {e:.2e}, zero rows ok {zero_ok}")
                assert e < 1e-2 and zero_ok and not torch.isnan(out).any()
            log[f"graph_replay_bs{bs}"] = "ok"
        del q, kc, vc, bt, lens, out, g
        torch.cuda.empty_cache()

print("\n| case | b | ctx | bs | us | GB/s | % copy | note |\n|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4] * 1e3:.1f} | {r[5]:.0f} | {100 * r[6]:.1f} | {r[7]} |")
if best_cfg:
    print("best configs:", {f"b{k[0]}_bs{k[1]}": v for k, v in best_cfg.items()})
log["rows"] = rows
with open(os.path.join(OUT, "paged_attention_h100.json"), "w") as f:
    json.dump(log, f, indent=1, default=str)
