"""topk_topp_sampling: temperature, top-k then top-p filtering, one sample per row.

Shape keys: batch, vocab, top_k (0/None = off), top_p (1.0/None = off), temperature,
logits_dtype (default float32, as vLLM keeps logits), logit_scale (spread of the random logits).

Correctness: a sampler's output is random, so the check is that every sampled id lies in the
set the oracle allows (computed in float32 with a small slack at the top-p boundary for
rounding); our op is also asked for its filtered probabilities (return_probs=True), which
must match the oracle's.
"""
from __future__ import annotations

import torch

from . import Provider, Unsupported, cuda_only, module_absent, ours

OP = "topk_topp_sampling"
UNIT = "GB/s"
P_SLACK = 1e-3


def _params(s: dict):
    k = int(s.get("top_k") or 0)
    p = float(s.get("top_p") or 1.0)
    t = float(s.get("temperature", 1.0))  # 0 is greedy, not "unset"
    return k, p, t


def label(s: dict) -> str:
    k, p, t = _params(s)
    return f"{s.get('model', '?')} B={s['batch']} V={s['vocab']} k={k or '-'} p={p:g} T={t:g}"


def tune_shape(s: dict) -> dict:
    """The case in topk_topp_sampling's make_problem / ascend_cases vocabulary."""
    k, p, t = _params(s)
    return {"model": s.get("model"), "batch": s["batch"], "vocab": s["vocab"], "top_k": k, "top_p": p,
            "temperature": t, "scale": float(s.get("logit_scale", 3.0)),
            "dtype": s.get("logits_dtype", "float32")}


def _logits_dtype(s: dict, dtype):
    name = s.get("logits_dtype", "float32")
    return getattr(torch, name) if name else dtype


def make_inputs(s: dict, device, dtype) -> dict:
    k, p, t = _params(s)
    ldt = _logits_dtype(s, dtype)
    b, v = int(s["batch"]), int(s["vocab"])
    logits = (torch.randn(b, v, device=device) * float(s.get("logit_scale", 3.0))).to(ldt)
    return {"logits": logits, "top_k": k, "top_p": p, "temperature": t}


