"""paged_attention through torch_npu: argument translation only.

- torch_npu._npu_paged_attention (ATB PagedAttention) where its limits allow: block_size a
  multiple of 16, head_size <= 256, fp16/bf16.
- otherwise npu_fused_infer_attention_score's decode path (paged: block_table + block_size,
  input_layout "BSH", one query token per sequence).
- softcap, alibi_slopes and sliding windows have no equivalent in either call as used here:
  those calls run the plain-PyTorch reference on the device (reason: ATB has no softcap, and
  ALiBi / band masks would need materialised masks).

Both torch_npu calls take the context lengths on the HOST: seq_lens_host is used when given,
otherwise seq_lens is copied to the host (a sync; the documented cost of not passing it).
Table entries past each sequence's pages are zeroed on the device first (ATB is never shown
garbage ids), and rows with seq_len 0 are zeroed after the call.
"""
from __future__ import annotations

import torch

from ..reference.paged_attention import paged_attention as _reference

ATB_MAX_HEAD_SIZE = 256


def uses_atb_paged_attention(block_size: int, head_size: int, dtype: torch.dtype) -> bool:
    return block_size % 16 == 0 and head_size <= ATB_MAX_HEAD_SIZE and dtype in (torch.float16,
                                                                                  torch.bfloat16)


def paged_attention(query, key_cache, value_cache, block_table, seq_lens, out, *, scale,
                    sliding_window=0, softcap=0.0, alibi_slopes=None, seq_lens_host=None,
                    block_table_host=None) -> None:
    # both ATB paths take fp16/bf16 only
    if ((softcap and softcap > 0) or alibi_slopes is not None or (sliding_window and sliding_window > 0)
            or query.dtype not in (torch.float16, torch.bfloat16)):
        out.copy_(_reference(query, key_cache, value_cache, block_table, seq_lens, scale,
                             sliding_window, softcap, alibi_slopes))
        return
    import torch_npu

    num_seqs, num_heads, head_size = query.shape
    num_blocks, block_size, num_kv_heads, _ = key_cache.shape
    # host lengths: the pinned copy when the caller has one, else a documented device->host sync
    lens_host = seq_lens_host if seq_lens_host is not None else seq_lens.to("cpu")
    lens_host = lens_host.to(torch.int32)
    pages = (seq_lens.to(torch.int32) + block_size - 1) // block_size
    col = torch.arange(block_table.shape[1], device=block_table.device, dtype=torch.int32)
    table = torch.where(col[None, :] < pages[:, None], block_table, torch.zeros_like(block_table))
    if uses_atb_paged_attention(block_size, head_size, query.dtype):
        torch_npu._npu_paged_attention(query=query, key_cache=key_cache, value_cache=value_cache,
                                       num_kv_heads=num_kv_heads, num_heads=num_heads,
                                       scale_value=scale, block_table=table,
                                       context_lens=lens_host, out=out)
    else:
        res, _ = torch_npu.npu_fused_infer_attention_score(
            query.reshape(num_seqs, 1, num_heads * head_size),
            key_cache.reshape(num_blocks, block_size, num_kv_heads * head_size),
            value_cache.reshape(num_blocks, block_size, num_kv_heads * head_size),
            actual_seq_lengths_kv=lens_host.tolist(), num_heads=num_heads,
            num_key_value_heads=num_kv_heads, scale=scale, input_layout="BSH",
            block_table=table, block_size=block_size, sparse_mode=0)
        out.copy_(res.reshape(num_seqs, num_heads, head_size))
    out.masked_fill_((seq_lens == 0)[:, None, None], 0)
