"""The op layer's own host cost on CPU: each public op with the fallback forced
(ASCEND_KERNELS_BACKEND=fallback) and the PyTorch reference it calls replaced by a no-op, on
tiny tensors, per call; two index_copy_ calls for scale. Public API and reference module only,
so any version of the package on PYTHONPATH can be timed the same way.

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
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", default="")
    label = ap.parse_args().label
    k, v = torch.randn(4, 2, 16), torch.randn(4, 2, 16)
    kc, vc = torch.zeros(8, 16, 2, 16), torch.zeros(8, 16, 2, 16)
    slots = torch.tensor([3, 17, -1, 40])
    flat_k, flat_v, good = kc.view(-1, 2, 16), vc.view(-1, 2, 16), torch.tensor([3, 17, 40])
    q, bt = torch.randn(2, 4, 16), torch.tensor([[0, 1], [2, 3]], dtype=torch.int32)
    lens, out = torch.tensor([20, 5], dtype=torch.int32), torch.empty(2, 4, 16)
    ref_rac.reshape_and_cache = lambda *a, **kw: None  # the op layer alone
    ref_pa.paged_attention = lambda query, *a, **kw: query
    copies = per_call_us(lambda: (flat_k.index_copy_(0, good, k[:3]), flat_v.index_copy_(0, good, v[:3])))
    rac = per_call_us(lambda: ak.reshape_and_cache(k, v, kc, vc, slots))
    pa = per_call_us(lambda: ak.paged_attention(q, kc, vc, bt, lens, out=out))
    print(f"| {label} | {rac:.1f} | {pa:.1f} | {copies:.1f} | {rac / copies:.2f} |")


if __name__ == "__main__":
    main()