def filtered_probs(logits: torch.Tensor, k: int, p: float, t: float, slack: float = 0.0):
    """float32 probabilities after temperature, top-k, top-p (vLLM's order); with slack > 0, a
    mask that also admits tokens at the top-p boundary within `slack` of probability mass."""
    x = logits.float() / t
    if k and k < x.shape[-1]:
        kth = torch.topk(x, k, dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    probs = torch.softmax(x, dim=-1)
    if p < 1.0:
        sp, idx = probs.sort(dim=-1, descending=True)
        before = sp.cumsum(-1) - sp  # mass strictly before each token
        keep_sorted = before < p + slack
        keep_sorted[:, 0] = True
        keep = torch.zeros_like(keep_sorted).scatter(-1, idx, keep_sorted)
        probs = probs.masked_fill(~keep, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def oracle(x: dict):
    allowed = filtered_probs(x["logits"], x["top_k"], x["top_p"], x["temperature"], P_SLACK) > 0
    probs = filtered_probs(x["logits"], x["top_k"], x["top_p"], x["temperature"])
    return {"allowed": allowed, "probs": probs}


def check(out, expected, x) -> tuple[bool, str]:
    probs = None
    if isinstance(out, (tuple, list)):
        out, probs = out[0], (out[1] if len(out) > 1 else None)
    allowed = expected["allowed"]
    if not isinstance(out, torch.Tensor) or out.dim() != 1 or out.shape[0] != allowed.shape[0]:
        return False, f"expected int ids [batch], got {getattr(out, 'shape', type(out).__name__)}"
    ids = out.long()
    if ((ids < 0) | (ids >= allowed.shape[1])).any():
        return False, "an id outside the vocabulary"
    outside = int((~allowed.gather(1, ids[:, None].to(allowed.device))).sum())
    if outside:
        return False, f"{outside} of {ids.numel()} samples outside the allowed top-k/top-p set"
    if probs is not None:
        ref = expected["probs"]
        err = float((probs.float() - ref).abs().max())
        # a token right at the top-p boundary may flip: allow its mass, nothing more
        if err > 2e-3 and err > float(ref.max()) * 0.02:
            return False, f"filtered probs differ by {err:.1e}"
        return True, f"ids in the allowed set; probs max err {err:.1e}"
    return True, "ids in the allowed set"


def cost(s: dict, dtype) -> tuple[float, float]:
    es = torch.empty((), dtype=_logits_dtype(s, dtype)).element_size()
    return 0.0, float(s["batch"] * s["vocab"] * es + 8 * s["batch"])


def _kwargs(x):
    kw = {}
    if x["top_k"]:
        kw["top_k"] = x["top_k"]
    if x["top_p"] < 1.0:
        kw["top_p"] = x["top_p"]
    if x["temperature"] != 1.0:
        kw["temperature"] = x["temperature"]
    return kw


def _build_ours(x, s):
    import ascend_kernels

    logits, kw = x["logits"], _kwargs(x)
    first = [True]

    def fn():
        if first[0]:  # the checked call also returns the filtered probabilities
            first[0] = False
            ascend_kernels.topk_topp_sampling(logits, **kw)  # compiles the timed variant too
            return ascend_kernels.topk_topp_sampling(logits, return_probs=True, **kw)
        return ascend_kernels.topk_topp_sampling(logits, **kw)
    return fn


def _build_sort(x, s):
    """vLLM's apply_top_k_top_p (sort the row, mask, scatter back), then the exponential race."""
    logits, k, p, t = x["logits"], x["top_k"], x["top_p"], x["temperature"]
    b, v = logits.shape
    k_index = torch.full((b, 1), v - k, dtype=torch.long, device=logits.device) if k else None

    def fn():
        lg = logits.float() / t
        srt, idx = lg.sort(dim=-1, descending=False)
        if k_index is not None:
            thr = srt.gather(1, k_index)
            srt.masked_fill_(srt < thr, float("-inf"))
        if p < 1.0:
            ps = srt.softmax(dim=-1)
            cum = ps.cumsum(dim=-1)
            mask = cum <= 1 - p
            mask[:, -1] = False
            srt.masked_fill_(mask, float("-inf"))
        lg = srt.scatter(-1, idx, srt)
        probs = lg.softmax(dim=-1)
        q = torch.empty_like(probs).exponential_()
        return probs.div_(q).argmax(dim=-1)
    return fn


def _build_topk(x, s):
    """torch.topk(k), top-p on the k survivors, multinomial, map back."""
    logits, k, p, t = x["logits"], x["top_k"], x["top_p"], x["temperature"]
    if not k:
        raise Unsupported("no top_k: torch.topk over the whole vocabulary is a sort")

    def fn():
        vals, idx = torch.topk(logits.float(), k, dim=-1)  # sorted, descending
        vals = vals / t
        if p < 1.0:
            ps = vals.softmax(dim=-1)
            before = ps.cumsum(dim=-1) - ps
            vals = vals.masked_fill(before > p, float("-inf"))
        choice = torch.multinomial(vals.softmax(dim=-1), 1)
        return idx.gather(1, choice)[:, 0]
    return fn


def _flashinfer_absent(device):
    return cuda_only(device) or module_absent("flashinfer.sampling")


def _build_flashinfer(x, s):
    import flashinfer.sampling as fs

    logits, k, p, t = x["logits"], x["top_k"], x["top_p"], x["temperature"]
    return lambda: fs.top_k_top_p_sampling_from_logits(logits.float() / t, k or logits.shape[1], p)


def providers() -> list:
    return ours(OP, _build_ours) + [
        Provider("torch-sort", "peer", _build_sort, None,
                 note="vLLM's apply_top_k_top_p (sort) + exponential race"),
        Provider("torch-topk", "peer", _build_topk, None, note="torch.topk + top-p + multinomial"),
        Provider("flashinfer", "peer", _build_flashinfer, _flashinfer_absent,
                 note="flashinfer.sampling.top_k_top_p_sampling_from_logits"),
    ]
