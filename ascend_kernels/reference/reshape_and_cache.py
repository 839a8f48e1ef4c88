"""reshape_and_cache in plain PyTorch."""
from __future__ import annotations

from typing import Optional

import torch


def quantize(x: torch.Tensor, scale: Optional[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """The value a cache of `dtype` stores for x: x / scale, saturated (int8: round half away)."""
    if dtype == torch.int8:
        y = x.float() / scale.float()
        y = torch.sign(y) * torch.floor(y.abs() + 0.5)
        return y.clamp(-128, 127).to(torch.int8)
    if dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        fmax = torch.finfo(dtype).max
        return (x.float() / scale.float()).clamp(-fmax, fmax).to(dtype)
    return x.to(dtype)


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
