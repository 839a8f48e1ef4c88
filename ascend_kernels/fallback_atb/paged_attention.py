"""paged_attention (decode) through torch_npu: argument translation only.

Paths, in order (`route(...)` names the one a call takes, with the reason):
1. torch_npu._npu_paged_attention (ATB PagedAttention), where its limits allow
   (`npu_paged_attention_reason`).
2. torch_npu.npu_fused_infer_attention_score, decode: input_layout "BSH", one query token per
   sequence, block_table + block_size (limits in fused_infer_attention.py).
3. "reference": plain PyTorch on the device. Also for softcap, ALiBi and sliding windows, which
   neither call expresses: _npu_paged_attention runs with maskType UNDEFINED and no mask input
   (Ascend/op-plugin op_plugin/ops/atb/PagedAttentionAtb.cpp), and FIA ignores sparse_mode,
   pre_tokens and next_tokens when Q_S is 1 (FIA docs, sparse_mode / pre_tokens).
When ATB's library is missing the first _npu_paged_attention call raises OSError; that call and
every later one take the next path, with the reason (see _npu.py).

int8 caches (k_scale/v_scale) go to FIA: torch_npu's _npu_paged_attention has no dequant inputs
(op_plugin_functions.yaml: query, key_cache, value_cache, num_kv_heads, num_heads, scale_value,
block_table, context_lens, out), while FIA's KV-separated antiquant tables, from 7.2.0 on and for
A2/A3 with int8 K/V, per-tensor scales of shape (1,) (key_antiquant_mode 0) and per-tensor +
per-head scales of shape (KV_N,) (mode 2), both in the query's dtype, the key's and the value's of
one shape and mode (FIA docs, "kv伪量化参数分离", D72 and 26.1.0). The scales are rounded to the
query's dtype on the way (bf16: a relative change of at most 2^-8). Page attention takes int8
K/V in pages that are multiples of 32 (D26 Q_S=1 page attention). Other quantized caches take
the reference, dequantized on the device.

FIA's decode limits that depend on the host lengths: B <= 65536, S <= 262144, and a cache of at
least as many blocks as the sequences' block counts add up to ("blocknum不能小于...每个batch的block
数量之和", D26 Q_S=1 page attention; shared prefix blocks count once per sequence there). A call
outside them takes the reference.

Both torch_npu calls take the context lengths on the HOST: seq_lens_host when given, otherwise
a copy of seq_lens (a device->host sync, the documented cost of not passing it). Lengths are
clamped to >= 1 and rows with seq_len 0 zeroed after the call, because how either operator
treats a context length of 0 is not documented. Table entries past each sequence's pages are
replaced by block 0 on the device first, so the operators never see garbage ids (ATB: "block_tables
中元素的值须在[0, num_blocks)之间"; FIA: block ids are not validated, the caller must keep them valid).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..reference.paged_attention import paged_attention as _reference
from . import _npu
from .fused_infer_attention import (MAX_KV_LEN_DECODE, npu_fused_infer_attention_score_reason, pages_only,
                                    too_few_blocks)

ATB_PA = "_npu_paged_attention"
FIA = "npu_fused_infer_attention_score"


def npu_paged_attention_reason(query, key_cache, value_cache, out=None) -> Optional[str]:
    """None when torch_npu._npu_paged_attention takes these tensors, else the limit (one line).

    query [B, N, D]; caches [num_blocks, block_size, N_kv, D]; out as it would be passed.
    Limits from Ascend/op-plugin op_plugin/python/atb/_atb_api_docs.py (the _npu_paged_attention_v2
    entry documents ATB PagedAttention's "规格约束") and AtbCommon.cpp.
    """
    rel, family = _npu.release(), _npu.soc_family()
    num_heads, head_size = query.shape[1:]
    block_size, num_kv_heads = key_cache.shape[1:3]
    if rel < (7, 0, 0):
        return f"torch_npu release {_npu.release_name(rel)}: _npu_paged_attention ships from 7.0.0 (op_plugin/python/atb/_atb_ops.py)"
    if family not in ("A2", "A3"):
        return f"SoC {family}: ND caches are A2/A3 only, Atlas inference (310P) caches are NZ (_atb_api_docs.py)"
    dtypes = {query.dtype, key_cache.dtype, value_cache.dtype}
    if len(dtypes) != 1 or query.dtype not in (torch.float16, torch.bfloat16):
        return f"dtypes {query.dtype}/{key_cache.dtype}/{value_cache.dtype}: ATB PagedAttention takes fp16/bf16, one dtype"
    if not (key_cache.is_contiguous() and value_cache.is_contiguous()):
        # ParamSetter::Input would .contiguous() the whole cache on every call (AtbCommon.cpp)
        return "strided cache: ATB would copy the whole cache on every call"
    if num_heads % num_kv_heads:
        return f"{num_heads} heads over {num_kv_heads} kv heads: ATB GQA needs a divisor"
    if block_size == 256 and head_size == 256:
        if family != "A2":
            return f"block_size 256 with head_size 256: ATB allows it on A2 only, this is {family}"
    elif block_size % 16 or block_size > 128:
        return f"block_size {block_size}: ATB PagedAttention needs a multiple of 16, at most 128 (256 only with head_size 256 on A2)"
    # One line allows head_size up to 576 when block_size <= 128 (vllm-ascend runs 512 this way);
    # the plain rule says (0, 256]: the narrower one until a host settles it.
    if head_size > 256:
        return f"head_size {head_size}: ATB PagedAttention documents (0, 256]"
    if out is not None and (not out.is_contiguous() or out.dtype != query.dtype):
        return "out must be contiguous and of query's dtype (AtTensor2AtbTensor checks outputs, AtbCommon.cpp)"
    return None


def route(query, key_cache, value_cache, block_table, seq_lens, out=None, *, scale=None,
          sliding_window=0, softcap=0.0, alibi_slopes=None, seq_lens_host=None,
          block_table_host=None, k_scale=None, v_scale=None) -> tuple[str, str]:
    """(path, reason) that paged_attention(...) takes for these arguments. `out` never decides:
    a strided `out` gets a contiguous buffer in between."""
    if softcap and softcap > 0:
        return "reference", "softcap: neither ATB PagedAttention nor FIA has logit softcapping"
    if alibi_slopes is not None:
        return "reference", "alibi_slopes: _npu_paged_attention runs without a mask, FIA decode has no ALiBi"
    if sliding_window and sliding_window > 0:
        return "reference", "sliding_window: FIA ignores pre_tokens at one query token, ATB has no window"
    if k_scale is not None:
        if key_cache.dtype != torch.int8:
            return "reference", f"{key_cache.dtype} cache: FIA's KV antiquant takes int8 codes"
        if v_scale is None or k_scale.numel() != v_scale.numel():
            return "reference", ("int8 cache with k_scale and v_scale of different shapes: FIA's "
                                 "antiquant scales must match (kv伪量化参数分离)")
        fia = npu_fused_infer_attention_score_reason("BSH", query, key_cache, num_kv_heads=key_cache.shape[2],
                                                     block_size=key_cache.shape[1], kv_int8=True)
        if fia is None:
            return FIA, "int8 cache: _npu_paged_attention has no dequant inputs; FIA's KV antiquant takes it"
        return "reference", f"int8 cache: _npu_paged_attention has no dequant inputs; FIA: {fia}"
    atb = _npu.atb_missing() or npu_paged_attention_reason(query, key_cache, value_cache)
    if atb is None:
        return ATB_PA, "within ATB PagedAttention's documented limits"
    fia = npu_fused_infer_attention_score_reason("BSH", query, key_cache,
                                                 num_kv_heads=key_cache.shape[2],
                                                 block_size=key_cache.shape[1])
    if fia is None:
        return FIA, f"ATB refused ({atb}); within FIA decode's limits"
    return "reference", f"ATB: {atb}; FIA: {fia}"


def paged_attention(query, key_cache, value_cache, block_table, seq_lens, out, *, scale,
                    sliding_window=0, softcap=0.0, alibi_slopes=None, seq_lens_host=None,
                    block_table_host=None, k_scale=None, v_scale=None) -> None:
    path, _ = route(query, key_cache, value_cache, block_table, seq_lens, out,
                    sliding_window=sliding_window, softcap=softcap, alibi_slopes=alibi_slopes,
                    k_scale=k_scale, v_scale=v_scale)
    num_seqs, num_heads, head_size = query.shape
    num_blocks, block_size, num_kv_heads, _ = key_cache.shape
    if path != "reference":
        lens = seq_lens_host if seq_lens_host is not None else seq_lens.to("cpu")
        lens_host = lens.to(device="cpu", dtype=torch.int32).clamp(min=1)
        if path == FIA and (int(lens_host.max()) > MAX_KV_LEN_DECODE
                            or too_few_blocks(lens_host.tolist(), block_size, num_blocks)):
            path = "reference"  # FIA's host-value limits (module docstring)
    if path == "reference":
        out.copy_(_reference(query, key_cache, value_cache, block_table, seq_lens, scale,
                             sliding_window, softcap, alibi_slopes, k_scale=k_scale, v_scale=v_scale))
        return
    import torch_npu

    table = pages_only(block_table, seq_lens, block_size)
    if path == ATB_PA:
        target = out if out.is_contiguous() else torch.empty_like(query)
        try:
            torch_npu._npu_paged_attention(query=query, key_cache=key_cache, value_cache=value_cache,
                                           num_kv_heads=num_kv_heads, num_heads=num_heads,
                                           scale_value=scale, block_table=table,
                                           context_lens=lens_host, out=target)
        except OSError as exc:
            _npu.note_atb_missing(exc)
            return paged_attention(query, key_cache, value_cache, block_table, seq_lens, out,
                                   scale=scale, seq_lens_host=seq_lens_host)
        if target is not out:
            out.copy_(target)
    else:
        antiquant = {}
        if k_scale is not None:  # mode 0: per tensor, (1,); mode 2: per tensor and per head, (KV_N,)
            mode = 0 if k_scale.numel() == 1 else 2
            antiquant = dict(key_antiquant_scale=k_scale.reshape(-1).to(query.dtype),
                             value_antiquant_scale=v_scale.reshape(-1).to(query.dtype),
                             key_antiquant_mode=mode, value_antiquant_mode=mode)
        res, _ = torch_npu.npu_fused_infer_attention_score(
            query.reshape(num_seqs, 1, num_heads * head_size),
            key_cache.view(num_blocks, block_size, num_kv_heads * head_size),
            value_cache.view(num_blocks, block_size, num_kv_heads * head_size),
            actual_seq_lengths_kv=lens_host.tolist(), num_heads=num_heads,
            num_key_value_heads=num_kv_heads, scale=scale, input_layout="BSH",
            block_table=table, block_size=block_size, **antiquant)
        out.copy_(res.view(num_seqs, num_heads, head_size))
    out.masked_fill_((seq_lens == 0)[:, None, None], 0)
