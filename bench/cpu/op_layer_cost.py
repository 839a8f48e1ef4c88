"""The op layer's own host cost on CPU: each public op with the fallback forced
(ASCEND_KERNELS_BACKEND=fallback) on tiny tensors, minus the same PyTorch reference called
directly, per call. Public API and reference only, so any version on PYTHONPATH can be timed.

    PYTHONPATH=. python3 bench/cpu/op_layer_cost.py [--label NAME]
"""
import argparse
import os
import time

os.environ["ASCEND_KERNELS_BACKEND"] = "fallback"
import torch  # noqa: E402

import ascend_kernels as ak  # noqa: E402
from ascend_kernels.reference import paged_attention as ref_pa, reshape_and_cache as ref_rac  # noqa: E402


def per_call_us(fn, calls: int = 3000) -> float:
    for _ in range(50):
        fn()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", default="")
    label = ap.parse_args().label
    torch.manual_seed(0)
    k, v = torch.randn(4, 2, 16), torch.randn(4, 2, 16)
    kc, vc = torch.zeros(8, 16, 2, 16), torch.zeros(8, 16, 2, 16)
    slots = torch.tensor([3, 17, -1, 40])
    flat_k, flat_v = kc.view(-1, 2, 16), vc.view(-1, 2, 16)
    good = torch.tensor([3, 17, 40])
    q, bt = torch.randn(2, 4, 16), torch.tensor([[0, 1], [2, 3]], dtype=torch.int32)
    lens, out = torch.tensor([20, 5], dtype=torch.int32), torch.empty(2, 4, 16)
    rows = [
        ("reshape_and_cache", lambda: ak.reshape_and_cache(k, v, kc, vc, slots),
         lambda: ref_rac.reshape_and_cache(k, v, kc, vc, slots)),
        ("paged_attention", lambda: ak.paged_attention(q, kc, vc, bt, lens, out=out),
         lambda: out.copy_(ref_pa.paged_attention(q, kc, vc, bt, lens, 0.25, 0, 0.0, None))),
    ]
    two_copies = per_call_us(lambda: (flat_k.index_copy_(0, good, k[:3]), flat_v.index_copy_(0, good, v[:3])))
    print(f"# {label}: op layer on CPU, fallback forced, tiny tensors (torch {torch.__version__})")
    print("| op | public call µs | reference alone µs | op layer µs | public / two index_copy_ |")
    print("|---|---:|---:|---:|---:|")
    for name, public, direct in rows:
        pub, ref = per_call_us(public), per_call_us(direct)
        print(f"| {name} | {pub:.1f} | {ref:.1f} | {pub - ref:.1f} | {pub / two_copies:.2f} |")
    print(f"| two index_copy_ | {two_copies:.1f} | | | 1.00 |")


if __name__ == "__main__":
    main()
