"""reshape_and_cache: write new key/value tokens into the paged KV cache, in place."""
from __future__ import annotations

import dataclasses
from typing import Optional, Union

import torch

from ..kernels import reshape_and_cache as kern
from ..launcher import autotune, device as _device, dispatch
from ..reference import reshape_and_cache as ref
from ._common import (FLOAT_DTYPES, check_bounds_enabled, check_dim, check_same_device, check_tensor,
                      next_pow2, not_contiguous_in_last_dim, opaque_op)

OP = "reshape_and_cache"
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
CACHE_DTYPES = FLOAT_DTYPES + (torch.int8,) + FP8_DTYPES
QUANT_OF = {torch.int8: kern.QUANT_INT8, torch.float8_e4m3fn: kern.QUANT_FP8,
            torch.float8_e5m2: kern.QUANT_FP8}


@dataclasses.dataclass
class Problem:
    key: torch.Tensor
    value: torch.Tensor
    key_cache: torch.Tensor
    value_cache: torch.Tensor
    slot_mapping: torch.Tensor
    k_scale: Optional[torch.Tensor]
    v_scale: Optional[torch.Tensor]

    @property
    def device(self) -> torch.device:
        return self.key.device

    @property
    def num_tokens(self) -> int:
        return self.slot_mapping.numel()


def _as_scale(name: str, scale, device: torch.device) -> Optional[torch.Tensor]:
    if scale is None:
        return None
    if isinstance(scale, (int, float)):
        # a host float becomes a device tensor here (not capturable: pass a tensor in graphs)
        return torch.full((1,), float(scale), dtype=torch.float32, device=device)
    check_tensor(name, scale, dtypes=(torch.float32,), device=device)
    if scale.numel() != 1:
        raise ValueError(f"{name} must hold one per-tensor scale, got shape {tuple(scale.shape)}")
    return scale


def _validate(key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale) -> Problem:
    check_tensor("key", key, ndim=3, dtypes=FLOAT_DTYPES)
    check_tensor("value", value, ndim=3, dtypes=FLOAT_DTYPES)
    check_tensor("key_cache", key_cache, ndim=4, dtypes=CACHE_DTYPES)
    check_tensor("value_cache", value_cache, ndim=4, dtypes=CACHE_DTYPES)
    check_tensor("slot_mapping", slot_mapping, dtypes=(torch.int32, torch.int64))
    dev = check_same_device([("key", key), ("value", value), ("key_cache", key_cache),
                             ("value_cache", value_cache), ("slot_mapping", slot_mapping)])
    if slot_mapping.dim() != 1:
        raise ValueError(f"slot_mapping must be 1-D [num_tokens], got shape {tuple(slot_mapping.shape)}")
    if key.shape[1:] != value.shape[1:]:
        raise ValueError(f"key and value must have the same [num_kv_heads, head_size], got "
                         f"{tuple(key.shape)} and {tuple(value.shape)}")
    if key_cache.shape != value_cache.shape:
        raise ValueError(f"key_cache and value_cache must have the same shape, got "
                         f"{tuple(key_cache.shape)} and {tuple(value_cache.shape)}")
    if key_cache.dtype != value_cache.dtype:
        raise TypeError(f"key_cache and value_cache must have one dtype, got {key_cache.dtype} "
                        f"and {value_cache.dtype}")
    check_dim("key_cache", key_cache, 2, key.shape[1], "num_kv_heads of key")
    check_dim("key_cache", key_cache, 3, key.shape[2], "head_size of key")
    n = slot_mapping.numel()
    if key.shape[0] < n or value.shape[0] < n:
        raise ValueError(f"key/value hold {key.shape[0]}/{value.shape[0]} tokens, fewer than "
                         f"slot_mapping's {n}")
    quantized = key_cache.dtype in QUANT_OF
    k_scale, v_scale = _as_scale("k_scale", k_scale, dev), _as_scale("v_scale", v_scale, dev)
    if quantized and (k_scale is None or v_scale is None):
        raise ValueError(f"a {key_cache.dtype} cache needs per-tensor k_scale and v_scale")
    if not quantized and (k_scale is not None or v_scale is not None):
        raise ValueError(f"k_scale/v_scale apply to int8/fp8 caches only, the cache is {key_cache.dtype}")
    if dev.type == "npu" and key_cache.dtype in FP8_DTYPES:
        raise TypeError(f"key_cache dtype {key_cache.dtype}: Ascend has no fp8; use an int8 cache")
    return Problem(key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale)


def _check_bounds(p: Problem) -> None:
    """ASCEND_KERNELS_CHECK_BOUNDS=1: report the first slot past the cache (syncs the host)."""
    num_slots = p.key_cache.shape[0] * p.key_cache.shape[1]
    bad = (p.slot_mapping >= num_slots).nonzero()
    if bad.numel():
        i = int(bad[0, 0])
        raise ValueError(f"slot_mapping[{i}] = {int(p.slot_mapping[i])} is past the cache's "
                         f"{num_slots} slots (num_blocks * block_size)")


