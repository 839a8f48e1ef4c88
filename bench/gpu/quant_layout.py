"""Quantized paged decode and the cache layout (CUDA, graph replay). Paged decode B64 x 4096,
32/8 heads, d128, page 16, bf16 and int8: the cache in vLLM's layout ([blocks, page, kv heads,
d]: a kv head's rows of a page are 128 or 256 bytes every kv_heads rows) against the heads-outer
layout ([blocks, kv heads, page, d], passed as a permuted view: a kv head's page is one
contiguous run). Same results in both layouts (checked): whether the int8 decode's time follows
the rows a task reads or the bytes.

    PYTHONPATH=. python3 bench/gpu/quant_layout.py
"""
import torch

import ascend_kernels as ak
from bench.gpu._timing import decode_batch, graph_of, median_ms

KVH, D, BS = 8, 128, 16
PAGE_MAJOR, HEADS_OUTER = "page-major (vLLM)", "heads-outer view"


def heads_outer(cache: torch.Tensor) -> torch.Tensor:
    """The same values stored [blocks, kv heads, page, d], viewed as [blocks, page, kv heads, d]."""
    return cache.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)


def main():
    q, table, lens, pages = decode_batch(kv_heads=KVH, head=D, block=BS)
    scale = torch.full((KVH,), 0.02, device="cuda")
    shape = (pages, BS, KVH, D)
    caches = {"bf16": ([torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(2)], {}),
              "int8": ([torch.randint(-127, 128, shape, device="cuda", dtype=torch.int8) for _ in range(2)],
                       dict(k_scale=scale, v_scale=scale))}
    for name, ((kc, vc), scales) in caches.items():
        first = None
        for layout in (PAGE_MAJOR, HEADS_OUTER):
            if layout == HEADS_OUTER:
                kc, vc = heads_outer(kc), heads_outer(vc)
            out = torch.empty_like(q)
            graph = graph_of(lambda: ak.paged_attention(q, kc, vc, table, lens, out=out, **scales))
            graph.replay()
            torch.cuda.synchronize()
            ms = median_ms(graph.replay)
            same = "" if first is None else f", equal to page-major: {torch.equal(out, first)}"
            first = out.clone() if first is None else first
            nbytes = 2 * kc.numel() * kc.element_size()
            config = ak.explain("paged_attention", q, kc, vc, table, lens, out=out, **scales).config
            print(f"{name} {layout}: {ms * 1e3:.1f} us, {nbytes / ms / 1e6:.0f} GB/s{same}, config {config}",
                  flush=True)


if __name__ == "__main__":
    main()
