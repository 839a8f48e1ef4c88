"""flash_attention on Hopper with and without the bulk tensor copy engine (USE_TMA), a few tiles,
against SDPA's cuDNN backend: B2 x 4096, 32 heads, head 128, bf16, causal and not.

    PYTHONPATH=. python3 bench/gpu/flash_attention_tma_ab.py

"Without" replaces the op's descriptor builder, so the launch takes the pointer-load branch.
Each output is checked against cuDNN's (rel).
"""
import ascend_kernels  # noqa: F401  (before triton)
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ascend_kernels.ops import flash_attention as fa
from bench.gpu._timing import median_ms

B, S, H, D = 2, 4096, 32, 128
TILES = ((128, 128, 8, 3), (128, 64, 8, 3), (64, 64, 4, 3))


def main():
    torch.manual_seed(0)
    q, k, v = (torch.randn(B * S, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    cu = torch.arange(0, B + 1, device="cuda", dtype=torch.int32) * S
    qb, kb, vb = (t.view(B, S, H, D).transpose(1, 2).contiguous() for t in (q, k, v))
    with_tma = fa._tma_descriptors
    try:
        for causal in (True, False):
            flops = 4 * B * H * S * S * D / (2 if causal else 1)
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                def sdpa():
                    return torch.nn.functional.scaled_dot_product_attention(qb, kb, vb, is_causal=causal)
                t_ref = median_ms(sdpa)
                want = sdpa().transpose(1, 2).reshape(B * S, H, D).float()
            print(f"causal={causal} cudnn {flops / t_ref / 1e9:.0f} TFLOP/s", flush=True)
            p = fa._prepare(q, k, v, cu_seqlens_q=cu, max_seqlen_q=S, causal=causal)
            for tma in (True, False):
                fa._tma_descriptors = with_tma if tma else (lambda *a: None)
                for bm, bn, w, s in TILES:
                    c = {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": w, "num_stages": s,
                         "grid_programs_per_core": 64}
                    fa._launch(p, c)
                    rel = ((p.out.float() - want).norm() / want.norm()).item()
                    t = median_ms(lambda: fa._launch(p, c))
                    print(f"  tma={tma} M{bm} N{bn} w{w} s{s}: {flops / t / 1e9:.0f} TFLOP/s = "
                          f"{t_ref / t:.2f}x cuDNN rel {rel:.1e}", flush=True)
    finally:
        fa._tma_descriptors = with_tma


if __name__ == "__main__":
    main()
