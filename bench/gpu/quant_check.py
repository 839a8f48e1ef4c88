"""Quantized KV caches on one CUDA GPU: paged decode over bf16 vs int8 vs fp8 (e4m3) caches,
checked and timed under CUDA-graph replay, through the public API only.

    PYTHONPATH=. python3 bench/gpu/quant_check.py

Shape (issue 15's acceptance): batch 64 x context 4096, 32 query heads over 8 kv heads, head
size 128, block size 16, bf16 query. The quantized caches are written by reshape_and_cache
from the same bf16 tokens with per-kv-head scales (amax / code max). Acceptance: int8 and fp8
decode take at most 0.6x the bf16 time. Exit status 1 when a check or the acceptance fails.
"""
import math
import sys

import ascend_kernels as ak  # before triton
import torch

from bench.gpu._timing import graph_of, median_ms

B, CTX, H, KVH, D, BS = 64, 4096, 32, 8, 128, 16
DT = torch.bfloat16
ACCEPT = 0.6
dev = torch.device("cuda")


def reference(q, k, v, seqs):
    """fp32 attention of the first `seqs` sequences over their tokens k/v [B, CTX, KVH, D]."""
    qf = q[:seqs].float().reshape(seqs, KVH, H // KVH, D)
    kf, vf = k[:seqs].float(), v[:seqs].float()
    p = torch.softmax(torch.einsum("skgd,slkd->skgl", qf, kf) / math.sqrt(D), -1)
    return torch.einsum("skgl,slkd->skgd", p, vf).reshape(seqs, H, D)


def main() -> int:
    torch.manual_seed(0)
    pages = B * CTX // BS
    q = torch.randn(B, H, D, device=dev, dtype=DT)
    k = torch.randn(B, CTX, KVH, D, device=dev, dtype=DT)
    v = torch.randn(B, CTX, KVH, D, device=dev, dtype=DT)
    table = torch.randperm(pages, device=dev).to(torch.int32).reshape(B, CTX // BS)
    pos = torch.arange(CTX, device=dev)
    slots = (table.long()[:, pos // BS] * BS + pos % BS).reshape(-1)
    lens = torch.full((B,), CTX, dtype=torch.int32, device=dev)
    amax_k = k.float().abs().amax(dim=(0, 1, 3))
    amax_v = v.float().abs().amax(dim=(0, 1, 3))

    cases = []
    for name, dtype, code_max in (("bf16", DT, None), ("int8", torch.int8, 127.0),
                                  ("fp8 e4m3", torch.float8_e4m3fn, 448.0)):
        kc = torch.empty(pages, BS, KVH, D, device=dev, dtype=dtype)
        vc = torch.empty_like(kc)
        scales = {} if code_max is None else dict(k_scale=amax_k / code_max, v_scale=amax_v / code_max)
        ak.reshape_and_cache(k.reshape(-1, KVH, D), v.reshape(-1, KVH, D), kc, vc, slots, **scales)
        cases.append((name, kc, vc, scales))

    expect = reference(q, k, v, 8)
    rows, ok, base = [], True, None
    # the quantized caches also with the dots in bf16 (FP16_DOTS False): what the fp16 dots buy
    cases += [(f"{name}, dots in bf16", kc, vc, scales) for name, kc, vc, scales in cases[1:]]
    for name, kc, vc, scales in cases:
        out = torch.empty_like(q)

        def call(kc=kc, vc=vc, scales=scales, out=out):
            ak.paged_attention(q, kc, vc, table, lens, out=out, **scales)

        with ak.force_config("paged_attention", {"FP16_DOTS": "dots in bf16" not in name}):
            graph = graph_of(call)
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        err = float((out[:8].float() - expect).norm() / expect.norm())
        good = bool(torch.isfinite(out).all()) and err < (0.01 if name == "bf16" else 0.05)
        ms = median_ms(graph.replay)
        base = base or ms
        nbytes = 2 * B * CTX * KVH * D * kc.element_size()
        ratio = ms / base
        judged = name != "bf16" and "dots in bf16" not in name  # the A/B rows carry no acceptance
        meets = not judged or ratio <= ACCEPT
        ok &= good and meets
        rows.append(f"| {name} | {ms * 1e3:.1f} | {nbytes / ms / 1e6:.0f} | {ratio:.2f}x | {err:.1e} "
                    f"| {'ok' if good else 'WRONG'} | {('yes' if meets else 'NO') if judged else '-'} |")

    print(f"paged decode, graph replay, {torch.cuda.get_device_name(dev)}: B={B} ctx={CTX} "
          f"H={H}/{KVH} D={D} block_size={BS}, bf16 query, per-kv-head scales\n")
    print(f"| cache | us | GB/s (K+V pages) | vs bf16 | rel err vs fp32 truth | check | <= {ACCEPT}x |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\nPASS" if ok else "\nFAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
