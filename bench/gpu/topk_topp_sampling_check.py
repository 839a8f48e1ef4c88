"""topk_topp_sampling on one CUDA GPU: correctness against the reference, then timings.

    PYTHONPATH=. python3 bench/gpu/topk_topp_sampling_check.py [--quick]

Correctness: return_probs vs reference (float64, CPU) for fp32/fp16/bf16, vocab 128256 and
262144, scalar and tensor parameters, pool and general paths; tokens in range and kept; same
seed -> same token across batch layouts and paths; ties, NaN/inf rows; a chi-square test of the
draw (vocab 40, 200k seeded draws). Timings (triton.testing.do_bench medians, inputs rotated
over several buffers so that batch 64/256 do not sit in L2): this op vs a vLLM-style torch sort
path and a torch.topk-based path, eager and CUDA-graph replays, batch 1/64/256, fp32 logits,
vocab 128256, top_k 50, top_p 0.9, and top_p 0.9 alone (select path); plus select-path variants
and the general path alone at batch 64.
"""
import math
import sys
import time

import ascend_kernels  # noqa: F401  (before triton)
import torch
import triton
import triton.testing

from ascend_kernels.ops import topk_topp_sampling as op
from ascend_kernels.reference import topk_topp_sampling as ref
from bench.gpu._timing import graph_of, median_ms as bench

DEV = torch.device("cuda")
FAILS = []


def check(name, ok, detail=""):
    print(f"  [{'ok' if ok else 'FAIL'}] {name} {detail}")
    if not ok:
        FAILS.append(name)


def run_op(logits, config=None, **kw):
    p = op._validate(logits, kw.get("top_k"), kw.get("top_p"), kw.get("temperature"),
                     kw.get("seeds"), None, kw.get("return_probs", False))
    if p.seeds is None:
        p.seeds = ref.draw_seeds(p.batch, DEV)
    return op._launch(p, config or op._default_config("cuda", p))


