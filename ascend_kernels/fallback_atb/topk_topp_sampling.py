"""topk_topp_sampling through torch_npu: npu_top_k_top_p, then an exponential-race draw.

`torch_npu.npu_top_k_top_p(logits, p, k)` (the op vllm-ascend uses) returns the logits with the
filtered-out entries set to -inf; k is int32 [batch] in [1, 1024], p [batch] in the logits'
dtype. Temperature is applied before it (logits * (1 / temperature), greedy rows keep their
logits and take the argmax). Rows or calls it cannot express -- a top_k outside [1, 1024]
(including "off"), no top_k at all -- take the reference instead; for a tensor top_k that check
needs one host sync.

Ties: npu_top_k_top_p keeps every value equal to the k-th largest (like vLLM); inside top-p it
breaks ties by its sort order, whereas the Triton kernel keeps or drops a tie group whole.
The draw uses the reference's counter-based noise keyed by `seeds` (per row), so rows are
independent of the batch; it is not the Philox stream of the Triton kernel.
"""
from __future__ import annotations

import torch

from ..reference import topk_topp_sampling as ref

ATB_MAX_K = 1024


def _rows(value, batch, dtype, device, default):
    if value is None:
        value = default
    if isinstance(value, torch.Tensor):
        return value.reshape(-1).to(device=device, dtype=dtype)
    return torch.full((batch,), value, dtype=dtype, device=device)


def topk_topp_sampling(logits, top_k=None, top_p=None, temperature=None, seeds=None,
                       generator=None, return_probs=False):
    import torch_npu

    batch, vocab = logits.shape
    if top_k is None:
        return ref.topk_topp_sampling(logits, top_k, top_p, temperature, seeds, generator,
                                      return_probs)
    if isinstance(top_k, torch.Tensor):
        k_ok = bool(((top_k >= 1) & (top_k <= min(ATB_MAX_K, vocab))).all())
    else:
        k_ok = 1 <= int(top_k) <= min(ATB_MAX_K, vocab)
    if not k_ok:
        return ref.topk_topp_sampling(logits, top_k, top_p, temperature, seeds, generator,
                                      return_probs)
    dev = logits.device
    if seeds is None:
        seeds = ref.draw_seeds(batch, dev, generator)
    x = ref.sanitize(logits)                                   # float32, NaN -> -inf, +inf -> max
    t = _rows(temperature, batch, torch.float32, dev, 1.0)
    t = torch.where(t >= 0, t, torch.ones_like(t))  # negative / NaN: 1.0, as the kernel
    greedy = t == 0
    inv_t = 1.0 / torch.where(greedy, torch.ones_like(t), t)
    argmax = x.argmax(dim=1)
    scaled = (x * inv_t[:, None]).to(logits.dtype)
    k = _rows(top_k, batch, torch.int32, dev, 0)
    p = _rows(top_p, batch, logits.dtype, dev, 1.0)
    filtered = torch_npu.npu_top_k_top_p(scaled, p, k).float()
    probs = torch.softmax(filtered, dim=1)
    probs = torch.nan_to_num(probs, nan=0.0)                   # all -inf rows
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
