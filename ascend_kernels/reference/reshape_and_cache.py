"""reshape_and_cache in plain PyTorch."""
from __future__ import annotations

import torch


QUANT_DTYPES = (torch.int8, torch.float8_e4m3fn, torch.float8_e5m2)


def _per_head(scale) -> torch.Tensor:
    """A per-tensor ([1]) or per-kv-head ([num_kv_heads]) scale as fp32 [n, 1]: broadcasts
    against [..., num_kv_heads, head_size]."""
    return torch.as_tensor(scale, dtype=torch.float32).reshape(-1, 1)


def quantize(x: torch.Tensor, scale, dtype: torch.dtype) -> torch.Tensor:
    """The value a cache of `dtype` stores for x [..., num_kv_heads, head_size]: x / scale,
    saturated (int8: round half away)."""
    if dtype not in QUANT_DTYPES:
        return x.to(dtype)
    y = x.float() / _per_head(scale).to(x.device)
    if dtype == torch.int8:
        y = torch.sign(y) * torch.floor(y.abs() + 0.5)
        return y.clamp(-128, 127).to(torch.int8)
    fmax = torch.finfo(dtype).max
    return y.clamp(-fmax, fmax).to(dtype)


def dequantize(cache: torch.Tensor, scale, dtype: torch.dtype) -> torch.Tensor:
    """cache [..., num_kv_heads, head_size] as `dtype`: times scale for an int8/fp8 cache."""
    if cache.dtype not in QUANT_DTYPES:
        return cache.to(dtype)
    return (cache.float() * _per_head(scale).to(cache.device)).to(dtype)


def reshape_and_cache(key, value, key_cache, value_cache, slot_mapping,
                      k_scale=None, v_scale=None) -> None:
    """Writes key[i]/value[i] to slot slot_mapping[i] (block = slot // block_size); skips
    slots < 0 (padding) and slots past the cache."""
    num_blocks, block_size = key_cache.shape[:2]
    n = slot_mapping.numel()
    slots = slot_mapping.reshape(-1).long()
    keep = (slots >= 0) & (slots < num_blocks * block_size)
    rows = torch.arange(n, device=slots.device)[keep]
    slots = slots[keep]
    blocks, offsets = slots // block_size, slots % block_size
    key_cache[blocks, offsets] = quantize(key[:n][rows], k_scale, key_cache.dtype)
    value_cache[blocks, offsets] = quantize(value[:n][rows], v_scale, value_cache.dtype)
