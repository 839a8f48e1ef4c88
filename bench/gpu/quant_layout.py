"""Quantized paged decode and the cache layout. Paged decode B64 x 4096, 32/8 heads, d128, page 16: the cache in vLLM's layout ([blocks, page,
kv heads, d]: a kv head's rows of a page are 128 or 256 bytes every kv_heads rows) against the
heads-outer layout ([blocks, kv heads, page, d], passed as a permuted view: a kv head's page is
one contiguous run), bf16 and int8, graph replay (CUDA). Same results in both layouts
(checked); whether the int8 decode's time follows the rows a task reads or the bytes.

    PYTHONPATH=. python3 bench/gpu/quant_layout.py
"""
import torch
import ascend_kernels as ak
from bench.gpu._timing import decode_batch, graph_of, median_ms

KVH, D, BS = 8, 128, 16
dev = "cuda"
q, table, lens, pages = decode_batch(kv_heads=KVH, head=D, block=BS)
sc = torch.full((KVH,), 0.02, device=dev)
base = {}
for name, dtype in (("bf16", torch.bfloat16), ("int8", torch.int8)):
    if dtype == torch.int8:
        kc = torch.randint(-127, 128, (pages, BS, KVH, D), device=dev, dtype=torch.int8)
        vc = torch.randint(-127, 128, (pages, BS, KVH, D), device=dev, dtype=torch.int8)
        s = dict(k_scale=sc, v_scale=sc)
    else:
        kc = torch.randn(pages, BS, KVH, D, device=dev, dtype=dtype)
        vc = torch.randn_like(kc)
        s = {}
    for layout in ("page-major (vLLM)", "heads-outer view"):
        if layout != "page-major (vLLM)":
            kc = kc.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
            vc = vc.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
        out = torch.empty_like(q)
        fn = lambda: ak.paged_attention(q, kc, vc, table, lens, out=out, **s)
        g = graph_of(fn)
        g.replay(); torch.cuda.synchronize()
        got = out.clone()
        ms = median_ms(g.replay)
        same = "" if layout == "page-major (vLLM)" else f", equal to page-major: {torch.equal(got, base[name])}"
        base.setdefault(name, got)
        nbytes = 2 * pages * BS * KVH * D * kc.element_size()
        print(f"{name} {layout}: {ms * 1e3:.1f} us, {nbytes / ms / 1e6:.0f} GB/s{same}, "
              f"config {ak.explain('paged_attention', q, kc, vc, table, lens, out=out, **s).config}", flush=True)
