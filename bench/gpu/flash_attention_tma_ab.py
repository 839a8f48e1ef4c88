"""flash_attention on Hopper with and without the bulk tensor copy engine (USE_TMA), a few tiles,
against SDPA's cuDNN backend: B2 x 4096, 32 heads, head 128, bf16, causal and not.

    PYTHONPATH=. python3 bench/gpu/flash_attention_tma_ab.py

"Without" replaces the op's descriptor builder, so the launch takes the pointer-load branch.
"""
import ascend_kernels  # noqa: F401  (before triton)
import torch
import triton
import triton.testing
from torch.nn.attention import sdpa_kernel, SDPBackend
from ascend_kernels.ops import flash_attention as fa
B, S, H, D = 2, 4096, 32, 128
torch.manual_seed(0)
q = torch.randn(B * S, H, D, device="cuda", dtype=torch.bfloat16); k = torch.randn_like(q); v = torch.randn_like(q)
cu = torch.arange(0, B + 1, device="cuda", dtype=torch.int32) * S
qb, kb, vb = (t.view(B, S, H, D).transpose(1, 2).contiguous() for t in (q, k, v))
bench = lambda f: triton.testing.do_bench(f, warmup=25, rep=200)
orig = fa._tma_descriptors
for causal in (True, False):
    fl = 4 * B * H * S * S * D / (2 if causal else 1)
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        t = bench(lambda: torch.nn.functional.scaled_dot_product_attention(qb, kb, vb, is_causal=causal))
        want = torch.nn.functional.scaled_dot_product_attention(qb, kb, vb, is_causal=causal).transpose(1, 2).reshape(B * S, H, D).float()
    print(f"causal={causal} cudnn {fl / t / 1e9:.0f} TFLOP/s", flush=True)
    p = fa._prepare(q, k, v, cu_seqlens_q=cu, max_seqlen_q=S, causal=causal)
    for tma in (True, False):
        fa._tma_descriptors = orig if tma else (lambda *a: None)
        for bm, bn, w, s in ((128, 128, 8, 3), (128, 64, 8, 3), (64, 64, 4, 3)):
            c = {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": w, "num_stages": s, "HEADS_PER_TASK": 1, "grid_programs_per_core": 64}
            fa._launch(p, c); rel = ((p.out.float() - want).norm() / want.norm()).item()
            tt = bench(lambda: fa._launch(p, c))
            print(f"  tma={tma} M{bm} N{bn} w{w} s{s}: {fl / tt / 1e9:.0f} TFLOP/s = {t / tt:.2f}x cuDNN rel {rel:.1e}", flush=True)
fa._tma_descriptors = orig
