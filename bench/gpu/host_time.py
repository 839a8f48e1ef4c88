"""Eager host time per call of each public op against a raw Triton launch, and the graph-replay
kernel time of each op's acceptance shape, in one process (CUDA).

    PYTHONPATH=. python3 bench/gpu/host_time.py [--label NAME] [--json FILE]

Per small call: the host time (100 calls enqueued behind a sleeping kernel: what an eager
engine step pays per call on the host), the wall clock over 400 back-to-back eager calls and
one sync (the host time, unless the kernels take longer), each the best of 9 rounds in which
every call takes its turn, and the kernel time of the same small shape in graph replay. Only the
public API is used, so the same script times any version of the package on PYTHONPATH.
"""
import argparse
import contextlib
import json
import os
import time

import torch
import triton
import triton.language as tl

import ascend_kernels as ak
from bench.gpu._timing import graph_of, median_ms

DEV = "cuda"


@triton.jit
def _trivial(x_ptr):
    tl.store(x_ptr, 1.0)


SLEEP_CYCLES = 40_000_000  # about 20 ms of a sleeping kernel: the GPU stays busy while calls queue


ROUNDS = 9


def one_round(fn, calls: int = 400, queued: int = 100) -> tuple:
    """(host µs, wall µs) per call in one round. Host: `queued` calls enqueued behind a sleeping
    kernel, so no call waits on the GPU (a kernel slower than its launch would otherwise hold
    the host back once the launch queue fills). Wall: `calls` back-to-back calls and one sync."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    torch.cuda._sleep(SLEEP_CYCLES)
    start = time.perf_counter()
    for _ in range(queued):
        fn()
    host = (time.perf_counter() - start) / queued * 1e6
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return host, (time.perf_counter() - start) / calls * 1e6


def rac_inputs(tokens, heads=8, head=128, bs=16, num_blocks=1024):
    k = torch.randn(tokens, heads, head, device=DEV, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    kc = torch.zeros(num_blocks, bs, heads, head, device=DEV, dtype=torch.bfloat16)
    vc = torch.zeros_like(kc)
    slots = torch.randperm(num_blocks * bs, device=DEV)[:tokens].to(torch.int64)
    return k, v, kc, vc, slots


def pa_inputs(seqs, ctx, heads=32, kv=8, head=128, bs=16):
    nb = seqs * (ctx // bs)
    q = torch.randn(seqs, heads, head, device=DEV, dtype=torch.bfloat16)
    kc = torch.randn(nb, bs, kv, head, device=DEV, dtype=torch.bfloat16)
    vc = torch.randn_like(kc)
    bt = torch.randperm(nb, device=DEV).to(torch.int32).reshape(seqs, ctx // bs)
    lens = torch.full((seqs,), ctx, device=DEV, dtype=torch.int32)
    return q, kc, vc, bt, lens, torch.empty_like(q)


def fa_inputs(batch, seq, heads=32, kv=8, head=128):
    q = torch.randn(batch * seq, heads, head, device=DEV, dtype=torch.bfloat16)
    k = torch.randn(batch * seq, kv, head, device=DEV, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    cu = torch.arange(batch + 1, device=DEV, dtype=torch.int32) * seq
    return q, k, v, cu, torch.empty_like(q)


def sampling_inputs(batch, vocab):
    logits = torch.randn(batch, vocab, device=DEV) * 3
    seeds = torch.arange(batch, device=DEV, dtype=torch.int64) * 7919 + 1
    return logits, seeds


@contextlib.contextmanager
def env_set(name, value):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def calls():
    """(name, eager small call, graph-replay acceptance call[, a maker of the context to time it
    in])."""
    x = torch.zeros(1, device=DEV)
    k, v, kc, vc, slots = rac_inputs(16)
    flat_k, flat_v = kc.view(-1, *kc.shape[2:]), vc.view(-1, *vc.shape[2:])
    big = rac_inputs(8192, num_blocks=4 * 8192 // 16)
    q, pkc, pvc, bt, lens, out = pa_inputs(4, 1024)
    bq, bkc, bvc, bbt, blens, bout = pa_inputs(64, 4096)
    fq, fk, fv, fcu, fout = fa_inputs(1, 64)
    Fq, Fk, Fv, Fcu, Fout = fa_inputs(2, 4096)
    logits, seeds = sampling_inputs(4, 32000)
    blogits, bseeds = sampling_inputs(64, 128256)
    yield "raw @triton.jit launch", lambda: _trivial[(1,)](x), None
    yield ("two index_copy_ (16 tokens)",
           lambda: (flat_k.index_copy_(0, slots, k), flat_v.index_copy_(0, slots, v)), None)
    yield ("reshape_and_cache", lambda: ak.reshape_and_cache(k, v, kc, vc, slots),
           lambda: ak.reshape_and_cache(*big))
    yield ("paged_attention", lambda: ak.paged_attention(q, pkc, pvc, bt, lens, out=out),
           lambda: ak.paged_attention(bq, bkc, bvc, bbt, blens, out=bout))
    yield ("flash_attention", lambda: ak.flash_attention(fq, fk, fv, cu_seqlens_q=fcu, max_seqlen_q=64, out=fout),
           lambda: ak.flash_attention(Fq, Fk, Fv, cu_seqlens_q=Fcu, max_seqlen_q=4096, out=Fout))
    yield ("topk_topp_sampling", lambda: ak.topk_topp_sampling(logits, top_k=50, top_p=0.9, seeds=seeds),
           lambda: ak.topk_topp_sampling(blogits, top_k=50, top_p=0.9, seeds=bseeds))
    # variants of the small calls (timed inside the context): what a launch choice costs
    yield ("reshape_and_cache through Triton's launcher (ASCEND_KERNELS_DIRECT_LAUNCH=0)",
           lambda: ak.reshape_and_cache(k, v, kc, vc, slots), None,
           lambda: env_set("ASCEND_KERNELS_DIRECT_LAUNCH", "0"))
    yield ("paged_attention, split-KV merged by a second launch",
           lambda: ak.paged_attention(q, pkc, pvc, bt, lens, out=out), None,
           lambda: ak.force_config("paged_attention", {"MERGE_LAST": False}))
    for splits in (1, 8):
        yield (f"paged_attention, {splits} split{'s' if splits > 1 else ''} per sequence",
               lambda: ak.paged_attention(q, pkc, pvc, bt, lens, out=out), None,
               lambda splits=splits: ak.force_config("paged_attention", {"grid_num_splits": splits}))
    yield ("topk_topp_sampling, group statistics launched first (two launches)",
           lambda: ak.topk_topp_sampling(logits, top_k=50, top_p=0.9, seeds=seeds), None,
           lambda: ak.force_config("topk_topp_sampling", {"SAMPLE_LAST": False}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", default="")
    ap.add_argument("--json")
    args = ap.parse_args()
    # one core: no migrations between the rounds' timings
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    entries = list(calls())
    host = [float("inf")] * len(entries)
    wall = list(host)
    # the calls take turns, round after round (the best of ROUNDS each): a slow stretch of the
    # host (they come and go within one process) then costs every call alike
    for _ in range(ROUNDS):
        for i, (name, eager, accept, *ctx) in enumerate(entries):
            with ctx[0]() if ctx else contextlib.nullcontext():
                h, w = one_round(eager)
            host[i], wall[i] = min(host[i], h), min(wall[i], w)
    rows = []
    for i, (name, eager, accept, *ctx) in enumerate(entries):
        with ctx[0]() if ctx else contextlib.nullcontext():
            row = {"label": args.label, "call": name, "host_us_per_call": host[i], "wall_us_per_call": wall[i],
                   "small_graph_replay_us": median_ms(graph_of(eager).replay) * 1e3}
        if accept is not None:
            row["graph_replay_ms"] = median_ms(graph_of(accept).replay)
        rows.append(row)
    raw = rows[0]["host_us_per_call"]
    print(f"# {args.label}: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    print("| call | host µs/call | x raw launch | wall µs/call | small shape, graph replay µs | "
          "acceptance shape, graph replay ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        g = r.get("graph_replay_ms")
        print(f"| {r['call']} | {r['host_us_per_call']:.1f} | {r['host_us_per_call'] / raw:.2f} | "
              f"{r['wall_us_per_call']:.1f} | {r['small_graph_replay_us']:.1f} | {'' if g is None else f'{g:.4f}'} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
