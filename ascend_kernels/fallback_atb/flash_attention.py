"""flash_attention through torch_npu.npu_fused_infer_attention_score (FIA), input_layout "TND".

Argument translation:
- q [T, N, D] as is; varlen k/v [T_k, N_kv, D] as is; a paged cache [num_blocks, block_size,
  N_kv, D] is viewed as [num_blocks, block_size, N_kv * D] with block_table and block_size.
- actual_seq_lengths = cu_seqlens_q[1:] (cumulative, as TND wants); actual_seq_lengths_kv =
  cu_seqlens_k[1:] (cumulative) for varlen, seqused_k (per sequence) for paged (vLLM-Ascend's
  convention). Both are host int lists in this API: the .tolist() is a host sync.
- The band. FIA's masks are aligned bottom-right (the last query on the last key), like ours.
  sparse_mode 0: no mask (window_left = window_right = -1).
  sparse_mode 3 (rightDownCausal): window_left = -1, window_right = 0.
  sparse_mode 4 (band): pre_tokens = window_left (keys before the diagonal), next_tokens =
  window_right (keys after it), an unbounded side = 2147483647. Modes 3 and 4 take the
  compressed 2048 x 2048 upper-triangular mask (True = masked).
- softmax_lse_flag=True returns lse [T, N, 1] fp32: transposed to [N, T].

Sent to the reference (plain PyTorch) instead, by `unsupported_reason`, per FIA's documented
limits: softcap (FIA has none); head_size not a multiple of 16 or above 512 (PFA's D limit);
varlen k/v with seqused_k (TND's cumulative kv lengths cannot express a prefix of each sequence);
paged block_size not a multiple of 16 or above 512; fp32 inputs (FIA takes fp16/bf16/int8);
and batches where some query row sees no key (a sequence with fewer keys than queries under a
causal/right window, or no keys): our contract is 0 output and -inf lse there, which FIA does not
document (its inner_precise row correction zeroes the output but says nothing of the lse).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..reference import flash_attention as ref

INT_MAX = 2147483647
MASK_SIZE = 2048
_masks: dict = {}


def unsupported_reason(q, k, block_table, seqused_k, softcap) -> Optional[str]:
    head_size = q.shape[-1]
    if q.dtype not in (torch.float16, torch.bfloat16):
        return f"dtype {q.dtype}: FIA takes fp16/bf16"
    if softcap > 0:
        return "softcap: FIA has no logit softcapping"
    if head_size % 16 or head_size > 512:
        return f"head_size {head_size}: FIA needs a multiple of 16, at most 512"
    if block_table is None and seqused_k is not None:
        return "varlen k/v with seqused_k: TND's cumulative kv lengths cannot skip key tails"
    if block_table is not None:
        bs = k.shape[1]
        if bs % 16 or bs > 512:
            return f"block_size {bs}: FIA's page attention needs a multiple of 16, at most 512"
    return None


def band_args(window_left: int, window_right: int) -> tuple[int, int, int]:
    """(sparse_mode, pre_tokens, next_tokens) for the bottom-right aligned band."""
    if window_left < 0 and window_right < 0:
        return 0, INT_MAX, INT_MAX
    if window_left < 0 and window_right == 0:
        return 3, INT_MAX, 0
    return 4, (window_left if window_left >= 0 else INT_MAX), (window_right if window_right >= 0 else INT_MAX)


def _compressed_mask(device) -> torch.Tensor:
    key = str(device)
    if key not in _masks:
        _masks[key] = torch.triu(torch.ones(MASK_SIZE, MASK_SIZE, dtype=torch.bool, device=device), 1)
    return _masks[key]


def flash_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, softmax_scale,
                    window_left, window_right, softcap, out=None, return_lse=False):
    """Same contract as reference.flash_attention: writes `out`, returns (out, lse or None)."""
    if unsupported_reason(q, k, block_table, seqused_k, softcap) is not None:
        return ref.flash_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table,
                                   softmax_scale, window_left, window_right, softcap, out=out,
                                   return_lse=return_lse)
    import torch_npu

    total_q, num_heads, head_size = q.shape
    num_kv_heads = k.shape[-2]
    kwargs = {}
    if block_table is not None:
        num_blocks, block_size = k.shape[:2]
        key = k.reshape(num_blocks, block_size, num_kv_heads * head_size)
        value = v.reshape(num_blocks, block_size, num_kv_heads * head_size)
        seq_kv = seqused_k.tolist()
        kwargs.update(block_table=block_table, block_size=block_size)
    else:
        key, value = k, v
        seq_kv = cu_seqlens_k[1:].tolist()
    seq_q = cu_seqlens_q[1:].tolist()
    sq = [b - a for a, b in zip([0] + seq_q[:-1], seq_q)]
    sk = seq_kv if block_table is not None else [b - a for a, b in zip([0] + seq_kv[:-1], seq_kv)]
    if any(n_q > 0 and (n_k == 0 or (window_right >= 0 and n_k - n_q + window_right < 0))
           for n_q, n_k in zip(sq, sk)):
        return ref.flash_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table,
                                   softmax_scale, window_left, window_right, softcap, out=out,
                                   return_lse=return_lse)
    sparse_mode, pre_tokens, next_tokens = band_args(window_left, window_right)
    mask = _compressed_mask(q.device) if sparse_mode in (3, 4) else None
    attn_out, lse = torch_npu.npu_fused_infer_attention_score(
        q.contiguous(), key, value, atten_mask=mask, actual_seq_lengths=seq_q,
        actual_seq_lengths_kv=seq_kv, num_heads=num_heads, num_key_value_heads=num_kv_heads,
        scale=float(softmax_scale), pre_tokens=pre_tokens, next_tokens=next_tokens,
        input_layout="TND", sparse_mode=sparse_mode, softmax_lse_flag=bool(return_lse), **kwargs)
    if out is None:
        out = torch.empty_like(q)
    out.copy_(attn_out.view(total_q, num_heads, head_size))
    if not return_lse:
        return out, None
    return out, lse.reshape(total_q, num_heads).transpose(0, 1).float()
