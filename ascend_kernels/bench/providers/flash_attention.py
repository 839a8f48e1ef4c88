"""flash_attention (prefill): varlen batches, or queries against a paged KV cache.

Shape keys: q_heads, kv_heads, head_size, batch, seq_len (queries per sequence), kv_len
(keys per sequence, default seq_len: > seq_len is a chunked prefill over a cached prefix),
paged (bool), block_size (paged), cache_dtype (paged: int8 / float8_e4m3fn, read by ours with
per-kv-head scales, by the peers dequantized), causal (default true), and sliding_window / softcap from
the model. Sequences in a case have equal lengths, so the SDPA peers can run them as
[B, H, S, D].
"""
from __future__ import annotations

import torch

from . import Provider, Unsupported, compare, ours, randn, tol_of
from . import _attn

OP = "flash_attention"
UNIT = "TFLOP/s"


def _dims(s: dict):
    sq = int(s["seq_len"])
    return int(s["batch"]), sq, int(s.get("kv_len") or sq)


def _window(s: dict) -> int:
    w = s.get("sliding_window")
    return int(w) - 1 if w else -1


def label(s: dict) -> str:
    b, sq, sk = _dims(s)
    extra = f" kv={sk}" if sk != sq else ""
    if s.get("paged"):
        extra += f" paged bs={s['block_size']}"
        if s.get("cache_dtype"):
            extra += f" cache={s['cache_dtype']}"
    if s.get("sliding_window"):
        extra += f" win={s['sliding_window']}"
    if s.get("softcap"):
        extra += f" cap={s['softcap']:g}"
    if not s.get("causal", True):
        extra += " non-causal"
    return f"{s.get('model', '?')} B={b} S={sq}{extra} H={s['q_heads']}/{s['kv_heads']} D={s['head_size']}"


def tune_shape(s: dict) -> dict:
    """The case in flash_attention's make_problem / ascend_cases vocabulary."""
    b, sq, sk = _dims(s)
    t = {"model": s.get("model"), "batch": b, "seqlen": sq, "heads": s["q_heads"],
         "kv_heads": s["kv_heads"], "head_size": s["head_size"], "context": sk - sq,
         "causal": bool(s.get("causal", True)), "softcap": float(s.get("softcap") or 0.0)}
    if s.get("paged"):
        t["block_size"] = s["block_size"]
        t["cache_dtype"] = s.get("cache_dtype")
    if s.get("sliding_window"):
        t["window"] = s["sliding_window"]
    return t


def _causal(s: dict) -> bool:
    """vLLM's sliding_window=W means (W - 1, 0): a windowed case is causal for every provider."""
    return bool(s.get("causal", True)) or bool(s.get("sliding_window"))


def make_inputs(s: dict, device, dtype) -> dict:
    b, sq, sk = _dims(s)
    h, hkv, d = s["q_heads"], s["kv_heads"], s["head_size"]
    x = {"batch": b, "sq": sq, "sk": sk, "scale": _attn.softmax_scale(s), "causal": _causal(s),
         "window_left": _window(s),
         "sliding_window": s.get("sliding_window"), "softcap": float(s.get("softcap") or 0.0),
         "paged": bool(s.get("paged"))}
    x["q"] = randn((b * sq, h, d), device, dtype)
    x["cu_q"] = torch.arange(0, b + 1, device=device, dtype=torch.int32) * sq
    if x["paged"]:
        kc, vc, table, lens = _attn.make_paged([sk] * b, hkv, d, s["block_size"], device, dtype)
        x.update(key_cache=kc, value_cache=vc, block_table=table, seq_lens=lens)
        _attn.quantize_caches(x, s.get("cache_dtype"))
    else:
        x["k"] = randn((b * sk, hkv, d), device, dtype)
        x["v"] = randn((b * sk, hkv, d), device, dtype)
        x["cu_k"] = torch.arange(0, b + 1, device=device, dtype=torch.int32) * sk
    return x


def _seq_kv(x, b):
    if x["paged"]:
        table = x["block_table"][b:b + 1]
        return (_attn.gather_pages(x["key_cache"], table, x["sk"])[0],
                _attn.gather_pages(x["value_cache"], table, x["sk"])[0])
    sk = x["sk"]
    return x["k"][b * sk:(b + 1) * sk], x["v"][b * sk:(b + 1) * sk]


def oracle(x: dict) -> torch.Tensor:
    q, sq = x["q"], x["sq"]
    out = torch.empty(q.shape, dtype=torch.float32, device=q.device)
    for b in range(x["batch"]):
        k, v = _seq_kv(x, b)
        out[b * sq:(b + 1) * sq] = _attn.attention_fp32(q[b * sq:(b + 1) * sq], k, v, x["scale"],
                                                        x["causal"], x["window_left"], x["softcap"])
    return out


def check(out, expected, x) -> tuple[bool, str]:
    if isinstance(out, tuple):
        out = out[0]
    if isinstance(out, torch.Tensor) and out.dim() == 4:  # [B, H, S, D] from an SDPA/flex peer
        out = out.transpose(1, 2).reshape(expected.shape)
    return compare(out, expected, tol_of(x["q"].dtype))


def cost(s: dict, dtype) -> tuple[float, float]:
    es = torch.empty((), dtype=dtype).element_size()
    b, sq, sk = _dims(s)
    h, hkv, d = s["q_heads"], s["kv_heads"], s["head_size"]
    n_pairs = _attn.pairs(sq, sk, _causal(s), _window(s))
    flops = 4.0 * b * h * d * n_pairs
    keys_read = min(sk, sq + _window(s)) if _window(s) >= 0 else sk
    nbytes = es * (2.0 * b * sq * h * d + 2.0 * b * keys_read * hkv * d)
    return flops, nbytes


