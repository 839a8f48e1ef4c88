"""paged_attention (decode): one query token per sequence against a paged KV cache.

Shape keys: q_heads, kv_heads, head_size, batch, context (tokens per sequence), block_size,
and optionally sliding_window, softcap (from the model), cache_dtype (int8 / float8_e4m3fn:
ours reads a quantized cache with per-kv-head scales; the peers read it dequantized).
"""
from __future__ import annotations

import torch

from . import Provider, Unsupported, compare, cuda_only, module_absent, ours, randn, tol_of
from . import _attn

OP = "paged_attention"
UNIT = "GB/s"


def _window(s: dict) -> int:
    w = s.get("sliding_window")
    return int(w) - 1 if w else -1


def label(s: dict) -> str:
    extra = ""
    if s.get("sliding_window"):
        extra += f" win={s['sliding_window']}"
    if s.get("softcap"):
        extra += f" cap={s['softcap']:g}"
    if s.get("cache_dtype"):
        extra += f" cache={s['cache_dtype']}"
    return (f"{s.get('model', '?')} B={s['batch']} ctx={s['context']} H={s['q_heads']}/{s['kv_heads']} "
            f"D={s['head_size']} bs={s['block_size']}{extra}")


def tune_shape(s: dict) -> dict:
    """The case in paged_attention's make_problem / ascend_cases vocabulary."""
    return {"model": s.get("model"), "seqs": s["batch"], "heads": s["q_heads"], "kv_heads": s["kv_heads"],
            "head_size": s["head_size"], "block_size": s["block_size"], "context": s["context"],
            "cache_dtype": s.get("cache_dtype"), "window": s.get("sliding_window"),
            "softcap": float(s.get("softcap") or 0.0)}


def make_inputs(s: dict, device, dtype) -> dict:
    lens = [int(s["context"])] * int(s["batch"])
    kc, vc, table, seq_lens = _attn.make_paged(lens, s["kv_heads"], s["head_size"], s["block_size"],
                                               device, dtype)
    query = randn((len(lens), s["q_heads"], s["head_size"]), device, dtype)
    x = {"query": query, "key_cache": kc, "value_cache": vc, "block_table": table,
         "seq_lens": seq_lens, "scale": _attn.softmax_scale(s), "window_left": _window(s),
         "softcap": float(s.get("softcap") or 0.0), "sliding_window": s.get("sliding_window")}
    _attn.quantize_caches(x, s.get("cache_dtype"))
    return x


def oracle(x: dict) -> torch.Tensor:
    q = x["query"]
    out = torch.empty(q.shape, dtype=torch.float32, device=q.device)
    for b, n in enumerate(x["seq_lens"].tolist()):
        k = _attn.gather_pages(x["key_cache"], x["block_table"][b:b + 1], n)[0]
        v = _attn.gather_pages(x["value_cache"], x["block_table"][b:b + 1], n)[0]
        out[b] = _attn.attention_fp32(q[b:b + 1], k, v, x["scale"], True, x["window_left"],
                                      x["softcap"])[0]
    return out


def check(out, expected, x) -> tuple[bool, str]:
    if isinstance(out, torch.Tensor) and out.dim() == 4:  # [B, H, 1, D] from an SDPA/flex peer
        out = out[:, :, 0]
    return compare(out, expected, tol_of(x["query"].dtype))


