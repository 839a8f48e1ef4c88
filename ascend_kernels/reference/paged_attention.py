"""paged_attention in plain PyTorch (the fallback off-NPU and the test oracle).

Vectorised over the batch (no loop, no host sync): every sequence's table is gathered up to
block_table.shape[1] pages; entries past a sequence's pages are replaced by page 0 before the
gather and their keys masked, so garbage (even out-of-range ids) is never used.
"""
from __future__ import annotations

from typing import Optional

import torch

from .reshape_and_cache import dequantize


def paged_attention(query: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor,
                    block_table: torch.Tensor, seq_lens: torch.Tensor, scale: float,
                    sliding_window: int = 0, softcap: float = 0.0,
                    alibi_slopes: Optional[torch.Tensor] = None,
                    compute_dtype: torch.dtype = torch.float32, *, k_scale=None,
                    v_scale=None) -> torch.Tensor:
    """[num_seqs, num_heads, head_size] in compute_dtype. The query of sequence i sits at
    position seq_lens[i] - 1 and sees keys [max(0, len - W), len) (W = sliding_window > 0) or
    [0, len); softcap before ALiBi (slope * (key_pos - query_pos)); len 0 gives 0. int8/fp8
    caches are dequantized first (times k_scale / v_scale: per tensor or [num_kv_heads])."""
    num_seqs, num_heads, head_size = query.shape
    num_blocks, block_size, num_kv_heads, _ = key_cache.shape
    max_blocks = block_table.shape[1]
    length = max_blocks * block_size
    group = num_heads // num_kv_heads
    dev = query.device
    lens = seq_lens.to(device=dev, dtype=torch.long)
    pages = (lens + block_size - 1) // block_size
    col = torch.arange(max_blocks, device=dev)
    table = torch.where(col[None, :] < pages[:, None], block_table.to(device=dev, dtype=torch.long),
                        torch.zeros((), dtype=torch.long, device=dev))
    pos = torch.arange(length, device=dev)
    valid = pos[None, :] < lens[:, None]
    if sliding_window and sliding_window > 0:
        valid &= pos[None, :] >= (lens - sliding_window)[:, None]
    k = dequantize(key_cache[table].reshape(num_seqs, length, num_kv_heads, head_size), k_scale, compute_dtype)
    v = dequantize(value_cache[table].reshape(num_seqs, length, num_kv_heads, head_size), v_scale, compute_dtype)
    v = torch.where(valid[:, :, None, None], v, torch.zeros((), dtype=compute_dtype, device=dev))
    q = query.to(compute_dtype).reshape(num_seqs, num_kv_heads, group, head_size)
    s = torch.einsum("skgd,slkd->skgl", q, k) * scale
    if softcap and softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(device=dev, dtype=compute_dtype).reshape(num_kv_heads, group)
        rel = (pos[None, :] - (lens - 1)[:, None]).to(compute_dtype)  # [S, L]
        s = s + slopes[None, :, :, None] * rel[:, None, None, :]
    s = s.masked_fill(~valid[:, None, None, :], float("-inf"))
    p = torch.softmax(s, dim=-1)
    p = torch.where(valid.any(1)[:, None, None, None], p, torch.zeros((), dtype=compute_dtype, device=dev))
    out = torch.einsum("skgl,slkd->skgd", p, v)
    return out.reshape(num_seqs, num_heads, head_size)
