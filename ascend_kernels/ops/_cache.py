"""The paged KV cache's dtypes, quantization scales and checks, shared by reshape_and_cache
(which writes the cache) and the attention ops (which read it)."""
from __future__ import annotations

import torch

from ..kernels import _quant
from ..launcher.checks import FLOAT_DTYPES, check_dim, check_tensor, first_bad, not_contiguous_in_last_dim
from ..launcher.device import backend_flag

HALF_DTYPES = (torch.float16, torch.bfloat16)
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
CACHE_DTYPES = FLOAT_DTYPES + (torch.int8,) + FP8_DTYPES
QUANT_OF = {torch.int8: _quant.QUANT_INT8, torch.float8_e4m3fn: _quant.QUANT_FP8,
            torch.float8_e5m2: _quant.QUANT_FP8}


def kernel_refusal(backend: str, tensors: dict, cache_dtype: torch.dtype, what: str = "cache") -> str:
    """Why the backend's kernels cannot take these tensors ("" when they can): one is not
    contiguous in head_size, or the cache is fp8, which the backend cannot read."""
    why = not_contiguous_in_last_dim(tensors, "head_size")
    if why or cache_dtype not in FP8_DTYPES:
        return why or ""
    return {"cpu": f"{what} dtype {cache_dtype}: the Triton interpreter has no fp8 (numpy lacks it)",
            "npu": f"{what} dtype {cache_dtype}: Ascend has no fp8"}.get(backend, "")


def check_caches(k_name: str, k: torch.Tensor, v_name: str, v: torch.Tensor, dev: torch.device) -> None:
    """ValueError/TypeError unless the two caches have one shape and one dtype, not fp8 on Ascend."""
    if k.shape != v.shape:
        raise ValueError(f"{k_name} and {v_name} must have the same shape, got {tuple(k.shape)} and "
                         f"{tuple(v.shape)}")
    if k.dtype != v.dtype:
        raise TypeError(f"{k_name} and {v_name} must have one dtype, got {k.dtype} and {v.dtype}")
    if dev.type == "npu" and k.dtype in FP8_DTYPES:
        raise TypeError(f"{k_name} dtype {k.dtype}: Ascend has no fp8; use an int8 cache")


def check_query_cache(q_name: str, q: torch.Tensor, k_name: str, k: torch.Tensor, quantized: bool,
                      cache: str = "cache") -> int:
    """The num_kv_heads of cache `k` [..., num_kv_heads, head_size] read by query `q` [tokens,
    num_heads, head_size]; TypeError/ValueError unless k has q's dtype (or, when `quantized` is
    allowed, is int8/fp8 read with an fp16/bf16 q), q's head_size, and kv heads dividing q's."""
    if k.dtype != q.dtype and not (quantized and k.dtype in QUANT_OF and q.dtype in HALF_DTYPES):
        raise TypeError(f"{k_name} must have {q_name}'s dtype {q.dtype}, or be an int8/fp8 {cache} read "
                        f"with an fp16/bf16 {q_name}; got {k_name} dtype {k.dtype}")
    check_dim(k_name, k, k.dim() - 1, q.shape[2], f"head_size of {q_name}")
    num_heads, num_kv_heads = q.shape[1], k.shape[-2]
    if num_kv_heads == 0 or num_heads % num_kv_heads:
        raise ValueError(f"{q_name}'s num_heads ({num_heads}) must be a multiple of {k_name}'s "
                         f"num_kv_heads ({num_kv_heads})")
    return num_kv_heads


def check_scales(cache_dtype: torch.dtype, k_scale, v_scale, num_kv_heads: int, device: torch.device) -> tuple:
    """Validated (k_scale, v_scale) for a cache of `cache_dtype`: both given for an int8/fp8
    cache, neither otherwise; each a host float (made a device tensor on every call, see
    fresh_scale) or an fp32 tensor of 1 element (per tensor) or [num_kv_heads] (per kv head) on
    the caches' device."""
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


def check_pages(name: str, lens: torch.Tensor, block_table: torch.Tensor, block_size: int,
                num_blocks: int, window: int = 0) -> None:
    """ASCEND_KERNELS_CHECK_BOUNDS=1 (a host sync): ValueError naming the first length `name`
    outside [0, max_blocks * block_size], or the first page id a sequence reads (its table
    entries up to ceil(len / block_size), from the window's first page on) outside [0, num_blocks)."""
    lens, max_blocks = lens.long(), block_table.shape[1]
    first_bad(name, (lens < 0) | (lens > max_blocks * block_size),
              lambda i: f"= {int(lens[i])} is outside [0, {max_blocks * block_size}] (the block "
                        f"table's {max_blocks} pages x block_size {block_size})")
    pages = (lens + block_size - 1) // block_size
    col = torch.arange(max_blocks, device=lens.device)[None, :]
    reads = col < pages[:, None]
    if window:
        reads &= col >= ((lens - window).clamp(min=0) // block_size)[:, None]
    first_bad("block_table", reads & ((block_table < 0) | (block_table >= num_blocks)),
              lambda i: f"= {int(block_table[i])} is outside the cache's {num_blocks} blocks "
                        f"(sequence {i[0]} reads {int(pages[i[0]])} pages)")


def scale_per_head(scale) -> bool:
    """The SCALE_PER_HEAD constexpr: a tensor scale of more than one element (from its shape)."""
    return isinstance(scale, torch.Tensor) and scale.numel() > 1


def cache_constexprs(cache_dtype: torch.dtype, k_scale, backend: str) -> dict:
    """The attention kernels' dot and quantization constexprs for a cache of `cache_dtype`."""
    return dict(DOT_FP32=backend_flag(backend, "DOTS_IN_FP32"),
                QUANT=QUANT_OF.get(cache_dtype, _quant.QUANT_NONE), SCALE_PER_HEAD=scale_per_head(k_scale))


def scale_args(p, spare: torch.Tensor) -> dict:
    """The k_scale_ptr/v_scale_ptr launch arguments: `spare` (never read) without quantization."""
    return {f"{n}_ptr": spare if getattr(p, n) is None else getattr(p, n) for n in ("k_scale", "v_scale")}


def fresh_scale(name: str):
    """A `fresh` field maker: a host float scale becomes a 1-element device tensor on every call
    (not capturable: pass a tensor in graphs)."""
    def make(p):
        s = getattr(p, name)
        return torch.full((1,), float(s), dtype=torch.float32, device=p.device) \
            if isinstance(s, (int, float)) else s
    return make


FRESH_SCALES = {"k_scale": fresh_scale("k_scale"), "v_scale": fresh_scale("v_scale")}
