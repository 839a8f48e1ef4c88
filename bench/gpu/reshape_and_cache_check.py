"""reshape_and_cache on a CUDA GPU: correctness (gpu tests), then the acceptance timing.

Run on the device machine from the repo root:
    PYTHONPATH=. python3 bench/gpu/reshape_and_cache_check.py
Times (triton.testing.do_bench medians) our op (heuristic config and tuned), two index_copy_
calls, and a device-to-device copy for the bandwidth ceiling, all in this one run.
"""
import json
import sys

import ascend_kernels as ak  # noqa: F401  (before triton)
import pytest
import torch
import triton.testing

from ascend_kernels.launcher import autotune, dispatch
from ascend_kernels.ops import reshape_and_cache as rac
from bench.gpu._timing import median_ms


def main():
    rc = pytest.main(["-q", "-m", "gpu", "tests/test_reshape_and_cache.py", "-p", "no:cacheprovider"])
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")

    src = torch.randn(1 << 28, device=dev, dtype=torch.bfloat16)  # 512 MiB
    dst = torch.empty_like(src)
    copy_ms = median_ms(lambda: dst.copy_(src))
    copy_bw = 2 * src.numel() * 2 / copy_ms / 1e9  # TB/s... (bytes/ms/1e9 = TB/s)
    print(f"copy bandwidth: {copy_bw:.3f} TB/s (read + write)")

    t, h, d, bs, slots_total = 8192, 8, 128, 16, 65536
    spec = dispatch.get_spec("reshape_and_cache")
    p = rac._make_problem({"tokens": t, "kv_heads": h, "head_size": d, "block_size": bs,
                           "num_slots": slots_total}, dev, torch.bfloat16)
    for slot_dtype in (torch.int64, torch.int32):
        p.slot_mapping = p.slot_mapping.to(slot_dtype)
        nbytes = 2 * (2 * t * h * d * 2) + t * p.slot_mapping.element_size()  # k,v read+write + slots
        kc_flat = p.key_cache.view(-1, h, d)
        vc_flat = p.value_cache.view(-1, h, d)
        idx = p.slot_mapping.long()

        def index_copy():
            kc_flat.index_copy_(0, idx, p.key)
            vc_flat.index_copy_(0, idx, p.value)

        def ours():
            ak.reshape_and_cache(p.key, p.value, p.key_cache, p.value_cache, p.slot_mapping)

        heuristic = spec.default_config("cuda", p)
        best, timings = autotune.tune(spec, p, save=False)
        rows = {"index_copy_ x2": median_ms(index_copy),
                "triton heuristic (launch only)": median_ms(lambda: spec.launch(p, heuristic)),
                "triton tuned (launch only)": median_ms(lambda: spec.launch(p, best)),
                "ascend_kernels.reshape_and_cache (public API, tuned)": median_ms(ours)}
        print(f"\n### slots {slot_dtype}, tokens {t}, kv heads {h}, head {d}, bf16, block {bs}, "
              f"{slots_total} slots; best config {json.dumps(best)}")
        print("| provider | median us | GB/s | fraction of copy bw | speedup vs index_copy_ |")
        print("|---|---|---|---|---|")
        base = rows["index_copy_ x2"]
        for name, ms in rows.items():
            gbs = nbytes / ms / 1e6
            print(f"| {name} | {ms * 1e3:.1f} | {gbs:.0f} | {gbs / (copy_bw * 1e3):.2f} | {base / ms:.2f}x |")
        top = sorted((v, k) for k, v in timings.items() if isinstance(v, float))[:5]
        print("top configs:", [(round(v * 1e3, 1), k) for v, k in top])
    return rc


if __name__ == "__main__":
    sys.exit(main())
