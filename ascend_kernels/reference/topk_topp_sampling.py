"""topk_topp_sampling in plain PyTorch, sort-based (as vLLM's sampler), computed in float64.

Same semantics as the Triton kernel (see kernels/topk_topp_sampling.py):
* logits are read as float32 and sanitised: NaN -> -inf, +inf -> the largest finite float32;
  order and ties are decided on these values; weights w = exp((x - max) * (1 / temperature))
  with 1 / temperature computed in float32.
* top-k keeps every token with fewer than k strictly larger values (ties at the k-th value all
  survive); top-p keeps every top-k survivor whose strictly-larger survivors hold less than
  top_p of the survivors' mass (tie groups are kept or dropped whole). k <= 0 or k >= vocab and
  top_p >= 1 turn a filter off; temperature 0 is greedy (first index of the max).
* the draw is an exponential race argmax(w / E) over kept tokens. The kernel's E comes from
  Philox (tl.rand); this reference uses a counter-based splitmix64 hash of (seed, index)
  instead, so its tokens are deterministic per (row, seed) and independent across rows, with
  the same distribution, but not the kernel's exact tokens.
* a row whose logits are all -inf/NaN returns token 0 and zero probabilities.
"""
from __future__ import annotations

from typing import Optional

import torch

FLT_MAX = torch.finfo(torch.float32).max
_MASK64 = (1 << 64) - 1


def _signed(v: int) -> int:
    v &= _MASK64
    return v - (1 << 64) if v >= (1 << 63) else v


_C0, _C1, _C2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _lsr(z: torch.Tensor, s: int) -> torch.Tensor:
    return (z >> s) & ((1 << (64 - s)) - 1)


def _splitmix64(z: torch.Tensor) -> torch.Tensor:
    z = z + _C0
    z = (z ^ _lsr(z, 30)) * _C1
    z = (z ^ _lsr(z, 27)) * _C2
    return z ^ _lsr(z, 31)


def exponential_noise(seeds: torch.Tensor, vocab: int) -> torch.Tensor:
    """[batch, vocab] float64 Exp(1) draws, a counter-based function of (seed, index)."""
    seeds = seeds.to(torch.int64).cpu()
    idx = torch.arange(vocab, dtype=torch.int64)
    h = _splitmix64(_splitmix64(seeds)[:, None] + idx[None, :])
    u = _lsr(h, 11).double() * 2.0 ** -53
    return -torch.log(u.clamp_min(2.0 ** -53))


def sanitize(logits: torch.Tensor) -> torch.Tensor:
    x = logits.float()
    x = torch.where(torch.isnan(x), torch.full_like(x, float("-inf")), x)
    return x.clamp(max=FLT_MAX)


def _rows(value, batch: int, dtype: torch.dtype, default) -> torch.Tensor:
    if value is None:
        value = default
    if isinstance(value, torch.Tensor):
        return value.reshape(-1).to(device="cpu", dtype=dtype)
    return torch.full((batch,), value, dtype=dtype)


def filtered(logits, top_k=None, top_p=None, temperature=None):
    """(probs [batch, vocab] float64, greedy [batch] bool, argmax [batch] int64): the
    distribution each row samples from (one-hot at the argmax for greedy rows)."""
    x = sanitize(logits).cpu()
    batch, vocab = x.shape
    k = _rows(top_k, batch, torch.int64, 0)
    p = _rows(top_p, batch, torch.float32, 1.0).double()
    t = _rows(temperature, batch, torch.float32, 1.0)
    t = torch.where(t >= 0, t, torch.ones_like(t))  # negative / NaN: 1.0, as the kernel
    greedy = t == 0
    inv_t = 1.0 / torch.where(greedy, torch.ones_like(t), t)  # float32, as the kernel
    m = x.max(dim=1).values
    alive = m > float("-inf")
    m_safe = torch.where(alive, m, torch.zeros_like(m))
    w = ((x - m_safe[:, None]) * inv_t[:, None]).double().exp()  # exponent in float32
    argmax = x.argmax(dim=1)

    s, order = torch.sort(x, dim=1, descending=True, stable=True)
    k_on = (k > 0) & (k < vocab)
    kth = s.gather(1, (k.clamp(1, vocab) - 1)[:, None])
    keep = torch.where(k_on[:, None], x >= kth, torch.ones_like(x, dtype=torch.bool))
    wk = torch.where(keep, w, torch.zeros_like(w))
    zk = wk.sum(dim=1)
    p_on = (p > 0.0) & (p < 1.0)  # outside (0, 1] or NaN: off, as the kernel
    ws = wk.gather(1, order)
    excl = torch.cumsum(ws, dim=1) - ws
    neg = (-s).contiguous()  # ascending; the first position of each value's tie group
    first = torch.searchsorted(neg, neg, right=False)
    above = excl.gather(1, first)
    keep_p_sorted = above < (p * zk)[:, None]
    keep_p = torch.empty_like(keep_p_sorted).scatter_(1, order, keep_p_sorted)
    keep = keep & torch.where(p_on[:, None], keep_p, torch.ones_like(keep_p)) & alive[:, None]
    probs = torch.where(keep, w, torch.zeros_like(w))
    z = probs.sum(dim=1, keepdim=True)
    probs = probs / torch.where(z > 0, z, torch.ones_like(z))
    onehot = torch.zeros_like(probs).scatter_(1, argmax[:, None], 1.0)
    onehot = onehot * alive[:, None]
    probs = torch.where(greedy[:, None], onehot, probs)
    return probs, greedy, argmax


def draw_seeds(batch: int, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Per-row int64 seeds derived from one seed drawn from `generator` (or torch's default
    generator of `device`)."""
    gdev = generator.device if generator is not None else torch.device(device)
    base = torch.randint(0, 2 ** 62, (1,), dtype=torch.int64, device=gdev, generator=generator)
    base = base.to(device)
    return base + torch.arange(batch, dtype=torch.int64, device=device) * _C0


def topk_topp_sampling(logits, top_k=None, top_p=None, temperature=None, seeds=None,
                       generator=None, return_probs=False):
    """int64 tokens [batch] (and float32 probs [batch, vocab] with return_probs)."""
    batch, vocab = logits.shape
    if seeds is None:
        seeds = draw_seeds(batch, logits.device, generator)
    probs, greedy, argmax = filtered(logits, top_k, top_p, temperature)
    score = probs / exponential_noise(seeds, vocab)
    score = torch.where(probs > 0, score, torch.full_like(score, -1.0))
    best = score.max(dim=1, keepdim=True).values
    idx = torch.arange(vocab).expand(batch, vocab)
    token = torch.where(score == best, idx, torch.full_like(idx, vocab)).min(dim=1).values
    token = torch.where(best[:, 0] > 0, token, torch.zeros_like(token))
    token = torch.where(greedy, argmax, token).to(logits.device)
    if return_probs:
        return token, probs.float().to(logits.device)
    return token