def _capability(backend: str, p: Problem) -> tuple[bool, str]:
    why = not_contiguous_in_last_dim({"key": p.key, "value": p.value, "key_cache": p.key_cache,
                                      "value_cache": p.value_cache}, "head_size")
    if why:
        return False, why
    if backend == "cpu" and p.key_cache.dtype in FP8_DTYPES:
        return False, "the Triton interpreter has no fp8 (numpy lacks it)"
    return True, "the kernel handles these shapes, strides and dtypes"


# Search spaces. grid_programs_per_core sizes the persistent grid; BLOCK_H caps heads per step.
CONFIGS = {
    # on a GPU, 64 programs per SM is about one token per program for 8k tokens
    "cuda": [{"BLOCK_H": h, "num_warps": w, "grid_programs_per_core": g}
             for h in (4, 8, 16) for w in (1, 2, 4, 8) for g in (8, 16, 32, 64)],
    "npu": [{"BLOCK_H": h, "multibuffer": m, "grid_programs_per_core": 1}
            for h in (2, 4, 8, 16) for m in (True, False)],
    "cpu": [{"BLOCK_H": 8, "grid_programs_per_core": 1}],
}


def _default_config(backend: str, p: Problem) -> dict:
    if backend == "cuda":
        return {"BLOCK_H": 8, "num_warps": 4, "grid_programs_per_core": 16}
    if backend == "npu":
        return {"BLOCK_H": 8, "multibuffer": True, "grid_programs_per_core": 1}
    return dict(CONFIGS["cpu"][0])


def _tuning_key(p: Problem) -> tuple[dict, dict]:
    fixed = {"heads": p.key.shape[1], "head_size": p.key.shape[2],
             "dtype": str(p.key.dtype).replace("torch.", ""),
             "cache_dtype": str(p.key_cache.dtype).replace("torch.", "")}
    return fixed, {"tokens": p.num_tokens}


def _kernel_args(p: Problem, config: dict) -> tuple[tuple, dict, dict, dict]:
    """(grid, runtime args by name, constexprs, launch options) of one launch."""
    backend = p.device.type
    constexprs, options = autotune.split_config(config, backend)
    num_heads, head_size = p.key.shape[1], p.key.shape[2]
    constexprs["BLOCK_H"] = min(constexprs["BLOCK_H"], next_pow2(num_heads))
    grid = (_device.persistent_grid(p.device, p.num_tokens, config.get("grid_programs_per_core", 1),
                                    cube=False),)
    quant = QUANT_OF.get(p.key_cache.dtype, kern.QUANT_NONE)
    fp8_max = float(torch.finfo(p.key_cache.dtype).max) if quant == kern.QUANT_FP8 else 0.0
    kc, vc = p.key_cache, p.value_cache
    args = dict(
        key_ptr=p.key, value_ptr=p.value, key_cache_ptr=kc, value_cache_ptr=vc,
        slot_mapping_ptr=p.slot_mapping,
        # without quantization the scale pointers are never read: any tensor will do
        k_scale_ptr=p.k_scale if p.k_scale is not None else p.slot_mapping,
        v_scale_ptr=p.v_scale if p.v_scale is not None else p.slot_mapping,
        num_tokens=p.num_tokens, num_slots=kc.shape[0] * kc.shape[1], block_size=kc.shape[1],
        key_stride_t=p.key.stride(0), key_stride_h=p.key.stride(1),
        value_stride_t=p.value.stride(0), value_stride_h=p.value.stride(1),
        key_cache_stride_b=kc.stride(0), key_cache_stride_s=kc.stride(1), key_cache_stride_h=kc.stride(2),
        value_cache_stride_b=vc.stride(0), value_cache_stride_s=vc.stride(1), value_cache_stride_h=vc.stride(2))
    constexprs.update(NUM_KV_HEADS=num_heads, HEAD_SIZE=head_size, BLOCK_D=next_pow2(head_size),
                      QUANT=quant, FP8_MAX=fp8_max)
    return grid, args, constexprs, options


def _launch(p: Problem, config: dict) -> None:
    if p.num_tokens == 0:
        return
    grid, args, constexprs, options = _kernel_args(p, config)
    kern.reshape_and_cache_kernel[grid](**args, **constexprs, **options)


