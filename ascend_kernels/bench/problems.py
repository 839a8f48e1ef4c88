"""Problems with fresh random inputs for a shape of the bench suites, for the tuner, the Ascend
compile check and `ascend-kernels explain`: `make(op, shape, device, dtype)` builds the op's
public arguments and validates them into the op's problem (the same path a call takes).

The shape keys are those of `bench/providers/<op>.tune_shape` (the suite's shapes translated).
"""
from __future__ import annotations

import torch

from ..launcher import op as _op


def _prepare(op: str, *args, **kwargs):
    return _op.get(op).prepare(*args, **kwargs)


def reshape_and_cache(shape: dict, device, dtype):
    """tokens, kv_heads, head_size, block_size, optional num_slots and cache_dtype (int8/fp8:
    per-tensor scales of 0.05)."""
    t, h, d, bs = shape["tokens"], shape["kv_heads"], shape["head_size"], shape["block_size"]
    num_blocks = -(-shape.get("num_slots", 4 * t) // bs)
    cache_dtype = getattr(torch, shape.get("cache_dtype") or "", None) or dtype
    key, value = (torch.randn(t, h, d, device=device, dtype=dtype) for _ in range(2))
    kc, vc = (torch.randn(num_blocks, bs, h, d, device=device, dtype=dtype).to(cache_dtype) for _ in range(2))
    slots = torch.randperm(num_blocks * bs, device=device)[:t].to(torch.int64)
    quantized = not cache_dtype.is_floating_point or cache_dtype.itemsize == 1
    scale = torch.full((1,), 0.05, device=device) if quantized else None
    return _prepare("reshape_and_cache", key, value, kc, vc, slots, k_scale=scale, v_scale=scale)


def paged_attention(shape: dict, device, dtype):
    """seqs, heads, kv_heads, head_size, block_size, context (tokens per sequence; every
    sequence this long), optional num_blocks (default: just enough, shuffled), split_size,
    window (sliding window W), softcap, cache_dtype (int8/fp8: random codes, per-tensor scales
    of 0.05)."""
    s, h, kvh, hd = shape["seqs"], shape["heads"], shape["kv_heads"], shape["head_size"]
    bs, ctx = shape["block_size"], shape["context"]
    max_blocks = -(-ctx // bs)
    num_blocks = shape.get("num_blocks", s * max_blocks)
    q = torch.randn(s, h, hd, device=device, dtype=dtype)
    cache_dtype = getattr(torch, shape.get("cache_dtype") or "", None) or dtype
    kc, vc = (torch.randn(num_blocks, bs, kvh, hd, device=device, dtype=dtype).to(cache_dtype) for _ in range(2))
    bt = (torch.randperm(num_blocks, device=device)[: s * max_blocks] % num_blocks).to(torch.int32)
    lens = torch.full((s,), ctx, dtype=torch.int32, device=device)
    scale = torch.full((1,), 0.05, device=device) if cache_dtype.itemsize == 1 else None
    return _prepare("paged_attention", q, kc, vc, bt.reshape(s, max_blocks), lens,
                    sliding_window=shape.get("window") or None, softcap=float(shape.get("softcap") or 0.0),
                    split_size=int(shape.get("split_size", 0)) or None, k_scale=scale, v_scale=scale)


def flash_attention(shape: dict, device, dtype):
    """batch sequences of `seqlen` queries against `seqlen + context` keys each (the queries
    are the last ones), heads, kv_heads, head_size; varlen, or paged with `block_size` (shuffled
    pages; optional cache_dtype int8/fp8: random codes, per-tensor scales of 0.05); optional
    causal (True), window, softcap, lse."""
    b, sq, h, d = shape["batch"], int(shape["seqlen"]), shape["heads"], shape["head_size"]
    sk, kvh, bs = sq + int(shape.get("context", 0)), shape.get("kv_heads", h), shape.get("block_size", 0)
    q = torch.randn(b * sq, h, d, device=device, dtype=dtype)
    cu_q = torch.arange(0, b + 1, device=device, dtype=torch.int32) * sq
    kw = dict(causal=bool(shape.get("causal", True)), sliding_window=shape.get("window") or None,
              softcap=float(shape.get("softcap") or 0.0), return_lse=bool(shape.get("lse", False)))
    if bs:
        nb = -(-sk // bs)
        cache_dtype = getattr(torch, shape.get("cache_dtype") or "", None) or dtype
        k, v = (torch.randn(b * nb, bs, kvh, d, device=device, dtype=dtype).to(cache_dtype) for _ in range(2))
        kw.update(block_table=torch.randperm(b * nb, device=device).to(torch.int32).reshape(b, nb),
                  seqused_k=torch.full((b,), sk, device=device, dtype=torch.int32))
        if cache_dtype.itemsize == 1:
            kw.update(k_scale=torch.full((1,), 0.05, device=device), v_scale=torch.full((1,), 0.05, device=device))
    else:
        k, v = (torch.randn(b * sk, kvh, d, device=device, dtype=dtype) for _ in range(2))
        kw.update(cu_seqlens_k=torch.arange(0, b + 1, device=device, dtype=torch.int32) * sk)
    return _prepare("flash_attention", q, k, v, cu_seqlens_q=cu_q, max_seqlen_q=sq, **kw)


def topk_topp_sampling(shape: dict, device, dtype):
    """batch, vocab, optional top_k (50), top_p (0.9), temperature (1.0), scale (logit std,
    3.0), return_probs, per_row (the parameters as [batch] tensors)."""
    b, v = shape["batch"], shape["vocab"]
    logits = (torch.randn(b, v, device=device) * shape.get("scale", 3.0)).to(dtype)
    seeds = torch.randint(0, 2 ** 62, (b,), device=device, dtype=torch.int64)
    k, top_p, t = int(shape.get("top_k", 50)), float(shape.get("top_p", 0.9)), float(shape.get("temperature", 1.0))
    if shape.get("per_row"):
        k = torch.full((b,), k, dtype=torch.int32, device=device)
        top_p, t = (torch.full((b,), x, dtype=torch.float32, device=device) for x in (top_p, t))
    return _prepare("topk_topp_sampling", logits, top_k=k, top_p=top_p, temperature=t, seeds=seeds,
                    return_probs=bool(shape.get("return_probs", False)))


def make(op: str, shape: dict, device, dtype):
    """The op's problem for one shape, with fresh random inputs."""
    _op.get(op)  # a clear error for an unknown op
    return globals()[op](shape, torch.device(device), dtype)
