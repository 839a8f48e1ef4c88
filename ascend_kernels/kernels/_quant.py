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
def _bytes_to_fp16(x, asm: tl.constexpr):
    # Four 8-bit codes per 32-bit register in, two fp16x2 registers out. Pure, so the compiler
    # moves the tile's layout change for the dot ahead of the conversion: the codes go from
    # shared memory straight into the dot's register layout (the V tile, read transposed, a
    # byte at a time) and convert there, with no fp16 copy of the tile written back to shared
    # memory. H200, int8 decode B64 x 4096: 268 -> 191 us (bench/results/h200/quantized_and_flash.md).
    return tl.inline_asm_elementwise(asm=asm, constraints="=r,=r,r", args=[x], dtype=tl.float16,
                                     is_pure=True, pack=4)


@triton.jit
def cache_codes_to_fp16(x):
    """Exact int8 / fp8 codes -> fp16 (CUDA only). int8 by integer ops: the byte x + 128 (x ^ 0x80)
    goes into the mantissa of fp16 1024.0 (bits 0x6400), then 1152.0 is subtracted. fp8 by the
    packed hardware conversion (two codes per instruction), not fp8 -> fp16 -> bf16."""
    if x.dtype == tl.int8:
        y = _bytes_to_fp16(x, """{
        .reg .b32 t, m;
        xor.b32 t, $2, 0x80808080;
        mov.b32 m, 0x64806480;
        prmt.b32 $0, t, 0x64646464, 0x5140;
        prmt.b32 $1, t, 0x64646464, 0x7362;
        sub.f16x2 $0, $0, m;
        sub.f16x2 $1, $1, m;
        }""")
    elif x.dtype == tl.float8e5:
        y = _bytes_to_fp16(x, """{
        .reg .b16 lo, hi;
        mov.b32 {lo, hi}, $2;
        cvt.rn.f16x2.e5m2x2 $0, lo;
        cvt.rn.f16x2.e5m2x2 $1, hi;
        }""")
    else:
        y = _bytes_to_fp16(x, """{
        .reg .b16 lo, hi;
        mov.b32 {lo, hi}, $2;
        cvt.rn.f16x2.e4m3x2 $0, lo;
        cvt.rn.f16x2.e4m3x2 $1, hi;
        }""")
    return y


@triton.jit
def fp16_operand(x):
    """A query tile as an fp16 dot operand, and the power of two it was divided by to stay in
    fp16's range (1 unless some |x| > 2^14; exact otherwise: fp16 holds every bf16 mantissa)."""
    xf = x.to(tl.float32)
    amax = tl.max(tl.max(tl.abs(xf), 1), 0)
    div = tl.where(amax > 16384.0, tl.exp2(tl.ceil(tl.log2(amax * (1.0 / 16384.0)))), 1.0)
    return (xf / div).to(tl.float16), div


@triton.jit
def cache_tile_as(x, dtype: tl.constexpr, QUANT: tl.constexpr, FP16_DOTS: tl.constexpr):
    """A quantized cache tile as the dots' operand dtype (exact for int8 and fp8 codes). With
    FP16_DOTS (CUDA) the dots run in fp16 and the codes convert through cache_codes_to_fp16."""
    if FP16_DOTS:
        y = cache_codes_to_fp16(x)
    else:
        y = x.to(dtype)
    return y


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
