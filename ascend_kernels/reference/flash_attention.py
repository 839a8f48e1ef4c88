"""flash_attention in plain PyTorch (the fallback off-NPU and the test oracle).

Loops over the sequences on the host (reads cu_seqlens / seqused_k: a host sync). Computes in
float32 by default (float64 for tests: ``compute_dtype``).
"""
from __future__ import annotations

from typing import Optional

import torch


def visible_mask(sq: int, sk: int, window_left: int, window_right: int,
                 device=None) -> torch.Tensor:
    """[sq, sk] bool: query i sees key j iff i + sk - sq - wl <= j <= i + sk - sq + wr
    (bottom-right aligned; a negative window is unbounded on that side)."""
    i = torch.arange(sq, device=device)[:, None] + (sk - sq)
    j = torch.arange(sk, device=device)[None, :]
    mask = torch.ones(sq, sk, dtype=torch.bool, device=device)
    if window_left >= 0:
        mask &= j >= i - window_left
    if window_right >= 0:
        mask &= j <= i + window_right
    return mask


def _dequantize(x: torch.Tensor, scale: Optional[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """x [tokens, KVH, D] in dtype: times the per-tensor [1] or per-kv-head [KVH] scale if given."""
    x = x.to(dtype)
    return x if scale is None else x * scale.to(dtype).reshape(-1, 1)


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                    cu_seqlens_k: Optional[torch.Tensor], seqused_k: Optional[torch.Tensor],
                    block_table: Optional[torch.Tensor], softmax_scale: float, window_left: int,
                    window_right: int, softcap: float, k_scale: Optional[torch.Tensor] = None,
                    v_scale: Optional[torch.Tensor] = None, out: Optional[torch.Tensor] = None,
                    return_lse: bool = False, compute_dtype: torch.dtype = torch.float32):
    """Attention per sequence. q [total_q, H, D]; k/v varlen [total_k, KVH, D] (cu_seqlens_k,
    optional seqused_k) or paged [num_blocks, block_size, KVH, D] (block_table, seqused_k).
    An int8/fp8 cache is dequantized first (stored value * k_scale / v_scale: fp32 [1] or
    [KVH]), then attended to in compute_dtype.

    Writes `out` (allocated like q when None) and returns (out, lse [H, total_q] fp32 or None).
    Rows that see no key give 0 and lse -inf.
    """
    total_q, num_heads, head_size = q.shape
    paged = block_table is not None
    num_kv_heads = k.shape[-2]
    group = num_heads // num_kv_heads
    if out is None:
        out = torch.empty_like(q)
    lse = torch.full((num_heads, total_q), float("-inf"), dtype=torch.float32, device=q.device)
    cu_q = cu_seqlens_q.tolist()
    cu_k = cu_seqlens_k.tolist() if cu_seqlens_k is not None else None
    used = seqused_k.tolist() if seqused_k is not None else None
    for b in range(len(cu_q) - 1):
        q0, q1 = cu_q[b], cu_q[b + 1]
        sq = q1 - q0
        if sq == 0:
            continue
        if paged:
            sk = used[b]
            block_size = k.shape[1]
            pages = block_table[b, : -(-sk // block_size)].long()
            kk = k[pages].reshape(-1, num_kv_heads, head_size)[:sk]
            vv = v[pages].reshape(-1, num_kv_heads, head_size)[:sk]
        else:
            k0 = cu_k[b]
            sk = used[b] if used is not None else cu_k[b + 1] - k0
            kk, vv = k[k0:k0 + sk], v[k0:k0 + sk]
        qs = q[q0:q1].to(compute_dtype)
        kk = _dequantize(kk, k_scale, compute_dtype).repeat_interleave(group, dim=1)
        vv = _dequantize(vv, v_scale, compute_dtype).repeat_interleave(group, dim=1)
        s = torch.einsum("qhd,khd->hqk", qs, kk) * softmax_scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        mask = visible_mask(sq, sk, window_left, window_right, device=q.device)
        s = s.masked_fill(~mask, float("-inf"))
        row_lse = torch.logsumexp(s, dim=-1)  # -inf where a row sees nothing
        p = torch.exp(s - torch.where(torch.isinf(row_lse), 0.0, row_lse)[..., None])
        p = torch.where(mask, p, 0.0)
        o = torch.einsum("hqk,khd->qhd", p, vv)
        out[q0:q1] = o.to(out.dtype)
        lse[:, q0:q1] = row_lse.float()
    return out, (lse if return_lse else None)