def correctness():
    print("== correctness")
    torch.manual_seed(1234)
    general = dict(op._default_config("cuda", None), USE_POOL=False)
    for dtype, vocabs in ((torch.float32, (128256, 262144, 1000)), (torch.bfloat16, (128256,)),
                          (torch.float16, (1000,))):
        for vocab in vocabs:
            b = 6
            logits = (torch.randn(b, vocab, device=DEV) * 3).to(dtype)
            seeds = torch.randint(0, 2 ** 62, (b,), device=DEV)
            combos = [dict(top_k=50, top_p=0.9), dict(top_k=50), dict(top_p=0.9), dict(),
                      dict(top_k=torch.tensor([1, 7, 0, 50, 400, vocab + 3], device=DEV),
                           top_p=torch.tensor([0.5, 1.0, 0.95, 0.2, 0.99, 0.8], device=DEV),
                           temperature=torch.tensor([0.7, 1.0, 1.3, 0.0, 2.0, 0.5], device=DEV)),
                      dict(top_k=2000, top_p=0.8, temperature=0.6)]
            for kw in combos:
                rt, rp = ref.topk_topp_sampling(logits.cpu(), **{k: (v.cpu() if torch.is_tensor(v) else v) for k, v in kw.items()},
                                                seeds=seeds.cpu(), return_probs=True)
                tok, probs = run_op(logits, seeds=seeds, return_probs=True, **kw)
                tok2, _ = run_op(logits, config=general, seeds=seeds, return_probs=True, **kw)
                torch.cuda.synchronize()
                err = (probs.cpu().double() - rp.double()).abs().max().item()
                inrange = bool(((tok >= 0) & (tok < vocab)).all())
                kept = bool((rp.gather(1, tok.cpu()[:, None]) > 0).all())
                same = bool((tok == tok2).all())
                name = f"{str(dtype)[6:]} V={vocab} {sorted(kw)}"
                check(name, err < 2e-5 and inrange and kept and same,
                      f"max|dp|={err:.2e} in_range={inrange} kept={kept} pool==general={same}")
    # select path (top-p alone, k > P_MAX) vs general path: same tokens, same kept set
    for scale in (1.0, 3.0, 8.0):
        x = torch.randn(64, 128256, device=DEV) * scale
        seeds = torch.randint(0, 2 ** 62, (64,), device=DEV)
        for kw in (dict(top_p=0.9), dict(top_p=torch.rand(64, device=DEV) * 0.98 + 0.01),
                   dict(top_k=1500, top_p=0.95, temperature=0.8), dict(top_k=3000)):
            t1, p1 = run_op(x, seeds=seeds, return_probs=True, **kw)
            t2, p2 = run_op(x, config=general, seeds=seeds, return_probs=True, **kw)
            same = int((t1 == t2).sum())
            # the mass sums run in another order: a token AT the top-p boundary may flip (rounding)
            diff = int(((p1 > 0) != (p2 > 0)).sum())
            err = (p1 - p2).abs().max().item()
            check(f"select==general scale={scale} {sorted(kw)}", same == 64 and diff <= 8 and err < 1e-4,
                  f"same tokens {same}/64 kept-set differences={diff} (of 64 rows) max|dp|={err:.1e}")
    # batch independence: row r of a big batch == same row alone
    logits = torch.randn(64, 128256, device=DEV) * 3
    seeds = torch.randint(0, 2 ** 62, (64,), device=DEV)
    tok = run_op(logits, seeds=seeds, top_k=50, top_p=0.9)[0]
    alone = torch.stack([run_op(logits[i:i + 1], seeds=seeds[i:i + 1], top_k=50, top_p=0.9)[0][0]
                         for i in (0, 17, 63)])
    check("rows independent of the batch", bool((alone == tok[[0, 17, 63]]).all()))
    # ties, NaN, inf
    x = torch.randn(4, 5000, device=DEV)
    x[0, :] = float("nan")
    x[1, 100:110] = 50.0                       # 10-way tie at the top; top_k 3 keeps all 10
    x[2, 7] = float("inf")
    x[2, 9] = float("inf")
    x[3, :] = float("-inf")
    tok, probs = run_op(x, top_k=3, seeds=torch.arange(4, device=DEV), return_probs=True)
    rt, rp = ref.topk_topp_sampling(x.cpu(), top_k=3, seeds=torch.arange(4), return_probs=True)
    err = (probs.cpu().double() - rp.double()).abs().max().item()
    check("nan/inf/ties rows", err < 1e-6 and int(tok[0]) == 0 and int(tok[3]) == 0
          and 100 <= int(tok[1]) < 110 and int(tok[2]) in (7, 9)
          and abs(float(probs[1, 100:110].sum()) - 1) < 1e-5, f"tokens={tok.tolist()} err={err:.1e}")
    # chi-square of the draw: 200k seeded rows of one logit vector
    v, n = 40, 200_000
    base = torch.randn(1, v) * 1.5
    for kw in (dict(top_k=10), dict(top_p=0.8), dict(top_k=12, top_p=0.7, temperature=0.7), dict()):
        probs = ref.filtered(base, **kw)[0][0]
        tok = run_op(base.to(DEV).expand(n, v).contiguous(), seeds=torch.arange(n, device=DEV) * 7919 + 3,
                     **kw)[0].cpu()
        obs = torch.bincount(tok, minlength=v).double()
        keep = probs > 0
        exp = probs[keep] * n
        stat = float(((obs[keep] - exp) ** 2 / exp).sum())
        df = int(keep.sum()) - 1
        crit = df * (1 - 2 / (9 * df) + 3.09 * math.sqrt(2 / (9 * df))) ** 3 if df > 0 else 0
        outside = int(obs[~keep].sum())
        check(f"chi-square {sorted(kw)}", stat < crit and outside == 0,
              f"stat={stat:.1f} crit(0.001)={crit:.1f} df={df} outside={outside}")


# ------------------------------------------------------------------ torch baselines

def torch_sort_path(logits, k, p, temperature, gen=None):
    """vLLM's apply_top_k_top_p + exponential race, float32 on the GPU."""
    x = logits.float() / temperature.view(-1, 1)
    s, idx = x.sort(dim=-1, descending=False)
    thr = s.gather(1, (s.shape[1] - k).view(-1, 1))
    s = s.masked_fill(s < thr, float("-inf"))
    ps = s.softmax(dim=-1)
    cs = ps.cumsum(dim=-1)
    mask = cs <= 1 - p.view(-1, 1)
    mask[:, -1] = False
    s = s.masked_fill(mask, float("-inf"))
    x = torch.empty_like(s).scatter_(1, idx, s)
    probs = x.softmax(dim=-1)
    q = torch.empty_like(probs).exponential_()
    return (probs / q).argmax(dim=-1)


def torch_topk_path(logits, k: int, p, temperature):
    """torch.topk(k) then top-p on the k values, exponential race, gather the id."""
    v, idx = (logits.float() / temperature.view(-1, 1)).topk(k, dim=-1)          # sorted descending
    pv = v.softmax(dim=-1)
    excl = pv.cumsum(dim=-1) - pv
    v = v.masked_fill(excl >= p.view(-1, 1), float("-inf"))
    probs = v.softmax(dim=-1)
    q = torch.empty_like(probs).exponential_()
    return idx.gather(1, (probs / q).argmax(dim=-1, keepdim=True)).squeeze(1)


