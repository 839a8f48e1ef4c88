"""Scatter new key/value tokens into a paged KV cache by slot.

Persistent grid over tokens (Ascend: one program per vector core). Each step moves one token's
whole [num_kv_heads, head_size] rows, whose cache address comes from one scalar slot: the loads
and stores stay structured (no pointer gathers), which keeps them vectorised on Ascend.
"""
import triton
import triton.language as tl

from ._quant import load_scale, quantize


@triton.jit
def reshape_and_cache_kernel(
    key_ptr, value_ptr,              # [num_tokens(+), num_kv_heads, head_size], head dim contiguous
    key_cache_ptr, value_cache_ptr,  # [num_blocks, block_size, num_kv_heads, head_size], head dim contiguous
    slot_mapping_ptr,                # [num_tokens] int32 or int64; < 0 = padding
    k_scale_ptr, v_scale_ptr,        # fp32 [1] or [num_kv_heads] (read only when QUANT != 0)
    num_tokens,                      # slot_mapping.numel(): tokens past it are not written
    num_slots,                       # num_blocks * block_size: slots at or past it are skipped
    block_size,
    key_stride_t, key_stride_h,
    value_stride_t, value_stride_h,
    key_cache_stride_b, key_cache_stride_s, key_cache_stride_h,
    value_cache_stride_b, value_cache_stride_s, value_cache_stride_h,
    NUM_KV_HEADS: tl.constexpr, HEAD_SIZE: tl.constexpr,
    BLOCK_H: tl.constexpr,           # heads per step (power of two)
    BLOCK_D: tl.constexpr,           # head_size rounded up to a power of two
    QUANT: tl.constexpr, FP8_MAX: tl.constexpr,
    SCALE_PER_HEAD: tl.constexpr,    # scales are [num_kv_heads], else one per tensor
    SLOT_I32: tl.constexpr,          # num_slots < 2**31: block/row math in int32 (int64 is scalarised on Ascend)
):
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_SIZE
    for token in range(pid, num_tokens, num_programs):
        slot = tl.load(slot_mapping_ptr + token)
        # Padding (< 0) and slots past the cache are skipped: no input may write outside it.
        if (slot >= 0) & (slot < num_slots):
            if SLOT_I32:
                slot_i = slot.to(tl.int32)
            else:
                slot_i = slot
            block = (slot_i // block_size).to(tl.int64)  # widened for the offsets only
            in_block = (slot_i % block_size).to(tl.int64)
            token64 = tl.cast(token, tl.int64)
            k_src = key_ptr + token64 * key_stride_t
            v_src = value_ptr + token64 * value_stride_t
            k_dst = key_cache_ptr + block * key_cache_stride_b + in_block * key_cache_stride_s
            v_dst = value_cache_ptr + block * value_cache_stride_b + in_block * value_cache_stride_s
            for h0 in range(0, NUM_KV_HEADS, BLOCK_H):
                heads = h0 + offs_h
                head_ok = (heads < NUM_KV_HEADS)[:, None]
                mask = head_ok & mask_d[None, :]
                k = tl.load(k_src + heads[:, None] * key_stride_h + offs_d[None, :], mask=mask)
                v = tl.load(v_src + heads[:, None] * value_stride_h + offs_d[None, :], mask=mask)
                k_scale = load_scale(k_scale_ptr, heads[:, None], head_ok, QUANT, SCALE_PER_HEAD)
                v_scale = load_scale(v_scale_ptr, heads[:, None], head_ok, QUANT, SCALE_PER_HEAD)
                k = quantize(k, k_scale, QUANT, FP8_MAX)
                v = quantize(v, v_scale, QUANT, FP8_MAX)
                tl.store(k_dst + heads[:, None] * key_cache_stride_h + offs_d[None, :],
                         k.to(key_cache_ptr.dtype.element_ty), mask=mask)
                tl.store(v_dst + heads[:, None] * value_cache_stride_h + offs_d[None, :],
                         v.to(value_cache_ptr.dtype.element_ty), mask=mask)
