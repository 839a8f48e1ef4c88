"""Attention helpers shared by the flash_attention and paged_attention providers.

- `attention_fp32`: the oracle, float32, chunked over queries so 16k-token prefills fit.
- SDPA per backend (flash, cuDNN, efficient) on [B, H, S, D] with equal lengths.
- flex_attention, compiled, with block masks (causal, sliding window; softcap as a score_mod),
  dense and in its paged form (a block mask over the physical pages of the cache).
- gather-then-SDPA for paged KV caches.

Masking convention (vLLM / FlashAttention): causal is aligned bottom-right, so query i of a
sequence with S queries and L keys sits at position i + L - S; a window (left, right) keeps
keys j with pos - left <= j <= pos + right (sliding_window W -> (W - 1, 0)).
"""
from __future__ import annotations

import math
import warnings
from typing import Optional

import torch

from . import Unsupported, cuda_only

CHUNK_ELEMENTS = 1 << 27  # scores per oracle chunk (512 MB of float32)


def attention_fp32(q, k, v, scale: float, causal: bool = True, window_left: int = -1,
                   softcap: float = 0.0) -> torch.Tensor:
    """q [S, H, D], k/v [L, Hkv, D] -> [S, H, D] float32 (one sequence)."""
    s, h, _ = q.shape
    length, hkv = k.shape[0], k.shape[1]
    kf = k.float().repeat_interleave(h // hkv, dim=1).transpose(0, 1)  # [H, L, D]
    vf = v.float().repeat_interleave(h // hkv, dim=1).transpose(0, 1)
    out = torch.empty(s, h, v.shape[-1], device=q.device, dtype=torch.float32)
    rows = max(1, CHUNK_ELEMENTS // max(1, h * length))
    keys = torch.arange(length, device=q.device)
    for r0 in range(0, s, rows):
        r1 = min(s, r0 + rows)
        qf = q[r0:r1].float().transpose(0, 1)  # [H, r, D]
        scores = torch.matmul(qf, kf.transpose(1, 2)) * scale  # [H, r, L]
        if softcap > 0:
            scores = softcap * torch.tanh(scores / softcap)
        pos = torch.arange(r0, r1, device=q.device)[:, None] + (length - s)
        keep = torch.ones(r1 - r0, length, dtype=torch.bool, device=q.device)
        if causal:
            keep &= keys[None, :] <= pos
        if window_left >= 0:
            keep &= keys[None, :] >= pos - window_left
        scores = scores.masked_fill(~keep, float("-inf"))
        p = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # fully masked rows -> 0
        out[r0:r1] = torch.matmul(p, vf).transpose(0, 1)
    return out


def pairs(s: int, length: int, causal: bool, window_left: int) -> int:
    """(query, key) pairs one sequence of s queries over `length` keys attends (bottom-right
    aligned causal mask and left window): for the flop count."""
    import numpy as np

    pos = np.arange(s, dtype=np.int64) + (length - s)
    hi = np.minimum(length - 1, pos) if causal else np.full(s, length - 1)
    lo = np.maximum(0, pos - window_left) if window_left >= 0 else np.zeros(s, dtype=np.int64)
    return int(np.clip(hi - lo + 1, 0, None).sum())


# ---- SDPA -----------------------------------------------------------------------------------

SDPA_BACKENDS = {"sdpa-flash": "FLASH_ATTENTION", "sdpa-cudnn": "CUDNN_ATTENTION",
                 "sdpa-efficient": "EFFICIENT_ATTENTION"}


def sdpa_absent(name: str):
    def available(device: torch.device) -> Optional[str]:
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: F401
        except Exception as exc:
            return f"torch.nn.attention.sdpa_kernel unavailable: {exc}"
        if not hasattr(SDPBackend, SDPA_BACKENDS[name]):
            return f"this torch has no SDPBackend.{SDPA_BACKENDS[name]}"
        if name != "sdpa-flash":
            return cuda_only(device)
        return None
    return available


def build_sdpa(name: str, q4, k4, v4, scale: float, causal: bool, window_left: int,
               softcap: float):
    """A callable running SDPA backend `name` on q4 [B, H, S, D], k4/v4 [B, Hkv, L, D]."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, SDPA_BACKENDS[name])
    if softcap > 0:
        raise Unsupported("SDPA has no softcap")
    s, length = q4.shape[2], k4.shape[2]
    kwargs: dict = {"scale": scale}
    if window_left >= 0:
        if name == "sdpa-flash":
            raise Unsupported("SDPA flash takes no mask (sliding window)")
        pos = torch.arange(s, device=q4.device)[:, None] + (length - s)
        keys = torch.arange(length, device=q4.device)[None, :]
        mask = keys >= pos - window_left
        if causal:
            mask &= keys <= pos
        kwargs["attn_mask"] = mask
    elif causal and length == s:
        kwargs["is_causal"] = True
    elif causal:
        from torch.nn.attention.bias import causal_lower_right

        kwargs["attn_mask"] = causal_lower_right(s, length)
    h, hkv = q4.shape[1], k4.shape[1]

    def call(k, v, **extra):
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q4, k, v, **kwargs, **extra)

    if h == hkv:
        return lambda: call(k4, v4)
    try:
        with warnings.catch_warnings():  # "kernel not used because ..." when it has no GQA
            warnings.simplefilter("ignore")
            call(k4, v4, enable_gqa=True)
        return lambda: call(k4, v4, enable_gqa=True)
    except RuntimeError:
        # this backend has no GQA: the peer pays for expanded K/V (made once, outside timing)
        ke = k4.repeat_interleave(h // hkv, dim=1)
        ve = v4.repeat_interleave(h // hkv, dim=1)
        return lambda: call(ke, ve)


# ---- flex_attention -------------------------------------------------------------------------

_FLEX = None


def flex_absent(device: torch.device) -> Optional[str]:
    if device.type != "cuda":
        return f"compiled flex_attention is benchmarked on CUDA only (device is {device.type})"
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except Exception as exc:
        return f"torch.nn.attention.flex_attention unavailable: {exc}"
    return None


def flex():
    """flex_attention compiled once; recompiles per shape are allowed (suites have many)."""
    global _FLEX
    if _FLEX is None:
        import torch._dynamo
        from torch.nn.attention.flex_attention import flex_attention

        for name, value in (("recompile_limit", 1024), ("cache_size_limit", 1024),
                            ("accumulated_recompile_limit", 4096),
                            ("accumulated_cache_size_limit", 4096)):
            if hasattr(torch._dynamo.config, name):
                try:
                    setattr(torch._dynamo.config, name, value)
                except Exception:
                    pass
        _FLEX = torch.compile(flex_attention, dynamic=False)
    return _FLEX


def softcap_mod(softcap: float):
    if softcap <= 0:
        return None

    def score_mod(score, b, h, q_idx, kv_idx):
        return softcap * torch.tanh(score / softcap)
    return score_mod


def build_flex_dense(q4, k4, v4, scale: float, causal: bool, window_left: int, softcap: float,
                     compiled: bool = True):
    """flex_attention on q4 [B, H, S, D], k4/v4 [B, Hkv, L, D] with a block mask."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    s, length = q4.shape[2], k4.shape[2]
    off = length - s

    def mask_mod(b, h, q_idx, kv_idx):
        pos = q_idx + off
        keep = kv_idx <= pos if causal else kv_idx >= 0
        if window_left >= 0:
            keep = keep & (kv_idx >= pos - window_left)
        return keep

    block_mask = create_block_mask(mask_mod, None, None, s, length, device=q4.device)
    fn = flex() if compiled else flex_attention
    gqa = q4.shape[1] != k4.shape[1]
    score_mod = softcap_mod(softcap)
    return lambda: fn(q4, k4, v4, score_mod=score_mod, block_mask=block_mask, scale=scale,
                      enable_gqa=gqa)


def paged_block_mask(block_table, seq_lens, num_blocks: int, block_size: int, q_len: int,
                     causal: bool, window_left: int, q_block: int = 128):
    """flex BlockMask over the physical pages of a paged cache (flex's paged form).

    The KV tensor flex sees is the whole cache, [1, Hkv, num_blocks * block_size, D]; each
    sequence b's block-mask row lists only its own pages, so flex reads those pages and the
    mask_mod maps a physical index back to its logical position for the causal/window test.
    """
    from torch.nn.attention.flex_attention import BlockMask

    dev = block_table.device
    bsz = block_table.shape[0]
    lens = [int(x) for x in seq_lens.cpu()]
    table = block_table.cpu().long()
    n_qb = -(-q_len // q_block)
    # the index lists span all physical pages (BlockMask densifies them to that width)
    max_pages = num_blocks
    kv_num = torch.zeros(bsz, 1, n_qb, dtype=torch.int32)
    kv_idx = torch.zeros(bsz, 1, n_qb, max_pages, dtype=torch.int32)
    full_num = torch.zeros(bsz, 1, n_qb, dtype=torch.int32)
    full_idx = torch.zeros(bsz, 1, n_qb, max_pages, dtype=torch.int32)
    p2l = torch.full((bsz, num_blocks), -1, dtype=torch.int32)
    for b, n in enumerate(lens):
        pages = -(-n // block_size)
        p2l[b, table[b, :pages]] = torch.arange(pages, dtype=torch.int32)
        for r in range(n_qb):
            q0, q1 = r * q_block, min(q_len, (r + 1) * q_block) - 1
            p0, p1 = q0 + n - q_len, q1 + n - q_len  # positions of the block's first/last query
            hi = min(n - 1, p1) if causal else n - 1
            lo = max(0, p0 - window_left) if window_left >= 0 else 0
            if hi < lo:
                continue
            partial, full = [], []
            for j in range(lo // block_size, hi // block_size + 1):
                k0, k1 = j * block_size, (j + 1) * block_size - 1
                is_full = (k1 < n and (not causal or k1 <= p0)
                           and (window_left < 0 or k0 >= p1 - window_left))
                (full if is_full else partial).append(int(table[b, j]))
            kv_num[b, 0, r] = len(partial)
            kv_idx[b, 0, r, :len(partial)] = torch.tensor(partial, dtype=torch.int32)
            full_num[b, 0, r] = len(full)
            full_idx[b, 0, r, :len(full)] = torch.tensor(full, dtype=torch.int32)
    p2l = p2l.to(dev)
    lens_t = torch.tensor(lens, dtype=torch.int64, device=dev)

    def mask_mod(b, h, q_idx, kv_idx_phys):
        page = kv_idx_phys // block_size
        logical = p2l[b, page] * block_size + kv_idx_phys % block_size
        n = lens_t[b]
        pos = q_idx + n - q_len
        keep = (p2l[b, page] >= 0) & (logical < n)
        if causal:
            keep = keep & (logical <= pos)
        if window_left >= 0:
            keep = keep & (logical >= pos - window_left)
        return keep

    return BlockMask.from_kv_blocks(kv_num.to(dev), kv_idx.to(dev), full_num.to(dev), full_idx.to(dev),
                                    BLOCK_SIZE=(q_block, block_size), mask_mod=mask_mod,
                                    seq_lengths=(q_len, num_blocks * block_size))


def build_flex_paged(q4, key_cache, value_cache, block_table, seq_lens, scale: float, causal: bool,
                     window_left: int, softcap: float, compiled: bool = True):
    """q4 [B, H, Sq, D] against the paged cache [num_blocks, block_size, Hkv, D]."""
    from torch.nn.attention.flex_attention import flex_attention

    nb, bs, hkv, d = key_cache.shape
    if bs % 16:
        raise Unsupported(f"flex needs pages of a multiple of 16 tokens, got {bs}")
    k = key_cache.view(1, nb * bs, hkv, d).transpose(1, 2)  # [1, Hkv, NB*BS, D], a view
    v = value_cache.view(1, nb * bs, hkv, d).transpose(1, 2)
    block_mask = paged_block_mask(block_table, seq_lens, nb, bs, q4.shape[2], causal, window_left)
    fn = flex() if compiled else flex_attention
    score_mod = softcap_mod(softcap)
    gqa = q4.shape[1] != hkv
    return lambda: fn(q4, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale,
                      enable_gqa=gqa)


# ---- paged caches ---------------------------------------------------------------------------

def make_paged(lens, kv_heads: int, head_size: int, block_size: int, device, dtype,
               spare_blocks: int = 8):
    """Random paged K/V caches holding sequences of `lens` tokens, pages scattered at random.

    Returns key_cache, value_cache [num_blocks, block_size, Hkv, D], block_table int32
    [B, max_pages] (unused entries point at random pages) and seq_lens int32 [B].
    """
    pages = [-(-n // block_size) for n in lens]
    num_blocks = sum(pages) + spare_blocks
    max_pages = max(1, max(pages))
    perm = torch.randperm(num_blocks, device=device).to(torch.int32)
    table = torch.randint(0, num_blocks, (len(lens), max_pages), device=device, dtype=torch.int32)
    start = 0
    for b, p in enumerate(pages):
        table[b, :p] = perm[start:start + p]
        start += p
    shape = (num_blocks, block_size, kv_heads, head_size)
    key_cache = torch.randn(shape, device=device, dtype=torch.float32).to(dtype)
    value_cache = torch.randn(shape, device=device, dtype=torch.float32).to(dtype)
    seq_lens = torch.tensor(lens, device=device, dtype=torch.int32)
    return key_cache, value_cache, table, seq_lens


def quantize_caches(x: dict, cache_dtype) -> None:
    """Quantized copies of x's key_cache / value_cache for ours (int8 / fp8 codes with
    per-kv-head scales, amax / code max) as key_codes / value_codes / k_scale / v_scale; the
    bf16 caches become the codes dequantized, so that the oracle and the peers see exactly the
    values ours reads. No cache_dtype: nothing changes."""
    if not cache_dtype:
        return
    dtype = getattr(torch, cache_dtype)
    code_max = 127.0 if dtype == torch.int8 else torch.finfo(dtype).max
    for name, scale in (("key", "k_scale"), ("value", "v_scale")):
        cache = x[f"{name}_cache"]
        x[scale] = cache.float().abs().amax(dim=(0, 1, 3)).clamp_min(1e-6) / code_max
        y = cache.float() / x[scale][:, None]
        codes = (y.round().clamp(-128, 127) if dtype == torch.int8 else y.clamp(-code_max, code_max)).to(dtype)
        x[f"{name}_codes"] = codes
        x[f"{name}_cache"] = (codes.float() * x[scale][:, None]).to(cache.dtype)


def gather_pages(cache, block_table, n_tokens: int, start: int = 0):
    """[B, n_tokens, Hkv, D]: tokens start..start+n_tokens of every sequence, read through the
    block table (equal lengths)."""
    bs = cache.shape[1]
    p0, p1 = start // bs, -(-(start + n_tokens) // bs)
    g = cache[block_table[:, p0:p1].long()]  # [B, pages, bs, Hkv, D]
    g = g.reshape(g.shape[0], -1, *cache.shape[2:])
    off = start - p0 * bs
    return g[:, off:off + n_tokens]


def softmax_scale(shape: dict) -> float:
    return float(shape.get("scale", 1.0 / math.sqrt(shape["head_size"])))


def flash_attn_module(func: str):
    """vLLM's or Dao's flash-attn module when installed and it has `func`, else None."""
    for name in ("vllm.vllm_flash_attn", "flash_attn"):
        try:
            mod = __import__(name, fromlist=[func])
            if hasattr(mod, func):
                return mod
        except Exception:
            continue
    return None


def flash_attn_absent(func: str):
    """An `absent(device)` check for a flash-attn provider that calls `func`."""
    def absent(device) -> Optional[str]:
        if cuda_only(device):
            return cuda_only(device)
        return None if flash_attn_module(func) else "neither vllm.vllm_flash_attn nor flash_attn is installed"
    return absent
