"""reshape_and_cache through ATB ReshapeAndCache: torch_npu._npu_reshape_and_cache.

`route(...)` names the path: "_npu_reshape_and_cache" or "reference" (plain PyTorch index
writes on the device), with the reason.

Translation (all device-side tensor math on the current stream, no host sync):
- slots go as int32; the slot of token i outside [0, num_blocks * block_size) becomes -1 - i.
  ATB documents slot values in (-num_blocks * block_size, num_blocks * block_size) with no
  repeated value, negative ones included, and a negative slot moves nothing (CANN ATB
  ReshapeAndCacheOperation docs; Ascend/op-plugin test/test_custom_ops/
  test_atb_reshape_and_cache.py skips slot < 0 in its expected cache). Padding therefore stays
  negative, distinct, and never a duplicate of a real slot; a batch of at least as many tokens
  as the cache has slots (where -1 - i could leave that range) takes the reference.
- key/value are cast to the cache dtype first (the value the reference stores: x.to(dtype));
  int8 caches get key/value quantized with k_scale/v_scale first. ATB then sees one dtype.
- fp32 and fp8 caches, strided caches (e.g. the two halves of one combined KV tensor) and other
  SoCs take the reference: see npu_reshape_and_cache_reason.

Why not torch_npu.npu_scatter_pa_kv_cache (vllm-ascend's choice on A2/A3, with
cache_mode="Norm"; vllm_ascend/device/device_op.py)? Its documented slot range is
[0, num_blocks * block_size - 1] (Ascend/op-plugin docs/zh/custom_APIs/torch_npu/
torch_npu-npu_scatter_pa_kv_cache.md): padding is outside its contract. vllm-ascend relies on
-1 being skipped from a single-op test on an A3 host (vllm-ascend PR #11713,
tests/e2e/nightly/single_node/ops/singlecard_ops/test_pa_kv_cache_ops.py), not from the
operator's docs; dropping padded tokens ourselves would need a host sync. ATB documents the
padding we need. Once the scatter op documents negative slots it is the better call (no NNAL
library needed, fp32 caches too).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..reference.reshape_and_cache import quantize, reshape_and_cache as _reference
from . import _npu

ATB_RAC = "_npu_reshape_and_cache"
ATB_DTYPES = (torch.float16, torch.bfloat16, torch.int8)


def npu_reshape_and_cache_reason(key, value, key_cache, value_cache) -> Optional[str]:
    """None when torch_npu._npu_reshape_and_cache takes these tensors as the wrapper passes them
    (key/value cast or quantized to the cache dtype), else the limit (one line)."""
    rel, family = _npu.release(), _npu.soc_family()
    if rel < (7, 0, 0):
        return f"torch_npu release {_npu.release_name(rel)}: _npu_reshape_and_cache ships from 7.0.0 (op_plugin/python/atb/_atb_ops.py)"
    if family not in ("A2", "A3"):
        return f"SoC {family}: ND caches are taken on A2/A3 only here (310P caches are NZ in ATB's docs)"
    if key_cache.dtype != value_cache.dtype or key_cache.dtype not in ATB_DTYPES:
        return (f"cache dtypes {key_cache.dtype}/{value_cache.dtype}: ATB ReshapeAndCache takes one "
                f"dtype for key, value and both caches: fp16, bf16 or int8")
    if not (key_cache.is_contiguous() and value_cache.is_contiguous()):
        return "strided cache: ATB outputs must be contiguous (AtTensor2AtbTensor, AtbCommon.cpp)"
    return None


def route(key, value, key_cache, value_cache, slot_mapping, k_scale=None, v_scale=None) -> tuple[str, str]:
    reason = _npu.atb_missing() or npu_reshape_and_cache_reason(key, value, key_cache, value_cache)
    if reason is None and slot_mapping.numel() >= key_cache.shape[0] * key_cache.shape[1]:
        reason = (f"{slot_mapping.numel()} tokens for {key_cache.shape[0] * key_cache.shape[1]} slots: "
                  "padding would need repeated or out-of-range negative slots (RAC)")
    if reason is None:
        return ATB_RAC, "within ATB ReshapeAndCache's documented limits"
    return "reference", reason


def reshape_and_cache(key, value, key_cache, value_cache, slot_mapping,
                      k_scale=None, v_scale=None) -> None:
    path, _ = route(key, value, key_cache, value_cache, slot_mapping)
    if path == "reference":
        _reference(key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale)
        return
    import torch_npu

    n = slot_mapping.numel()
    dtype = key_cache.dtype
    k = quantize(key[:n], k_scale, dtype).contiguous()
    v = quantize(value[:n], v_scale, dtype).contiguous()
    slots = slot_mapping.reshape(-1)
    inside = (slots >= 0) & (slots < key_cache.shape[0] * key_cache.shape[1])
    slots = torch.where(inside, slots, -1 - torch.arange(n, device=slots.device, dtype=slots.dtype)).to(torch.int32)
    try:
        torch_npu._npu_reshape_and_cache(key=k, value=v, key_cache=key_cache,
                                         value_cache=value_cache, slot_indices=slots)
    except OSError as exc:
        _npu.note_atb_missing(exc)
        _reference(key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale)