def _build_ours(x, s):
    import ascend_kernels

    kw = {"cu_seqlens_q": x["cu_q"], "max_seqlen_q": x["sq"], "softmax_scale": x["scale"],
          "causal": x["causal"], "sliding_window": x["sliding_window"], "softcap": x["softcap"]}
    q = x["q"]
    if x["paged"]:
        kw.update(seqused_k=x["seq_lens"], max_seqlen_k=x["sk"], block_table=x["block_table"])
        kc, vc = x["key_cache"], x["value_cache"]
        if "key_codes" in x:  # a quantized cache (the peers read it dequantized)
            kc, vc = x["key_codes"], x["value_codes"]
            kw.update(k_scale=x["k_scale"], v_scale=x["v_scale"])
        return lambda: ascend_kernels.flash_attention(q, kc, vc, **kw)
    kw.update(cu_seqlens_k=x["cu_k"], max_seqlen_k=x["sk"])
    k, v = x["k"], x["v"]
    return lambda: ascend_kernels.flash_attention(q, k, v, **kw)


def _q4(x):
    b, sq = x["batch"], x["sq"]
    return x["q"].view(b, sq, *x["q"].shape[1:]).transpose(1, 2).contiguous()  # [B, H, S, D]


def _kv4(x):
    b, sk = x["batch"], x["sk"]
    k = x["k"].view(b, sk, *x["k"].shape[1:]).transpose(1, 2).contiguous()
    v = x["v"].view(b, sk, *x["v"].shape[1:]).transpose(1, 2).contiguous()
    return k, v


def _sdpa(name):
    def build(x, s):
        if x["paged"]:
            raise Unsupported("SDPA reads no paged cache (see gather+sdpa)")
        k4, v4 = _kv4(x)
        return _attn.build_sdpa(name, _q4(x), k4, v4, x["scale"], x["causal"], x["window_left"],
                                x["softcap"])
    return build


def _build_flex(x, s):
    q4 = _q4(x)
    if x["paged"]:
        return _attn.build_flex_paged(q4, x["key_cache"], x["value_cache"], x["block_table"],
                                      x["seq_lens"], x["scale"], x["causal"], x["window_left"],
                                      x["softcap"])
    k4, v4 = _kv4(x)
    return _attn.build_flex_dense(q4, k4, v4, x["scale"], x["causal"], x["window_left"], x["softcap"])


def _build_gather_sdpa(x, s):
    if not x["paged"]:
        raise Unsupported("not a paged case")
    if x["softcap"] > 0:
        raise Unsupported("SDPA has no softcap")
    import torch.nn.functional as F
    from torch.nn.attention.bias import causal_lower_right

    q4, kc, vc, table, sk, sq = _q4(x), x["key_cache"], x["value_cache"], x["block_table"], x["sk"], x["sq"]
    mask = None
    if x["window_left"] >= 0:
        pos = torch.arange(sq, device=q4.device)[:, None] + (sk - sq)
        keys = torch.arange(sk, device=q4.device)[None, :]
        mask = keys >= pos - x["window_left"]
        if x["causal"]:
            mask &= keys <= pos
    elif x["causal"] and sk != sq:
        mask = causal_lower_right(sq, sk)
    gqa = q4.shape[1] != kc.shape[2]
    is_causal = x["causal"] and sk == sq and x["window_left"] < 0

    def fn():
        k = _attn.gather_pages(kc, table, sk).transpose(1, 2)
        v = _attn.gather_pages(vc, table, sk).transpose(1, 2)
        return F.scaled_dot_product_attention(q4, k, v, attn_mask=mask, is_causal=is_causal,
                                              scale=x["scale"], enable_gqa=gqa)
    return fn


def _build_fa(x, s):
    fa = _attn.flash_attn_module("flash_attn_varlen_func")
    kw = {"softmax_scale": x["scale"], "causal": x["causal"]}
    if x["window_left"] >= 0:
        kw["window_size"] = (x["window_left"], 0)
    if x["softcap"] > 0:
        kw["softcap"] = x["softcap"]
    q = x["q"]
    if x["paged"]:
        if not hasattr(fa, "flash_attn_with_kvcache"):
            raise Unsupported("no flash_attn_with_kvcache")
        q4 = q.view(x["batch"], x["sq"], *q.shape[1:])
        kc, vc = x["key_cache"], x["value_cache"]
        return lambda: fa.flash_attn_with_kvcache(q4, kc, vc, cache_seqlens=x["seq_lens"],
                                                  block_table=x["block_table"], **kw).reshape(q.shape)
    k, v = x["k"], x["v"]
    return lambda: fa.flash_attn_varlen_func(q, k, v, x["cu_q"], x["cu_k"], x["sq"], x["sk"], **kw)


def providers() -> list:
    sdpa = [Provider(name, "peer", _sdpa(name), _attn.sdpa_absent(name),
                     note=f"torch SDPA, {_attn.SDPA_BACKENDS[name]} backend, [B, H, S, D]")
            for name in _attn.SDPA_BACKENDS]
    return ours(OP, _build_ours) + sdpa + [
        Provider("flex", "peer", _build_flex, _attn.flex_absent,
                 note="compiled flex_attention with block masks (paged form for paged cases)"),
        Provider("gather+sdpa", "peer", _build_gather_sdpa, None,
                 note="paged cases: gather the pages, then SDPA"),
        Provider("flash-attn", "peer", _build_fa, _attn.flash_attn_absent("flash_attn_varlen_func"),
                 note="flash_attn_varlen_func (vLLM/Dao)"),
    ]