def cost(s: dict, dtype) -> tuple[float, float]:
    es = torch.empty((), dtype=getattr(torch, s.get("cache_dtype") or "", dtype)).element_size()
    w = s.get("sliding_window")
    keys = min(s["context"], w) if w else s["context"]
    b, h, hkv, d = s["batch"], s["q_heads"], s["kv_heads"], s["head_size"]
    flops = 4.0 * b * h * d * keys
    nbytes = 2.0 * b * keys * hkv * d * es + 2.0 * b * h * d * es + 4.0 * b * (1 + -(-keys // s["block_size"]))
    return flops, nbytes


def _build_ours(x, s):
    import ascend_kernels

    q, table, lens = x["query"], x["block_table"], x["seq_lens"]
    kwargs = {"scale": x["scale"], "sliding_window": x["sliding_window"], "softcap": x["softcap"]}
    kc, vc = x["key_cache"], x["value_cache"]
    if "key_codes" in x:  # a quantized cache (the peers read it dequantized)
        kc, vc = x["key_codes"], x["value_codes"]
        kwargs.update(k_scale=x["k_scale"], v_scale=x["v_scale"])
    return lambda: ascend_kernels.paged_attention(q, kc, vc, table, lens, **kwargs)


def _keys_window(x):
    n = int(x["seq_lens"][0])
    w = x["window_left"] + 1 if x["window_left"] >= 0 else n
    w = min(w, n)
    return n - w, w


def _build_gather_sdpa(x, s):
    import torch.nn.functional as F

    if x["softcap"] > 0:
        raise Unsupported("SDPA has no softcap")
    q4 = x["query"].unsqueeze(2)  # [B, H, 1, D]
    start, n = _keys_window(x)
    kc, vc, table, scale = x["key_cache"], x["value_cache"], x["block_table"], x["scale"]
    gqa = q4.shape[1] != kc.shape[2]

    def fn():
        k = _attn.gather_pages(kc, table, n, start).transpose(1, 2)
        v = _attn.gather_pages(vc, table, n, start).transpose(1, 2)
        return F.scaled_dot_product_attention(q4, k, v, scale=scale, enable_gqa=gqa)
    return fn


def _build_flex_paged(x, s):
    q4 = x["query"].unsqueeze(2)
    return _attn.build_flex_paged(q4, x["key_cache"], x["value_cache"], x["block_table"], x["seq_lens"],
                                  x["scale"], True, x["window_left"], x["softcap"])


def _build_fa(x, s):
    fa = _attn.flash_attn_module("flash_attn_with_kvcache")
    q = x["query"].unsqueeze(1)  # [B, 1, H, D]
    kw = {"cache_seqlens": x["seq_lens"], "block_table": x["block_table"], "softmax_scale": x["scale"],
          "causal": True}
    if x["window_left"] >= 0:
        kw["window_size"] = (x["window_left"], 0)
    if x["softcap"] > 0:
        kw["softcap"] = x["softcap"]
    kc, vc = x["key_cache"], x["value_cache"]
    return lambda: fa.flash_attn_with_kvcache(q, kc, vc, **kw)[:, 0]


def _flashinfer_absent(device):
    return cuda_only(device) or module_absent("flashinfer")


def _build_flashinfer(x, s):
    import flashinfer

    kc, table, lens = x["key_cache"], x["block_table"], x["seq_lens"]
    bs = kc.shape[1]
    pages = [-(-int(n) // bs) for n in lens.tolist()]
    indptr = torch.tensor([0] + list(torch.tensor(pages).cumsum(0).tolist()), dtype=torch.int32,
                          device=kc.device)
    indices = torch.cat([table[b, :p] for b, p in enumerate(pages)]).to(torch.int32)
    last = torch.tensor([(int(n) - 1) % bs + 1 for n in lens.tolist()], dtype=torch.int32, device=kc.device)
    ws = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device=kc.device)
    wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(ws, "NHD")
    wrapper.plan(indptr, indices, last, x["query"].shape[1], kc.shape[2], kc.shape[3], bs,
                 window_left=x["window_left"], logits_soft_cap=x["softcap"] or None,
                 q_data_type=x["query"].dtype, kv_data_type=kc.dtype, sm_scale=x["scale"])
    q, vc = x["query"], x["value_cache"]
    return lambda: wrapper.run(q, (kc, vc))


def providers() -> list:
    return ours(OP, _build_ours) + [
        Provider("gather+sdpa", "peer", _build_gather_sdpa, None,
                 note="gather the pages through the block table, then SDPA"),
        Provider("flex-paged", "peer", _build_flex_paged, _attn.flex_absent,
                 note="compiled flex_attention over the physical pages (block mask from the block table)"),
        Provider("flash-attn", "peer", _build_fa, _attn.flash_attn_absent("flash_attn_with_kvcache"),
                 note="flash_attn_with_kvcache (vLLM/Dao)"),
        Provider("flashinfer", "peer", _build_flashinfer, _flashinfer_absent,
                 note="FlashInfer BatchDecodeWithPagedKVCacheWrapper"),
    ]
