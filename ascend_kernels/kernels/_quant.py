"""jit helpers for quantized (int8 / fp8) KV caches, shared by the cache writer and the attention kernels.

A quantized cache stores x / scale, saturated; a reader multiplies by the same scale. The scale is
a value the caller has loaded (a scalar for a per-tensor scale, or a tensor broadcastable against
the tile for a per-head scale), so the helpers do no address math of their own.
"""
import triton
import triton.language as tl

# The QUANT constexpr of every kernel that touches a cache. Plain ints (the host passes them as
# constexprs); jit code compares against the literals, since a jit function can read only
# tl.constexpr globals.
QUANT_NONE = 0
QUANT_INT8 = 1
QUANT_FP8 = 2


@triton.jit
def quantize(x, scale, QUANT: tl.constexpr, FP8_MAX: tl.constexpr):
    """x (any float) -> the value to store in a quantized cache: x / scale, saturated (x as it is
    for QUANT_NONE). int8 rounds half away from zero; fp8 rounds to nearest even in the store's
    conversion."""
    if QUANT == 1:
        y = x.to(tl.float32) / scale
        y = tl.where(y >= 0, tl.floor(y + 0.5), tl.ceil(y - 0.5))
        y = tl.minimum(tl.maximum(y, -128.0), 127.0)
    elif QUANT == 2:
        y = x.to(tl.float32) / scale
        y = tl.minimum(tl.maximum(y, -FP8_MAX), FP8_MAX)
    else:
        y = x
    return y  # one return: the compiler wants one result type


@triton.jit
def load_dequant(ptrs, mask, scale, QUANT: tl.constexpr):
    """Load a cache tile and dequantize it: float32 x * scale for int8/fp8 (masked lanes 0), the
    tile as stored for QUANT_NONE (masked lanes 0)."""
    x = tl.load(ptrs, mask=mask, other=0)
    if QUANT != 0:
        x = x.to(tl.float32) * scale
    return x


@triton.jit
def load_scale(scale_ptr, heads, mask, QUANT: tl.constexpr, PER_HEAD: tl.constexpr):
    """The scale of kv head(s) `heads` (a scalar or an index tensor, e.g. [BLOCK_H, 1]):
    scale_ptr[heads] for a per-head [num_kv_heads] scale, scale_ptr[0] (a scalar) for a
    per-tensor one, 1.0 for QUANT_NONE (scale_ptr is then never read)."""
    if QUANT == 0:
        s = 1.0
    elif PER_HEAD:
        s = tl.load(scale_ptr + heads, mask=mask, other=1.0)
    else:
        s = tl.load(scale_ptr)
    return s
