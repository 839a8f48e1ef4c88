"""Where topk_topp_sampling's eager host time goes, timed the way bench/gpu/host_time.py times
it (queued behind a sleeping kernel, calls taking turns, best of 9 rounds), pinned to one core
and then on all cores (throwaway diagnosis; reaches into private names).

    PYTHONPATH=. python bench/results/h200/raw-2026-12-04/host_diag.py
"""
import os

import torch

import ascend_kernels as ak
from bench.gpu import host_time as ht


def table(entries, title):
    best = {}
    for _ in range(ht.ROUNDS):
        for name, fn in entries:
            h, _ = ht.one_round(fn)
            best[name] = min(best.get(name, 1e9), h)
    raw = best[entries[0][0]]
    print(f"\n## {title}\n\n| call | host µs/call | x raw launch |\n|---|---:|---:|")
    for name, _ in entries:
        print(f"| {name} | {best[name]:.2f} | {best[name] / raw:.2f} |")


def main():
    x = torch.zeros(1, device="cuda")
    logits, seeds = ht.sampling_inputs(4, 32000)
    logits1, seeds1 = ht.sampling_inputs(1, 32000)
    q, pkc, pvc, bt, lens, out = ht.pa_inputs(4, 1024)
    samp = ak.topk_topp_sampling
    kw = dict(top_k=50, top_p=0.9, seeds=seeds)
    samp(logits, **kw)
    torch.cuda.synchronize()
    plan = samp.last
    print(f"```\n{plan.code}\n```")
    scope = plan.call.__globals__
    launch0 = scope["launch0"]
    captured = {}
    scope["launch0"] = lambda *a: captured.setdefault("a", a)
    plan.call((logits,), kw)
    scope["launch0"] = lambda *a: None
    plan_nolaunch = plan.call
    args = captured["a"]
    template = scope["like_tokens"]

    def call_no_launch():
        scope["launch0"] = noop
        plan_nolaunch((logits,), kw)
        scope["launch0"] = launch0

    noop = lambda *a: None  # noqa: E731
    scope["launch0"] = launch0
    entries = [
        ("raw @triton.jit launch", lambda: ht._trivial[(1,)](x)),
        ("topk_topp_sampling (public)", lambda: samp(logits, **kw)),
        ("topk_topp_sampling, batch 1", lambda: samp(logits1, top_k=50, top_p=0.9, seeds=seeds1)),
        ("topk_topp_sampling, top_k only", lambda: samp(logits, top_k=50, seeds=seeds)),
        ("plan.call (no match)", lambda: plan.call((logits,), kw)),
        ("plan.call, launch a no-op (swap included)", call_no_launch),
        ("launch0 alone", lambda: launch0(*args)),
        ("empty_like(template)", lambda: torch.empty_like(template, memory_format=torch.contiguous_format)),
        ("raw launch + empty_like", lambda: (ht._trivial[(1,)](x), torch.empty_like(template, memory_format=torch.contiguous_format))),
        ("launch0 + empty_like", lambda: (launch0(*args), torch.empty_like(template, memory_format=torch.contiguous_format))),
        ("paged_attention (public)", lambda: ak.paged_attention(q, pkc, pvc, bt, lens, out=out)),
    ]
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    table(entries, f"pinned to one core ({torch.cuda.get_device_name()})")
    os.sched_setaffinity(0, cores)
    table(entries, f"all {len(cores)} cores")


if __name__ == "__main__":
    main()
