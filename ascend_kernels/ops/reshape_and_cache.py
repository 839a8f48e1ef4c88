"""reshape_and_cache: write new key/value tokens into the paged KV cache, in place."""
from __future__ import annotations

import dataclasses
from typing import Optional, Union

import torch

from ..kernels import _quant, reshape_and_cache as kern
from ..launcher import device as _device
from ..launcher.checks import FLOAT_DTYPES, check_dim, check_tensors, dtype_name, first_bad, next_pow2
from ..launcher.configs import split_config
from ..launcher.launch import Launch
from ..launcher.op import define
from ._cache import (CACHE_DTYPES, FRESH_SCALES, QUANT_OF, check_caches, check_scales, kernel_refusal,
                     scale_args, scale_per_head)
from ._common import fallbacks


@dataclasses.dataclass
class Problem:
    key: torch.Tensor
    value: torch.Tensor
    key_cache: torch.Tensor
    value_cache: torch.Tensor
    slot_mapping: torch.Tensor
    k_scale: Optional[torch.Tensor]
    v_scale: Optional[torch.Tensor]

    device = property(lambda self: self.key.device)
    num_tokens = property(lambda self: self.slot_mapping.numel())


def _check_values(p: Problem) -> None:
    """ASCEND_KERNELS_CHECK_BOUNDS=1: report the first slot past the cache (syncs the host)."""
    num_slots = p.key_cache.shape[0] * p.key_cache.shape[1]
    first_bad("slot_mapping", p.slot_mapping >= num_slots,
              lambda i: f"= {int(p.slot_mapping[i])} is past the cache's {num_slots} slots "
                        f"(num_blocks * block_size)")


def _capability(backend: str, p: Problem) -> tuple[bool, str]:
    why = kernel_refusal(backend, {"key": p.key, "value": p.value, "key_cache": p.key_cache,
                                   "value_cache": p.value_cache}, p.key_cache.dtype)
    return not why, why or "the kernel handles these shapes, strides and dtypes"


def _launches(p: Problem, config: dict, backend: str) -> list:
    if p.num_tokens == 0:
        return []
    constexprs, options = split_config(config, backend)
    num_heads, head_size = p.key.shape[1], p.key.shape[2]
    constexprs["BLOCK_H"] = min(constexprs["BLOCK_H"], next_pow2(num_heads))
    grid = (_device.persistent_grid(p.device, p.num_tokens, config.get("grid_programs_per_core", 1),
                                    cube=False),)
    quant = QUANT_OF.get(p.key_cache.dtype, _quant.QUANT_NONE)
    kc, vc = p.key_cache, p.value_cache
    num_slots = kc.shape[0] * kc.shape[1]
    args = dict(
        key_ptr=p.key, value_ptr=p.value, key_cache_ptr=kc, value_cache_ptr=vc,
        slot_mapping_ptr=p.slot_mapping, **scale_args(p, p.slot_mapping),  # unread without quantization
        num_tokens=p.num_tokens, num_slots=num_slots, block_size=kc.shape[1],
        key_stride_t=p.key.stride(0), key_stride_h=p.key.stride(1),
        value_stride_t=p.value.stride(0), value_stride_h=p.value.stride(1),
        key_cache_stride_b=kc.stride(0), key_cache_stride_s=kc.stride(1), key_cache_stride_h=kc.stride(2),
        value_cache_stride_b=vc.stride(0), value_cache_stride_s=vc.stride(1), value_cache_stride_h=vc.stride(2))
    constexprs.update(NUM_KV_HEADS=num_heads, HEAD_SIZE=head_size, BLOCK_D=next_pow2(head_size),
                      QUANT=quant, SCALE_PER_HEAD=scale_per_head(p.k_scale), SLOT_I32=num_slots < 2**31,
                      FP8_MAX=float(torch.finfo(kc.dtype).max) if quant == _quant.QUANT_FP8 else 0.0)
    return [Launch(kern.reshape_and_cache_kernel, grid, args, constexprs, options)]


def _fallback_args(p: Problem) -> tuple:
    return (p.key, p.value, p.key_cache, p.value_cache, p.slot_mapping, p.k_scale, p.v_scale), {}


def _tuning_key(p: Problem) -> tuple[dict, dict]:
    fixed = {"heads": p.key.shape[1], "head_size": p.key.shape[2], "dtype": dtype_name(p.key.dtype),
             "cache_dtype": dtype_name(p.key_cache.dtype)}
    return fixed, {"tokens": p.num_tokens}


@define(problem=Problem, kernel_module=kern, capability=_capability, launches=_launches,
        fallbacks=fallbacks("reshape_and_cache", _fallback_args), tuning_key=_tuning_key,
        result=lambda p: None, outputs=("key_cache", "value_cache"), fresh=FRESH_SCALES,
        check_values=_check_values)
def reshape_and_cache(key: torch.Tensor, value: torch.Tensor, key_cache: torch.Tensor,
                      value_cache: torch.Tensor, slot_mapping: torch.Tensor, *,
                      k_scale: Union[torch.Tensor, float, None] = None,
                      v_scale: Union[torch.Tensor, float, None] = None) -> None:
    """Write key/value tokens into the paged KV cache, in place (vLLM's reshape_and_cache).

    key, value:   [num_tokens, num_kv_heads, head_size], fp16/bf16/fp32; may be strided views
                  (e.g. slices of a fused qkv) and longer than slot_mapping: only the first
                  slot_mapping.numel() tokens are written.
    key_cache, value_cache: [num_blocks, block_size, num_kv_heads, head_size], fp16/bf16/fp32,
                  or int8/fp8 (fp8 not on Ascend) with k_scale/v_scale (the cache stores
                  x / scale, saturated); may be strided views of one combined KV tensor.
    k_scale, v_scale: int8/fp8 caches only: a float, a 1-element fp32 tensor (per tensor) or
                  fp32 [num_kv_heads] (per kv head; both scales alike).
    slot_mapping: [num_tokens] int32 or int64, read as it is on the device (no cast, no host
                  sync). Token i goes to block slot // block_size, row slot % block_size; a
                  slot < 0 is padding and is skipped, and so is a slot past the cache (with
                  ASCEND_KERNELS_CHECK_BOUNDS=1 the latter raises, at the cost of a sync).
    """
    dev = check_tensors({"key": (key, 3, FLOAT_DTYPES), "value": (value, 3, FLOAT_DTYPES),
                         "key_cache": (key_cache, 4, CACHE_DTYPES),
                         "value_cache": (value_cache, 4, CACHE_DTYPES),
                         "slot_mapping": (slot_mapping, None, (torch.int32, torch.int64))})
    if slot_mapping.dim() != 1:
        raise ValueError(f"slot_mapping must be 1-D [num_tokens], got shape {tuple(slot_mapping.shape)}")
    if key.shape[1:] != value.shape[1:]:
        raise ValueError(f"key and value must have the same [num_kv_heads, head_size], got "
                         f"{tuple(key.shape)} and {tuple(value.shape)}")
    check_caches("key_cache", key_cache, "value_cache", value_cache, dev)
    check_dim("key_cache", key_cache, 2, key.shape[1], "num_kv_heads of key")
    check_dim("key_cache", key_cache, 3, key.shape[2], "head_size of key")
    n = slot_mapping.numel()
    if key.shape[0] < n or value.shape[0] < n:
        raise ValueError(f"key/value hold {key.shape[0]}/{value.shape[0]} tokens, fewer than "
                         f"slot_mapping's {n}")
    k_scale, v_scale = check_scales(key_cache.dtype, k_scale, v_scale, key.shape[1], dev)
    return Problem(key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale)
