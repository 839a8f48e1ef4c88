"""The paged KV cache's dtypes and quantization scales, shared by reshape_and_cache (which
writes the cache) and the attention ops (which read it)."""
from __future__ import annotations

import torch

from ..kernels import _quant
from ..launcher.device import backend_flag
from ._common import FLOAT_DTYPES, check_tensor

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
CACHE_DTYPES = FLOAT_DTYPES + (torch.int8,) + FP8_DTYPES
QUANT_OF = {torch.int8: _quant.QUANT_INT8, torch.float8_e4m3fn: _quant.QUANT_FP8,
            torch.float8_e5m2: _quant.QUANT_FP8}


def no_fp8(backend: str, cache_dtype: torch.dtype) -> str:
    """Why the backend's kernels cannot read an fp8 cache ("" when they can)."""
    if cache_dtype not in FP8_DTYPES:
        return ""
    return {"cpu": f"{cache_dtype}: the Triton interpreter has no fp8 (numpy lacks it)",
            "npu": f"{cache_dtype}: Ascend has no fp8"}.get(backend, "")


def check_kv_caches(key_cache: torch.Tensor, value_cache: torch.Tensor) -> None:
    """ValueError/TypeError unless the two caches have one shape and one dtype."""
    if key_cache.shape != value_cache.shape:
        raise ValueError(f"key_cache and value_cache must have the same shape, got "
                         f"{tuple(key_cache.shape)} and {tuple(value_cache.shape)}")
    if key_cache.dtype != value_cache.dtype:
        raise TypeError(f"key_cache and value_cache must have one dtype, got {key_cache.dtype} "
                        f"and {value_cache.dtype}")


def check_scales(cache_dtype: torch.dtype, k_scale, v_scale, num_kv_heads: int, device: torch.device) -> tuple:
    """Validated (k_scale, v_scale) for a cache of `cache_dtype` (shared with the attention ops):
    both given for an int8/fp8 cache, neither otherwise; each a host float (made a device tensor
    on every call, see fresh_scale) or an fp32 tensor of 1 element (per tensor) or
    [num_kv_heads] (per kv head) on the caches' device."""
    quantized = cache_dtype in QUANT_OF
    if quantized and (k_scale is None or v_scale is None):
        raise ValueError(f"a {cache_dtype} cache needs k_scale and v_scale (per tensor, or fp32 [num_kv_heads])")
    if not quantized and (k_scale is not None or v_scale is not None):
        raise ValueError(f"k_scale/v_scale apply to int8/fp8 caches only, the cache is {cache_dtype}")
    for name, scale in (("k_scale", k_scale), ("v_scale", v_scale)):
        if scale is None or isinstance(scale, (int, float)):
            continue
        check_tensor(name, scale, dtypes=(torch.float32,), device=device)
        if scale.numel() != 1 and tuple(scale.shape) != (num_kv_heads,):
            raise ValueError(f"{name} must be one per-tensor scale or fp32 [num_kv_heads] = "
                             f"[{num_kv_heads}], got shape {tuple(scale.shape)}")
    if scale_per_head(k_scale) != scale_per_head(v_scale):
        raise ValueError("k_scale and v_scale must both be per tensor or both per kv head")
    return k_scale, v_scale


def scale_per_head(scale) -> bool:
    """The SCALE_PER_HEAD constexpr: a tensor scale of more than one element (from its shape)."""
    return isinstance(scale, torch.Tensor) and scale.numel() > 1


def cache_constexprs(cache_dtype: torch.dtype, k_scale, backend: str) -> dict:
    """The attention kernels' dot and quantization constexprs for a cache of `cache_dtype`."""
    return dict(DOT_FP32=backend_flag(backend, "DOTS_IN_FP32"),
                QUANT=QUANT_OF.get(cache_dtype, _quant.QUANT_NONE), SCALE_PER_HEAD=scale_per_head(k_scale))


def fresh_scale(name: str):
    """A `fresh` field maker: a host float scale becomes a 1-element device tensor on every call
    (not capturable: pass a tensor in graphs)."""
    def make(p):
        s = getattr(p, name)
        return torch.full((1,), float(s), dtype=torch.float32, device=p.device) \
            if isinstance(s, (int, float)) else s
    return make