def _ascend_cases(shape: dict, config: dict) -> list:
    """The Ascend compile check's cases for one suite shape and config (tensors on the CPU
    only describe dtypes and strides: nothing runs)."""
    from .. import ascend_check

    cases = []
    for dtype, cache_dtype in ((torch.bfloat16, torch.bfloat16), (torch.float16, torch.int8)):
        p = _make_problem(dict(shape, tokens=min(shape["tokens"], 64)), torch.device("cpu"), dtype)
        if cache_dtype == torch.int8:
            p.key_cache = p.key_cache.to(torch.int8)
            p.value_cache = p.value_cache.to(torch.int8)
            p.k_scale = p.v_scale = torch.ones(1)
        _, args, constexprs, _ = _kernel_args(p, config)
        cases.append(ascend_check.KernelCase(
            OP, kern.reshape_and_cache_kernel, ascend_check.signature_of(args), constexprs, config,
            label=f"tokens={shape['tokens']},kv_heads={shape['kv_heads']},head_size={shape['head_size']},"
                  f"cache={str(cache_dtype).replace('torch.', '')}"))
    return cases


def _run(p: Problem) -> None:
    decision = dispatch.decide(SPEC, p)
    if decision.path == "triton":
        _launch(p, decision.config)
    elif decision.backend == "npu":
        from ..fallback_atb import reshape_and_cache as atb

        atb.reshape_and_cache(p.key, p.value, p.key_cache, p.value_cache, p.slot_mapping,
                              p.k_scale, p.v_scale)
    else:
        ref.reshape_and_cache(p.key, p.value, p.key_cache, p.value_cache, p.slot_mapping,
                              p.k_scale, p.v_scale)


@opaque_op("ascend_kernels::reshape_and_cache", mutates_args=("key_cache", "value_cache"))
def _reshape_and_cache_op(key: torch.Tensor, value: torch.Tensor, key_cache: torch.Tensor,
                          value_cache: torch.Tensor, slot_mapping: torch.Tensor,
                          k_scale: Optional[torch.Tensor], v_scale: Optional[torch.Tensor]) -> None:
    _run(Problem(key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale))


@_reshape_and_cache_op.register_fake
def _(key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale) -> None:
    return None


def _prepare(key, value, key_cache, value_cache, slot_mapping, *, k_scale=None, v_scale=None) -> Problem:
    return _validate(key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale)


def reshape_and_cache(key: torch.Tensor, value: torch.Tensor, key_cache: torch.Tensor,
                      value_cache: torch.Tensor, slot_mapping: torch.Tensor, *,
                      k_scale: Union[torch.Tensor, float, None] = None,
                      v_scale: Union[torch.Tensor, float, None] = None) -> None:
    """Write key/value tokens into the paged KV cache, in place (vLLM's reshape_and_cache).

    key, value:   [num_tokens, num_kv_heads, head_size], fp16/bf16/fp32; may be strided views
                  (e.g. slices of a fused qkv) and longer than slot_mapping: only the first
                  slot_mapping.numel() tokens are written.
    key_cache, value_cache: [num_blocks, block_size, num_kv_heads, head_size], fp16/bf16/fp32,
                  or int8/fp8 (fp8 not on Ascend) with per-tensor k_scale/v_scale (the cache
                  stores x / scale, saturated); may be strided views of one combined KV tensor.
    slot_mapping: [num_tokens] int32 or int64, read as it is on the device (no cast, no host
                  sync). Token i goes to block slot // block_size, row slot % block_size; a
                  slot < 0 is padding and is skipped, and so is a slot past the cache (with
                  ASCEND_KERNELS_CHECK_BOUNDS=1 the latter raises, at the cost of a sync).
    """
    p = _validate(key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale)
    if check_bounds_enabled():
        _check_bounds(p)
    _reshape_and_cache_op(p.key, p.value, p.key_cache, p.value_cache, p.slot_mapping,
                          p.k_scale, p.v_scale)


def _make_problem(shape: dict, device: torch.device, dtype: torch.dtype = torch.bfloat16) -> Problem:
    """Fresh random inputs for a bench/tune shape: tokens, kv_heads, head_size, block_size, num_slots."""
    t, h, d, bs = shape["tokens"], shape["kv_heads"], shape["head_size"], shape["block_size"]
    num_blocks = -(-shape.get("num_slots", 4 * t) // bs)
    key = torch.randn(t, h, d, device=device, dtype=dtype)
    value = torch.randn(t, h, d, device=device, dtype=dtype)
    key_cache = torch.randn(num_blocks, bs, h, d, device=device, dtype=dtype)
    value_cache = torch.randn(num_blocks, bs, h, d, device=device, dtype=dtype)
    slots = torch.randperm(num_blocks * bs, device=device)[:t].to(torch.int64)
    return Problem(key, value, key_cache, value_cache, slots, None, None)


SPEC = dispatch.register(dispatch.OpSpec(
    name=OP, prepare=_prepare, capability=_capability, configs=CONFIGS,
    default_config=_default_config, tuning_key=_tuning_key, launch=_launch,
    kernels=(kern.reshape_and_cache_kernel, kern._quantize), make_problem=_make_problem,
    ascend_cases=_ascend_cases))
