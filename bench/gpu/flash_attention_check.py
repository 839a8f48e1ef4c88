"""flash_attention on a CUDA GPU: correctness (bf16/fp16 dots for real) + timings vs SDPA cuDNN
and compiled flex_attention, all in one run.

    PYTHONPATH=. python3 bench/gpu/flash_attention_check.py [--sweep]

Timings: triton.testing.do_bench medians (warmup 25 ms, rep 200 ms). Shape: batch 2 x 4096
tokens, 32 heads, head size 128, bf16 (issue 3). Causal flops = half of 4*B*H*S*S*D; window
flops count the visible (query, key) pairs.
"""
import argparse
import json
import math
import os
import sys
import time

import ascend_kernels  # noqa: F401  (before triton)
import torch
import triton
import triton.testing

from ascend_kernels.ops import flash_attention as fa
from ascend_kernels.reference import flash_attention as ref
from bench.gpu._timing import median_ms as bench

DEV = torch.device("cuda")
OUT = os.environ.get("OUT", "/tmp")
LINES = []


def say(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    LINES.append(s)
    with open(os.path.join(OUT, "flash_attention_h100.txt"), "a") as f:  # kept if the run is cut off
        f.write(s + "\n")


def rand_case(lens_q, lens_k, h, kvh, d, dtype, bs=None, extra_blocks=3):
    q = torch.randn(sum(lens_q), h, d, device=DEV, dtype=dtype)
    cu_q = torch.tensor([0] + list(torch.tensor(lens_q).cumsum(0)), dtype=torch.int32, device=DEV)
    if bs:
        nbs = [-(-s // bs) for s in lens_k]
        nb = sum(nbs) + extra_blocks
        k = torch.randn(nb, bs, kvh, d, device=DEV, dtype=dtype)
        v = torch.randn_like(k)
        perm = torch.randperm(nb, device=DEV).to(torch.int32)
        bt = torch.zeros(len(lens_q), max(nbs), dtype=torch.int32, device=DEV)
        i = 0
        for b, n in enumerate(nbs):
            bt[b, :n] = perm[i:i + n]
            i += n
            tail = n * bs - lens_k[b]  # slots past the sequence's end: never written, NaN here
            if tail:
                k[bt[b, n - 1], bs - tail:] = float("nan")
                v[bt[b, n - 1], bs - tail:] = float("nan")
        k[perm[i:].long()] = float("nan")  # pages no sequence uses
        v[perm[i:].long()] = float("nan")
        return dict(q=q, k=k, v=v, cu_seqlens_q=cu_q, max_seqlen_q=max(lens_q),
                    seqused_k=torch.tensor(lens_k, dtype=torch.int32, device=DEV), block_table=bt)
    k = torch.randn(sum(lens_k), kvh, d, device=DEV, dtype=dtype)
    v = torch.randn_like(k)
    cu_k = torch.tensor([0] + list(torch.tensor(lens_k).cumsum(0)), dtype=torch.int32, device=DEV)
    return dict(q=q, k=k, v=v, cu_seqlens_q=cu_q, max_seqlen_q=max(lens_q), cu_seqlens_k=cu_k)


def check(name, case, causal=True, wl=-1, wr=-1, sw=None, softcap=0.0, config=None, extra=None):
    q = case["q"]
    out = torch.full_like(q, float("nan"))
    kw = dict(cu_seqlens_q=case["cu_seqlens_q"], max_seqlen_q=case["max_seqlen_q"],
              cu_seqlens_k=case.get("cu_seqlens_k"), seqused_k=case.get("seqused_k"),
              block_table=case.get("block_table"), causal=causal, window_left=wl, window_right=wr,
              sliding_window=sw, softcap=softcap)
    if config is None and extra is None:
        o, lse = ascend_kernels.flash_attention(q, case["k"], case["v"], out=out, return_lse=True, **kw)
    else:
        p = fa._prepare(q, case["k"], case["v"], out=out, return_lse=True, **kw)
        fa._launch(p, {**(config or fa._default_config("cuda", p)), **(extra or {})})
        o, lse = p.out, p.lse
    torch.cuda.synchronize()
    wl2, wr2 = fa.resolve_window(causal, wl, wr, sw)
    ro, rl = ref.flash_attention(q, case["k"], case["v"], case["cu_seqlens_q"], case.get("cu_seqlens_k"),
                                 case.get("seqused_k"), case.get("block_table"),
                                 q.shape[-1] ** -0.5, wl2, wr2, softcap,
                                 out=torch.empty(q.shape, dtype=torch.float32, device=DEV),
                                 return_lse=True)
    rel = ((o.float() - ro).norm() / ro.norm()).item()
    ok_inf = bool(((lse == -math.inf) == (rl == -math.inf)).all())
    lerr = (lse - rl).abs().nan_to_num(0.0, 0.0, 0.0).max().item()
    ok = (not o.isnan().any().item()) and rel < 1e-2 and ok_inf and lerr < 1e-2
    tag = f" {extra}" if extra else ""
    say(f"  {'OK ' if ok else 'BAD'} {name}{tag}: rel {rel:.2e} lse {lerr:.1e}")
    return ok


def correctness():
    say("## correctness (vs reference in fp32 on the GPU)")
    torch.manual_seed(0)
    ok = True
    bf, hf = torch.bfloat16, torch.float16
    ok &= check("causal d128 bf16", rand_case([1, 77, 300, 1024], [1, 77, 300, 1024], 4, 4, 128, bf))
    ok &= check("noncausal d64 fp16 gqa4", rand_case([5, 129, 700], [5, 200, 700], 8, 2, 64, hf), causal=False)
    ok &= check("causal d80 sk>sq gqa7", rand_case([17, 250], [90, 600], 7, 1, 80, bf))
    ok &= check("d96 window both", rand_case([300, 64], [400, 64], 4, 2, 96, bf), causal=False, wl=50, wr=17)
    ok &= check("d112 right only", rand_case([300], [333], 2, 1, 112, hf), causal=False, wr=9)
    ok &= check("d192 left only", rand_case([300], [333], 2, 2, 192, bf), causal=False, wl=100)
    ok &= check("d256 sliding+softcap", rand_case([513, 31], [513, 31], 4, 1, 256, bf), sw=128, softcap=30.0)
    for bs in (16, 32, 64, 128):
        ok &= check(f"paged bs{bs} causal d128", rand_case([33, 400], [1000, 400], 8, 2, 128, bf, bs=bs))
    ok &= check("paged bs128 sliding d64", rand_case([256, 3], [2000, 800], 4, 4, 64, hf, bs=128), sw=300)
    ok &= check("empty rows (sk<sq causal)", rand_case([100], [30], 2, 2, 64, bf))
    # k / v as strided views of one fused qkv tensor (row stride > kv heads x head size)
    c = rand_case([200, 77], [200, 77], 4, 2, 128, bf)
    qkv = torch.randn(c["q"].shape[0], 8, 128, device=DEV, dtype=bf)
    c.update(q=qkv[:, :4], k=qkv[:, 4:6], v=qkv[:, 6:8])
    ok &= check("fused qkv views d128 gqa2", c)
    # a paged cache inside a [num_blocks, 2, block_size, ...] tensor (pages not adjacent)
    c = rand_case([64, 300], [700, 300], 4, 2, 128, bf, bs=32)
    kv = torch.stack([c["k"], c["v"]], dim=1)
    c.update(k=kv[:, 0], v=kv[:, 1])
    ok &= check("paged kv-interleaved cache bs32", c)
    # the persistent loop (fewer programs than tasks) with the default tiles
    c = rand_case([1, 77, 300, 1024], [1, 77, 300, 1024], 4, 4, 128, bf)
    ok &= check("causal d128 persistent grid", c, extra={"grid_programs_per_core": 1})
    # torch.compile(fullgraph=True) over a call
    case = rand_case([100, 300], [100, 300], 4, 2, 128, bf)

    def f(q, k, v, cu):
        return ascend_kernels.flash_attention(q, k, v, cu_seqlens_q=cu, max_seqlen_q=300, causal=True) * 2

    cf = torch.compile(f, fullgraph=True)
    got = cf(case["q"], case["k"], case["v"], case["cu_seqlens_q"])
    want = f(case["q"], case["k"], case["v"], case["cu_seqlens_q"])
    same = torch.equal(got, want)
    say(f"  {'OK ' if same else 'BAD'} torch.compile(fullgraph=True) matches eager bit for bit")
    ok &= same
    say(f"correctness: {'ALL OK' if ok else 'FAILURES'}")
    return ok


def perf(sweep):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    B, S, H, D, W = 2, 4096, 32, 128, 1024
    if os.environ.get("FA_CHECK_TINY"):  # a dry run of the script's flow (DEV patched), no timings
        B, S, H, W = 1, 256, 2, 64
    dt = torch.bfloat16
    torch.manual_seed(1)
    q = torch.randn(B * S, H, D, device=DEV, dtype=dt)
    k = torch.randn(B * S, H, D, device=DEV, dtype=dt)
    v = torch.randn(B * S, H, D, device=DEV, dtype=dt)
    cu = torch.arange(0, B + 1, device=DEV, dtype=torch.int32) * S
    # peers in their native [B, H, S, D] layout (contiguous, copies not timed)
    qb, kb, vb = (t.view(B, S, H, D).transpose(1, 2).contiguous() for t in (q, k, v))
    f_all = 4.0 * B * H * S * S * D
    f_causal = f_all / 2
    pairs_w = W * (W + 1) / 2 + (S - W) * W
    f_win = 4.0 * B * H * pairs_w * D
    flops = {"causal": f_causal, "noncausal": f_all, "window1024": f_win, "paged_causal": f_causal}

    def tflops(kind, ms):
        return flops[kind] / ms / 1e9

    res = {}
    # peers
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        res[("sdpa_cudnn", "causal")] = bench(lambda: torch.nn.functional.scaled_dot_product_attention(qb, kb, vb, is_causal=True))
        res[("sdpa_cudnn", "noncausal")] = bench(lambda: torch.nn.functional.scaled_dot_product_attention(qb, kb, vb))
    flex = torch.compile(flex_attention, dynamic=False)
    bm_c = create_block_mask(lambda b, h, qi, ki: qi >= ki, None, None, S, S, device=DEV)
    bm_w = create_block_mask(lambda b, h, qi, ki: (qi >= ki) & (qi - ki < W), None, None, S, S, device=DEV)
    res[("flex", "causal")] = bench(lambda: flex(qb, kb, vb, block_mask=bm_c))
    res[("flex", "noncausal")] = bench(lambda: flex(qb, kb, vb))
    res[("flex", "window1024")] = bench(lambda: flex(qb, kb, vb, block_mask=bm_w))
    # check the peers agree with us on the causal output (sanity of the comparison)
    o_ours = ascend_kernels.flash_attention(q, k, v, cu_seqlens_q=cu, max_seqlen_q=S, causal=True)
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        o_sdpa = torch.nn.functional.scaled_dot_product_attention(qb, kb, vb, is_causal=True)
    o_sdpa = o_sdpa.transpose(1, 2).reshape(B * S, H, D)
    say(f"ours vs sdpa cudnn causal: rel {((o_ours.float() - o_sdpa.float()).norm() / o_sdpa.float().norm()).item():.2e}")
    o_w = ascend_kernels.flash_attention(q, k, v, cu_seqlens_q=cu, max_seqlen_q=S, sliding_window=W)
    o_fw = flex(qb, kb, vb, block_mask=bm_w).transpose(1, 2).reshape(B * S, H, D)
    say(f"ours vs flex window: rel {((o_w.float() - o_fw.float()).norm() / o_fw.float().norm()).item():.2e}")

    # paged cache, block 128, shuffled pages
    bs = 128
    nbs = S // bs
    perm = torch.randperm(B * nbs, device=DEV).to(torch.int32)
    kc = torch.empty(B * nbs, bs, H, D, device=DEV, dtype=dt)
    vc = torch.empty_like(kc)
    bt = perm.view(B, nbs)
    for b in range(B):
        kc[bt[b].long()] = k[b * S:(b + 1) * S].view(nbs, bs, H, D)
        vc[bt[b].long()] = v[b * S:(b + 1) * S].view(nbs, bs, H, D)
    used = torch.full((B,), S, device=DEV, dtype=torch.int32)
    o_p = ascend_kernels.flash_attention(q, kc, vc, cu_seqlens_q=cu, max_seqlen_q=S, seqused_k=used, block_table=bt)
    say(f"paged vs contiguous output: max abs diff {(o_p.float() - o_ours.float()).abs().max().item():.2e}")

    probs = {
        "causal": fa._prepare(q, k, v, cu_seqlens_q=cu, max_seqlen_q=S, causal=True),
        "noncausal": fa._prepare(q, k, v, cu_seqlens_q=cu, max_seqlen_q=S, causal=False),
        "window1024": fa._prepare(q, k, v, cu_seqlens_q=cu, max_seqlen_q=S, sliding_window=W),
        "paged_causal": fa._prepare(q, kc, vc, cu_seqlens_q=cu, max_seqlen_q=S, seqused_k=used, block_table=bt),
    }
    default = {kind: fa._default_config("cuda", p) for kind, p in probs.items()}
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        o_sdpa_nc = torch.nn.functional.scaled_dot_product_attention(qb, kb, vb)
    o_sdpa_nc = o_sdpa_nc.transpose(1, 2).reshape(B * S, H, D)
    # what each kind's output is checked against: cuDNN (causal, non-causal), flex (window)
    want = {"causal": o_sdpa, "noncausal": o_sdpa_nc, "window1024": o_fw, "paged_causal": o_sdpa}

    def cfg(bm, bn, w, s, gpc=64):
        return {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": w, "num_stages": s,
                "grid_programs_per_core": gpc}

    def key(c):
        return json.dumps(c, sort_keys=True)

    tiles = [(128, 64, 8, 3), (128, 128, 8, 3), (128, 128, 8, 2), (128, 64, 8, 4), (64, 64, 4, 3),
             (64, 128, 4, 3)]
    cont = [default["causal"]] + ([cfg(*t) for t in tiles] if sweep else [])
    cands = {"causal": cont + ([cfg(128, 128, 8, 3, 1)] if sweep else []),
             "noncausal": cont,
             "window1024": [default["window1024"]] + ([cfg(*t) for t in tiles] if sweep else []),
             "paged_causal": [default["paged_causal"]] + ([cfg(*t) for t in tiles[:4]] if sweep else [])}
    sweep_rows = []
    bad_variants = []
    for kind, p in probs.items():
        best = None
        seen = set()
        for c in cands[kind]:
            if key(c) in seen:
                continue
            seen.add(key(c))
            try:
                fa._launch(p, c)
                torch.cuda.synchronize()
                rel = ((p.out.float() - want[kind].float()).norm() / want[kind].float().norm()).item()
                ms = bench(lambda: fa._launch(p, c))
            except Exception as exc:  # noqa: BLE001
                sweep_rows.append((kind, c, f"failed {type(exc).__name__}: {str(exc)[:100]}"))
                continue
            good = rel < 1e-2 and math.isfinite(rel)
            if not good:
                bad_variants.append((kind, c, rel))
            sweep_rows.append((kind, c, f"{ms:.3f} ms {tflops(kind, ms):.0f} TFLOP/s  rel {rel:.1e}{'' if good else ' BAD'}"))
            if good and (best is None or ms < best[0]):
                best = (ms, c)
        res[("ours", kind)] = best[0]
        res[("ours_cfg", kind)] = best[1]
        res[("ours_default", kind)] = bench(lambda: fa._launch(p, default[kind]))
    # repeat: the previous default and this default, timed again for the spread
    for kind in ("causal", "noncausal"):
        p = probs[kind]
        for name, c in (("prev default M128 N64 w8 s3", cfg(128, 64, 8, 3)), ("default", default[kind])):
            sweep_rows.append((kind, c, f"{bench(lambda: fa._launch(p, c)):.3f} ms (repeat: {name})"))
    # the peers again at the end: ratios use each peer's faster time
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        t2 = bench(lambda: torch.nn.functional.scaled_dot_product_attention(qb, kb, vb, is_causal=True))
        say(f"sdpa cudnn causal repeat: {t2:.3f} ms (first {res[('sdpa_cudnn', 'causal')]:.3f})")
        res[("sdpa_cudnn", "causal")] = min(t2, res[("sdpa_cudnn", "causal")])
        t2 = bench(lambda: torch.nn.functional.scaled_dot_product_attention(qb, kb, vb))
        say(f"sdpa cudnn noncausal repeat: {t2:.3f} ms (first {res[('sdpa_cudnn', 'noncausal')]:.3f})")
        res[("sdpa_cudnn", "noncausal")] = min(t2, res[("sdpa_cudnn", "noncausal")])
    for kind, fn in (("causal", lambda: flex(qb, kb, vb, block_mask=bm_c)), ("noncausal", lambda: flex(qb, kb, vb)),
                     ("window1024", lambda: flex(qb, kb, vb, block_mask=bm_w))):
        t2 = bench(fn)
        say(f"flex {kind} repeat: {t2:.3f} ms (first {res[('flex', kind)]:.3f})")
        res[("flex", kind)] = min(t2, res[("flex", kind)])
    say("## config sweep (g = grid_programs_per_core; rel vs cuDNN / flex output)")
    for kind, c, t in sweep_rows:
        say(f"  {kind:13s} M{c['BLOCK_M']} N{c['BLOCK_N']} w{c['num_warps']} s{c['num_stages']} "
            f"g{c['grid_programs_per_core']}: {t}")
    if bad_variants:
        say(f"BAD variants: {bad_variants}")
    say(f"## B{B} S{S} H{H} D{D} bf16, {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    say("| case | ours (best) ms | TFLOP/s | ours (default) TFLOP/s | sdpa cuDNN TFLOP/s | flex TFLOP/s | ours/cuDNN | ours/flex |")
    say("|---|---|---|---|---|---|---|---|")
    for kind in ("causal", "noncausal", "window1024", "paged_causal"):
        ours = res[("ours", kind)]
        cud = res.get(("sdpa_cudnn", kind if kind != "paged_causal" else "causal"))
        fl = res.get(("flex", kind if kind != "paged_causal" else "causal"))
        cud_s = f"{tflops(kind, cud):.0f}" if cud and kind != "paged_causal" else "-"
        fl_s = f"{tflops(kind, fl):.0f}" if fl and kind != "paged_causal" else "-"
        r_c = f"{cud / ours:.2f}x" if cud and kind != "paged_causal" else "-"
        r_f = f"{fl / ours:.2f}x" if fl and kind != "paged_causal" else "-"
        say(f"| {kind} | {ours:.3f} | {tflops(kind, ours):.0f} | {tflops(kind, res[('ours_default', kind)]):.0f} | {cud_s} | {fl_s} | {r_c} | {r_f} |")
    say(f"paged (bs 128) / contiguous causal time: {res[('ours', 'paged_causal')] / res[('ours', 'causal')]:.3f}")
    say("best configs: " + json.dumps({k: res[('ours_cfg', k)] for k in probs}))


def host_overhead():
    """A small prefill (B16 x 512, 32/8 heads, head 128, causal): the public eager call, one
    launch of the default config (no validation or dispatch), and a CUDA graph replay."""
    B, S, H, KVH, D = 16, 512, 32, 8, 128
    torch.manual_seed(2)
    q = torch.randn(B * S, H, D, device=DEV, dtype=torch.bfloat16)
    k = torch.randn(B * S, KVH, D, device=DEV, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    cu = torch.arange(0, B + 1, device=DEV, dtype=torch.int32) * S
    out = torch.empty_like(q)

    def eager():
        ascend_kernels.flash_attention(q, k, v, cu_seqlens_q=cu, max_seqlen_q=S, out=out)

    p = fa._prepare(q, k, v, cu_seqlens_q=cu, max_seqlen_q=S, out=out)
    c = fa._default_config("cuda", p)
    t_eager, t_launch = bench(eager), bench(lambda: fa._launch(p, c))
    t_graph = triton.testing.do_bench_cudagraph(eager, rep=200)
    say(f"## host overhead, B{B} S{S} H{H}/{KVH} D{D} causal: eager {t_eager * 1e3:.0f} us, "
        f"launch only {t_launch * 1e3:.0f} us, graph replay {t_graph * 1e3:.0f} us")


def short_sweep():
    """Tiles for shorter, GQA prefills (causal, head 128): launch-only times against cuDNN on
    the same problem (K/V heads repeated for it)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    say("## short / GQA prefill sweep (launch only, causal, head 128, bf16)")
    for B, S, H, KVH in ((16, 512, 32, 8), (8, 2048, 8, 1), (4, 4096, 32, 8), (32, 256, 32, 8)):
        torch.manual_seed(3)
        q = torch.randn(B * S, H, 128, device=DEV, dtype=torch.bfloat16)
        k = torch.randn(B * S, KVH, 128, device=DEV, dtype=torch.bfloat16)
        v = torch.randn_like(k)
        cu = torch.arange(0, B + 1, device=DEV, dtype=torch.int32) * S
        qb = q.view(B, S, H, 128).transpose(1, 2).contiguous()
        kb, vb = (t.view(B, S, KVH, 128).repeat_interleave(H // KVH, dim=2).transpose(1, 2).contiguous()
                  for t in (k, v))
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            t_ref = bench(lambda: torch.nn.functional.scaled_dot_product_attention(qb, kb, vb, is_causal=True))
            want = torch.nn.functional.scaled_dot_product_attention(qb, kb, vb, is_causal=True)
        want = want.transpose(1, 2).reshape(B * S, H, 128).float()
        p = fa._prepare(q, k, v, cu_seqlens_q=cu, max_seqlen_q=S)
        flops = 2.0 * B * H * S * S * 128
        say(f"  B{B} S{S} H{H}/{KVH}: cuDNN {t_ref * 1e3:.0f} us ({flops / t_ref / 1e9:.0f} TFLOP/s); "
            f"default {fa._default_config('cuda', p)}")
        for bm, bn, w, st in ((128, 128, 8, 3), (128, 64, 8, 3), (64, 64, 4, 3), (64, 128, 4, 3),
                              (64, 64, 4, 2), (128, 64, 4, 3), (64, 32, 4, 3)):
            c = {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": w, "num_stages": st,
                 "grid_programs_per_core": 64}
            fa._launch(p, c)
            rel = ((p.out.float() - want).norm() / want.norm()).item()
            t = bench(lambda: fa._launch(p, c))
            say(f"    M{bm} N{bn} w{w} s{st}: {t * 1e3:.0f} us {flops / t / 1e9:.0f} TFLOP/s "
                f"{t_ref / t:.2f}x cuDNN rel {rel:.1e}{'' if rel < 1e-2 else ' BAD'}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--no-correctness", action="store_true")
    a = ap.parse_args()
    t0 = time.time()
    ok = True if a.no_correctness else correctness()
    perf(a.sweep)
    host_overhead()
    if a.sweep:
        short_sweep()
    say(f"total {time.time() - t0:.0f}s")
    sys.exit(0 if ok else 1)