def VARIANTS(cfg):
    return [dict(cfg), dict(cfg, num_warps=16), dict(cfg, SC=1024, num_warps=16),
            dict(cfg, SNC=8), dict(cfg, SNC=8, num_warps=16), dict(cfg, num_warps=4),
            dict(cfg, CHUNK=2048, SC=1024, num_warps=16), dict(cfg, SC=256, num_warps=16)]


def variants_only():
    """--variants: select-path variants at batch 1 and 64 (top_p 0.9 alone) vs the sort path."""
    vocab, pp = 128256, 0.9
    for b in (1, 64):
        x = torch.randn(b, vocab, device=DEV) * 3
        seeds = torch.randint(0, 2 ** 62, (b,), device=DEV)
        prp = op._validate(x, None, pp, 1.0, seeds, None, False)
        cfg = op._default_config("cuda", prp)
        ref_tok = op._launch(prp, dict(cfg, USE_POOL=False))[0]
        kfull = torch.full((b,), vocab, device=DEV, dtype=torch.int64)
        pt, tt = torch.full((b,), pp, device=DEV), torch.ones(b, device=DEV)
        srt = bench(graph_of(lambda: torch_sort_path(x, kfull, pt, tt)).replay, rep=50)
        print(f"  batch {b}: torch sort path (graph) {srt * 1e3:.1f} us")
        for c in VARIANTS(cfg):
            same = bool((op._launch(prp, c)[0] == ref_tok).all())
            ms = bench(graph_of(lambda: op._launch(prp, c)).replay, rep=50)
            print(f"    CHUNK={c['CHUNK']:5d} SC={c['SC']:5d} SNC={c['SNC']:3d} warps={c['num_warps']:2d} "
                  f"graph {ms * 1e3:8.1f} us  sort/ours {srt / ms:4.1f}x  tokens==general {same}")
            check(f"variant b={b} {c['SC']},{c['SNC']},{c['num_warps']}", same)


