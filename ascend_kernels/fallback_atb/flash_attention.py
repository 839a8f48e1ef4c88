"""flash_attention through torch_npu.npu_fused_infer_attention_score (FIA), input_layout "TND".

`route(...)` names the path one call takes: "npu_fused_infer_attention_score" or "reference"
(plain PyTorch on the NPU), with the reason. FIA's limits are in fused_infer_attention.py.

Argument translation:
- q [T, N, D] and varlen k/v [T_k, N_kv, D] are sliced to the tokens the sequences cover and
  made contiguous (FIA rejects strided inputs), so the query lengths always sum to the T FIA sees.
  A paged cache [num_blocks, block_size, N_kv, D] is viewed as [num_blocks, block_size, N_kv * D]
  with block_table and block_size; table entries past each sequence's pages become block 0 (FIA
  does not validate block ids, D26), and a cache with fewer blocks than the sequences' block
  counts add up to takes the reference (D26 page attention).
- actual_seq_lengths = cu_seqlens_q[1:] (cumulative, as TND wants); actual_seq_lengths_kv =
  cu_seqlens_k[1:] (cumulative) for varlen, seqused_k (per sequence) for paged (vllm-ascend's
  convention: vllm_ascend/attention/attention_v1.py passes seq_lens_list). Host int lists: the
  .tolist() is a host sync.
- The band: FIA's masks are bottom-right aligned (the last query on the last key), like ours
  (fused_infer_attention.band_args). Modes 3 and 4 take the compressed 2048 x 2048 mask.
- softmax_lse_flag=True returns lse [T, N, 1] fp32: transposed to [N, T].

The reference takes: an int8 cache (A2/A3 FIA documents no antiquant with page attention when
Q_S > 1: D26 "page attention场景 ... page attention不支持伪量化场景", the same line in D71/D72; its
key/value_antiquant_scale also need query S <= 16 and no page attention, "kv伪量化参数分离");
softcap (FIA has none); varlen k/v with seqused_k (TND's cumulative kv
lengths cannot skip key tails); cu_seqlens not starting at 0; whatever FIA's documented limits
refuse; and batches where some query row sees no key (our contract is 0 output and -inf lse
there; FIA documents neither).
"""
from __future__ import annotations

import torch

from ..reference import flash_attention as ref
from .fused_infer_attention import (band_args, compressed_mask, npu_fused_infer_attention_score_reason,
                                    pages_only, too_few_blocks)

FIA = "npu_fused_infer_attention_score"


def _plan(q, k, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, window_left, window_right,
          softcap):
    """(path, reason, cu_q list, kv lengths list as FIA takes them)."""
    if k.dtype == torch.int8:
        return ("reference", "int8 paged cache: FIA's page attention with Q_S > 1 takes no antiquant "
                "(D26 page attention: 'page attention不支持伪量化场景')", None, None)
    if softcap > 0:
        return "reference", "softcap: FIA has no logit softcapping", None, None
    paged = block_table is not None
    if not paged and seqused_k is not None:
        return "reference", "varlen k/v with seqused_k: TND's cumulative kv lengths cannot skip key tails", None, None
    cu_q = cu_seqlens_q.tolist()
    if paged:
        seq_kv = seqused_k.tolist()
        sk = seq_kv
    else:
        cu_k = cu_seqlens_k.tolist()
        seq_kv, sk = cu_k[1:], [b - a for a, b in zip(cu_k, cu_k[1:])]
        if cu_k[0] != 0:
            return "reference", "cu_seqlens_k does not start at 0: TND lengths are cumulative from 0", None, None
    if cu_q[0] != 0:
        return "reference", "cu_seqlens_q does not start at 0: TND lengths are cumulative from 0", None, None
    if cu_q[-1] == 0:
        return "reference", "no query tokens: nothing for FIA to compute", None, None
    sq = [b - a for a, b in zip(cu_q, cu_q[1:])]
    sparse_mode = band_args(window_left, window_right)[0]
    reason = npu_fused_infer_attention_score_reason(
        "TND", q, k, num_kv_heads=k.shape[-2], block_size=k.shape[1] if paged else 0,
        sparse_mode=sparse_mode, seq_q=sq, seq_kv=sk)
    if reason is not None:
        return "reference", reason, None, None
    if paged and too_few_blocks(sk, k.shape[1], k.shape[0]):
        return ("reference", "the sequences' block counts add up to more than the cache's blocks "
                "(FIA page attention: blocknum >= their sum)", None, None)
    if any(n_q > 0 and (n_k == 0 or (window_right >= 0 and n_k - n_q + window_right < 0))
           for n_q, n_k in zip(sq, sk)):
        return ("reference", "a query row sees no key: FIA documents no output or lse for it",
                None, None)
    return FIA, "within FIA's documented TND limits", cu_q, seq_kv


def route(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, softmax_scale,
          window_left, window_right, softcap, k_scale=None, v_scale=None) -> tuple[str, str]:
    """(path, reason) that flash_attention(...) takes for these arguments (reads the lengths on
    the host: a sync)."""
    path, reason, _, _ = _plan(q, k, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table,
                               window_left, window_right, softcap)
    return path, reason


def flash_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, softmax_scale,
                    window_left, window_right, softcap, k_scale=None, v_scale=None, out=None,
                    return_lse=False):
    """Same contract as reference.flash_attention: writes `out`, returns (out, lse or None)."""
    path, _, cu_q, seq_kv = _plan(q, k, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table,
                                  window_left, window_right, softcap)
    if path == "reference":
        return ref.flash_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table,
                                   softmax_scale, window_left, window_right, softcap,
                                   k_scale=k_scale, v_scale=v_scale, out=out, return_lse=return_lse)
    import torch_npu

    num_heads, head_size = q.shape[1:]
    num_kv_heads = k.shape[-2]
    total = cu_q[-1]
    kwargs = {}
    if block_table is not None:
        num_blocks, block_size = k.shape[:2]
        key = k.view(num_blocks, block_size, num_kv_heads * head_size)
        value = v.view(num_blocks, block_size, num_kv_heads * head_size)
        kwargs.update(block_table=pages_only(block_table, seqused_k, block_size).contiguous(), block_size=block_size)
    else:
        key, value = k[:seq_kv[-1]].contiguous(), v[:seq_kv[-1]].contiguous()
    sparse_mode, pre_tokens, next_tokens = band_args(window_left, window_right)
    mask = compressed_mask(q.device) if sparse_mode in (3, 4) else None
    attn_out, lse = torch_npu.npu_fused_infer_attention_score(
        q[:total].contiguous(), key, value, atten_mask=mask, actual_seq_lengths=cu_q[1:],
        actual_seq_lengths_kv=seq_kv, num_heads=num_heads, num_key_value_heads=num_kv_heads,
        scale=float(softmax_scale), pre_tokens=pre_tokens, next_tokens=next_tokens,
        input_layout="TND", sparse_mode=sparse_mode, softmax_lse_flag=bool(return_lse), **kwargs)
    if out is None:
        out = torch.empty_like(q)
    out[:total].copy_(attn_out.view(total, num_heads, head_size))
    if not return_lse:
        return out, None
    full = torch.full((num_heads, q.shape[0]), float("-inf"), dtype=torch.float32, device=q.device)
    full[:, :total] = lse.reshape(total, num_heads).transpose(0, 1).float()
    return out, full
