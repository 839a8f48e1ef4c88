"""topk_topp_sampling through torch_npu: npu_top_k_top_p, then an exponential-race draw.

`route(...)` names the path: "npu_top_k_top_p" or "reference" (plain PyTorch), with the reason.

torch_npu.npu_top_k_top_p(logits, p, k) (Ascend/op-plugin docs/zh/custom_APIs/torch_npu/
torch_npu-npu_top_k_top_p.md; the op vllm-ascend's sampler uses) returns the logits with the
filtered-out entries set to -inf. Translation:
- logits: the sanitised fp32 logits times 1 / temperature (greedy rows keep theirs and take the
  argmax); fp32 so that p loses no precision (p must have the logits' dtype).
- k: int32 [batch]; a row whose top_k is off (<= 0 or >= vocab) gets k = vocab, which keeps every
  token. The operator takes k in [1, 1024] and <= vocab, so off rows over a vocabulary larger than
  1024, or k > 1024, send the call to the reference (for a tensor top_k that check is one host sync).
- p: fp32 [batch]; a row whose top_p is off (outside (0, 1), or NaN) gets p = 1.

Ties: npu_top_k_top_p keeps every value equal to the k-th largest (like the reference); inside
top-p it breaks ties by its stable sort order, whereas the reference keeps or drops a tie group
whole. The draw uses the reference's counter-based noise keyed by `seeds` (per row), so rows are
independent of the batch; it is not the Philox stream of the Triton kernel.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..reference import topk_topp_sampling as ref
from . import _npu

TOPK_TOPP = "npu_top_k_top_p"
MAX_K = 1024


def npu_top_k_top_p_reason(logits, k) -> Optional[str]:
    """None when torch_npu.npu_top_k_top_p takes `logits` (2-D) with top-k values `k` (an int or
    an int tensor of the values that would be passed), else the limit (one line)."""
    rel, family = _npu.release(), _npu.soc_family()
    if rel < (7, 1, 0):
        return f"torch_npu release {_npu.release_name(rel)}: npu_top_k_top_p ships from 7.1.0 (op_plugin_functions.yaml)"
    if family not in ("A2", "A3"):
        return f"SoC {family}: npu_top_k_top_p runs on A2/A3 (its product table)"
    if logits.dim() != 2 or logits.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"logits {tuple(logits.shape)} {logits.dtype}: npu_top_k_top_p takes 2-D fp32/fp16/bf16"
    vocab = logits.shape[1]
    lo, hi = (int(k.min()), int(k.max())) if isinstance(k, torch.Tensor) and k.numel() else (int(k), int(k))
    if lo < 1 or hi > min(MAX_K, vocab):
        return f"top_k {lo}..{hi}: npu_top_k_top_p takes k in [1, {MAX_K}] and <= vocab ({vocab})"
    return None


def _rows(value, batch, dtype, device, default):
    if value is None:
        value = default
    if isinstance(value, torch.Tensor):
        return value.reshape(-1).to(device=device, dtype=dtype)
    return torch.full((batch,), value, dtype=dtype, device=device)


def _k_rows(logits, top_k):
    """The k each row would pass (off rows: vocab), or None when there is no top_k at all."""
    if top_k is None:
        return None
    vocab = logits.shape[1]
    k = _rows(top_k, logits.shape[0], torch.int64, logits.device, 0)
    return torch.where((k > 0) & (k < vocab), k, torch.full_like(k, vocab)).to(torch.int32)


def route(logits, top_k=None, top_p=None, temperature=None, seeds=None, generator=None,
          return_probs=False) -> tuple[str, str]:
    k = _k_rows(logits, top_k)
    if k is None:
        return "reference", "no top_k: top-p alone is cheaper in the reference than with k = vocab"
    reason = npu_top_k_top_p_reason(logits, k)
    if reason is not None:
        return "reference", reason
    return TOPK_TOPP, "within npu_top_k_top_p's documented limits"


def topk_topp_sampling(logits, top_k=None, top_p=None, temperature=None, seeds=None,
                       generator=None, return_probs=False):
    path, _ = route(logits, top_k)
    if path == "reference":
        return ref.topk_topp_sampling(logits, top_k, top_p, temperature, seeds, generator,
                                      return_probs)
    import torch_npu

    batch, vocab = logits.shape
    dev = logits.device
    if seeds is None:
        seeds = ref.draw_seeds(batch, dev, generator)
    x = ref.sanitize(logits)                                   # float32, NaN -> -inf, +inf -> max
    t = _rows(temperature, batch, torch.float32, dev, 1.0)
    t = torch.where(t >= 0, t, torch.ones_like(t))  # negative / NaN: 1.0, as the kernel
    greedy = t == 0
    inv_t = 1.0 / torch.where(greedy, torch.ones_like(t), t)
    argmax = x.argmax(dim=1)
    p = _rows(top_p, batch, torch.float32, dev, 1.0)
    p = torch.where((p > 0) & (p < 1), p, torch.ones_like(p))
    filtered = torch_npu.npu_top_k_top_p(x * inv_t[:, None], p, _k_rows(logits, top_k))
    probs = torch.nan_to_num(torch.softmax(filtered, dim=1), nan=0.0)  # all -inf rows
    noise = ref.exponential_noise(seeds, vocab).to(device=dev, dtype=torch.float32)
    score = torch.where(probs > 0, probs / noise, torch.full_like(probs, -1.0))
    token = score.argmax(dim=1)
    token = torch.where(score.max(dim=1).values > 0, token, torch.zeros_like(token))
    token = torch.where(greedy, argmax, token)
    if return_probs:
        onehot = torch.zeros_like(probs).scatter_(1, argmax[:, None], 1.0)
        alive = x.max(dim=1).values > float("-inf")
        probs = torch.where(greedy[:, None], onehot * alive[:, None], probs)
        return token, probs
    return token
