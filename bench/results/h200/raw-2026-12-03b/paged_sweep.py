"""Config sweep of paged decode (graph replay) for the split-KV and 8/1-head cases."""
import itertools, json, sys, time
import ascend_kernels as ak
import torch
from ascend_kernels import force_config
import triton.testing

dev = "cuda"


def copy_tbps(nbytes):
    a = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=dev)
    b = torch.empty_like(a)
    ms = triton.testing.do_bench_cudagraph(lambda: b.copy_(a), rep=100, return_mode="median")
    return 2 * nbytes / ms / 1e9  # read + write


def case(seqs, ctx, heads, kvh, d=128, bs=128):
    torch.manual_seed(0)
    pages = seqs * ctx // bs
    q = torch.randn(seqs, heads, d, device=dev, dtype=torch.bfloat16)
    kc = torch.randn(pages, bs, kvh, d, device=dev, dtype=torch.bfloat16)
    vc = torch.randn_like(kc)
    bt = torch.randperm(pages, device=dev).to(torch.int32).reshape(seqs, ctx // bs)
    lens = torch.full((seqs,), ctx, dtype=torch.int32, device=dev)
    out = torch.empty_like(q)
    return (q, kc, vc, bt, lens), out, 2 * kc.numel() * 2


def time_cfg(args, out, cfg):
    with force_config("paged_attention", cfg):
        fn = lambda: ak.paged_attention(*args, out=out)
        fn()
        torch.cuda.synchronize()
        return triton.testing.do_bench_cudagraph(fn, rep=60, return_mode="median")


def sweep(name, shape, cfgs):
    args, out, nbytes = case(*shape)
    cbw = copy_tbps(nbytes)
    ref = None
    base = time_cfg(args, out, {})
    ref = out.clone()
    rows = [("heuristic", base)]
    for cfg in cfgs:
        t0 = time.time()
        try:
            ms = time_cfg(args, out, cfg)
            err = (out.float() - ref.float()).abs().max().item()
            rows.append((json.dumps(cfg), ms, err))
        except Exception as e:  # noqa
            rows.append((json.dumps(cfg), float("nan"), repr(e)[:80]))
    print(f"\n## {name} {shape}: {nbytes/1e6:.1f} MB, copy {cbw:.2f} TB/s (read+write)")
    print("| config | us | % of copy | err |\n|---|---:|---:|---|")
    for r in sorted(rows, key=lambda r: r[1] if r[1] == r[1] else 1e9):
        us = r[1] * 1e3
        print(f"| {r[0]} | {us:.1f} | {100 * nbytes / (r[1] * 1e-3) / (cbw * 1e12):.0f}% | {r[2] if len(r) > 2 else ''} |")
    sys.stdout.flush()


base = dict(grid_programs_per_core=8)
cfgs = []
for splits, merge_last in itertools.product([33, 64, 128], [True, False]):
    for step, warps, stages in [(32, 4, 2), (64, 4, 3), (128, 8, 3)]:
        cfgs.append(dict(base, grid_num_splits=splits, MERGE_LAST=merge_last, grid_step_tokens=step,
                         num_warps=warps, num_stages=stages))
sweep("B1 x 32k 32/8", (1, 32768, 32, 8), cfgs)
cfgs = []
for splits, merge_last in itertools.product([1, 2, 4], [True, False]):
    if splits == 1 and not merge_last:
        continue
    for step, warps, stages in [(32, 4, 2), (64, 4, 3), (128, 8, 3)]:
        cfgs.append(dict(base, grid_num_splits=splits, MERGE_LAST=merge_last, grid_step_tokens=step,
                         num_warps=warps, num_stages=stages))
sweep("B256 x 2048 8/1", (256, 2048, 8, 1), cfgs)