def timings(quick=False):
    print("== timings (ms, median; fp32 logits, vocab 128256, top_k 50, top_p 0.9, T 1.0)")
    vocab, k, pp = 128256, 50, 0.9
    # copy bandwidth (read + write bytes)
    big = torch.empty(256 * 2 ** 20, dtype=torch.uint8, device=DEV)
    dst = torch.empty_like(big)
    t = bench(lambda: dst.copy_(big))
    bw = 2 * big.numel() / (t * 1e-3) / 1e9
    print(f"  copy bandwidth {bw:.0f} GB/s")
    del big, dst
    rows = []
    for b in (1, 64, 256):
        nbuf = max(1, min(8, (160 * 2 ** 20) // (b * vocab * 4)))
        bufs = [torch.randn(b, vocab, device=DEV) * 3 for _ in range(nbuf)]
        seeds = torch.randint(0, 2 ** 62, (b,), device=DEV)
        kt = torch.full((b,), k, device=DEV, dtype=torch.int64)
        pt = torch.full((b,), pp, device=DEV)
        tt = torch.ones(b, device=DEV)
        it = [0]

        def nxt():
            it[0] = (it[0] + 1) % nbuf
            return bufs[it[0]]

        def nxt_i():
            it[0] = (it[0] + 1) % nbuf
            return it[0]

        probs = [op._validate(x, k, pp, 1.0, seeds, None, False) for x in bufs]
        cfg = op._default_config("cuda", probs[0])
        kfull = torch.full((b,), vocab, device=DEV, dtype=torch.int64)
        probs_p = [op._validate(x, None, pp, 1.0, seeds, None, False) for x in bufs]
        cfg_p = op._default_config("cuda", probs_p[0])  # the config the public op runs for top-p alone
        fns = {
            "top-p only: ours (public op)": lambda: ascend_kernels.topk_topp_sampling(nxt(), top_p=pp, seeds=seeds),
            "top-p only: ours (launch only)": lambda: op._launch(probs_p[nxt_i()], cfg_p),
            "top-p only: torch sort path": lambda: torch_sort_path(nxt(), kfull, pt, tt),
            "ours (public op)": lambda: ascend_kernels.topk_topp_sampling(nxt(), top_k=k, top_p=pp, seeds=seeds),
            "ours (launch only)": lambda: op._launch(probs[nxt_i()], cfg),
            "torch sort path": lambda: torch_sort_path(nxt(), kt, pt, tt),
            "torch topk path": lambda: torch_topk_path(nxt(), k, pt, tt),
        }
        res = {}
        for name, fn in fns.items():
            res[name] = bench(fn)
        # CUDA graphs (one input buffer; a graph replays fixed addresses)
        x0 = bufs[0]
        gfns = {"top-p only: ours (graph)": lambda: op._launch(probs_p[0], cfg_p),
                "top-p only: torch sort path (graph)": lambda: torch_sort_path(x0, kfull, pt, tt),
                "ours (graph)": lambda: op._launch(probs[0], cfg),
                "torch sort path (graph)": lambda: torch_sort_path(x0, kt, pt, tt),
                "torch topk path (graph)": lambda: torch_topk_path(x0, k, pt, tt)}
        for name, fn in gfns.items():
            try:
                g = graph_of(fn)
                res[name] = bench(g.replay)
            except Exception as exc:  # noqa: BLE001
                print(f"  graph {name} failed: {type(exc).__name__}: {exc}")
                res[name] = float("nan")
        floor = b * vocab * 4 / (bw * 1e9) * 1e3
        print(f"  batch {b}: read-once floor {floor * 1e3:.1f} us")
        for name, ms in res.items():
            print(f"    {name:28s} {ms * 1e3:9.1f} us")
        rows.append((b, res, floor))
        del bufs
    if not quick:
        print("== select-path variants, batch 64, top_p 0.9 alone (launch only, us)")
        x = torch.randn(64, vocab, device=DEV) * 3
        seeds = torch.randint(0, 2 ** 62, (64,), device=DEV)
        prp = op._validate(x, None, pp, 1.0, seeds, None, False)
        ref_tok = op._launch(prp, cfg)[0]
        variants = VARIANTS(cfg)
        for c in variants:
            try:
                same = bool((op._launch(prp, c)[0] == ref_tok).all())
                ms = bench(lambda: op._launch(prp, c), rep=50)
            except Exception as exc:  # noqa: BLE001
                ms, same = float("nan"), False
                print(f"    {c} failed: {exc}")
            print(f"    CHUNK={c['CHUNK']:5d} SC={c['SC']:5d} SNC={c['SNC']:3d} warps={c['num_warps']:2d} "
                  f"{ms * 1e3:8.1f}  same tokens={same}")
            check(f"variant tokens {c['CHUNK']},{c['SC']},{c['SNC']},{c['num_warps']}", same)
        pr = op._validate(x, k, pp, 1.0, seeds, None, False)
        print("== general path only (no pool), batch 64, top_p 0.9 alone and with top_k 50")
        gen = dict(cfg, USE_POOL=False)
        for kw in (dict(top_p=0.9), dict(top_k=50, top_p=0.9)):
            pr = op._validate(x, kw.get("top_k"), kw.get("top_p"), 1.0, seeds, None, False)
            print(f"    {sorted(kw)}: {bench(lambda: op._launch(pr, gen), rep=50) * 1e3:.1f} us")
    print("== summary top-p only (us)  ours-eager  ours-graph  sort-eager  sort-graph  sort/ours (eager; graph)")
    for b, r, floor in rows:
        o, og = r["top-p only: ours (public op)"], r["top-p only: ours (graph)"]
        s, sg = r["top-p only: torch sort path"], r["top-p only: torch sort path (graph)"]
        print(f"  batch {b:4d}  {o * 1e3:10.1f} {og * 1e3:11.1f} {s * 1e3:11.1f} {sg * 1e3:11.1f}   "
              f"{s / o:5.1f}x; {sg / og:5.1f}x")
    print("== summary top-k 50 + top-p (us)   ours-eager  ours-graph  sort-eager  sort-graph  topk-eager  topk-graph"
          "  sort/ours  topk/ours (eager; graph)")
    for b, r, floor in rows:
        o, og = r["ours (public op)"], r["ours (graph)"]
        s, sg = r["torch sort path"], r["torch sort path (graph)"]
        t, tg = r["torch topk path"], r["torch topk path (graph)"]
        print(f"  batch {b:4d}  {o * 1e3:10.1f} {og * 1e3:11.1f} {s * 1e3:11.1f} {sg * 1e3:11.1f} "
              f"{t * 1e3:11.1f} {tg * 1e3:11.1f}   {s / o:5.1f}x; {sg / og:5.1f}x   {t / o:5.1f}x; {tg / og:5.1f}x")


if __name__ == "__main__":
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
    if "--variants" in sys.argv:
        variants_only()
        print("FAILS:", FAILS or "none")
        sys.exit(1 if FAILS else 0)
    t0 = time.time()
    correctness()
    print(f"  correctness took {time.time() - t0:.0f}s")
    timings(quick="--quick" in sys.argv)
    print("FAILS:", FAILS or "none")
    sys.exit(1 if FAILS else 0)
