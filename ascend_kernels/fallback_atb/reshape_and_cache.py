"""reshape_and_cache through ATB: torch_npu._npu_reshape_and_cache.

ATB wants int32 slots and no padding. Dropping the padded tokens would need their count on the
host (a sync), so instead each padded token is turned into a duplicate of a real one: it gets
the slot and the key/value of the first non-padded token, and both writes store identical
bytes. If every token is padding, they all rewrite cache slot 0 with its own contents. All of
it is device-side tensor math on the current stream.
"""
from __future__ import annotations

import torch

from ..reference.reshape_and_cache import quantize


def reshape_and_cache(key, value, key_cache, value_cache, slot_mapping,
                      k_scale=None, v_scale=None) -> None:
    import torch_npu

    n = slot_mapping.numel()
    if key_cache.dtype == torch.int8:  # ATB stores int8 as given: quantize first
        key, value = quantize(key[:n], k_scale, torch.int8), quantize(value[:n], v_scale, torch.int8)
    num_blocks, block_size, num_heads, head_size = key_cache.shape
    key, value = key[:n], value[:n]
    slots = slot_mapping.reshape(-1)
    valid = (slots >= 0) & (slots < num_blocks * block_size)
    any_valid = valid.any()
    first = torch.argmax(valid.to(torch.int32))  # first valid token (0 when there is none)
    safe_slot = torch.where(any_valid, slots[first], torch.zeros_like(slots[first]))
    slots = torch.where(valid, slots, safe_slot).to(torch.int32)

    def neutralise(x, cache):
        # value a padded token writes: the first valid token's, or slot 0's current contents
        stand_in = torch.where(any_valid, x[first], cache[0, 0].to(x.dtype))
        return torch.where(valid[:, None, None], x, stand_in)

    torch_npu._npu_reshape_and_cache(key=neutralise(key, key_cache), value=neutralise(value, value_cache),
                                     key_cache=key_cache, value_cache=value_cache,
                                     slot_indices=slots)
