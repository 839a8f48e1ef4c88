"""topk_topp_sampling: draw one token per row after temperature, top-k and top-p filtering."""
from __future__ import annotations

import dataclasses
import numbers
import os
from typing import Optional, Union

import torch

from ..kernels import topk_topp_sampling as kern
from ..launcher import device as _device
from ..launcher.checks import FLOAT_DTYPES, check_tensor, dtype_name, next_pow2, not_contiguous_in_last_dim
from ..launcher.configs import split_config
from ..launcher.launch import Launch, zeroed_counters
from ..launcher.op import CHECK_BOUNDS_ENV, Output, define
from ..reference import topk_topp_sampling as ref
from ._common import fallbacks

NC = 16      # candidate keys per search round (17-ary search)
ROUNDS = 8   # 17^8 > 2^32: any int32 key range resolves in 8 rounds
SROUNDS = 12  # select path: at most this many rounds (9^11 > 2^32 covers SNC >= 8)
# H200, graph replay, one launch vs two: B1 x 128256 30.8 vs 29.5 us, B4 x 32000 30.5 vs 32.5 us
ONE_LAUNCH_BATCH = 8
INT_DTYPES = (torch.int32, torch.int64)
PARAM_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@dataclasses.dataclass
class Problem:
    logits: torch.Tensor
    top_k: Optional[torch.Tensor]       # [batch] int32/int64, or None (then top_k_val)
    top_k_val: int                      # 0 = off
    top_p: Optional[torch.Tensor]       # [batch] float32, or None (then top_p_val)
    top_p_val: float                    # 1.0 = off
    temperature: Optional[torch.Tensor]  # [batch] float32, or None (then temperature_val)
    temperature_val: float
    seeds: Optional[torch.Tensor]       # [batch] int64; drawn from `generator` on every call if None
    return_probs: bool
    tokens: torch.Tensor = None   # [batch] int64 out, every call
    probs: torch.Tensor = None    # [batch, vocab] fp32 out ([0] without return_probs), every call
    generator: Optional[torch.Generator] = dataclasses.field(default=None, metadata={"host": True})

    device = property(lambda self: self.logits.device)
    batch = property(lambda self: self.logits.shape[0])
    vocab = property(lambda self: self.logits.shape[1])
    has_k = property(lambda self: self.top_k is not None or 0 < self.top_k_val < self.vocab)
    has_p = property(lambda self: self.top_p is not None or self.top_p_val < 1.0)


def _param(name, value, batch, dev, dtypes, kind):
    """(tensor or None, scalar) for one per-row parameter; bad values raise naming it."""
    if value is None:
        return None, None
    if isinstance(value, torch.Tensor):
        check_tensor(name, value, dtypes=dtypes, device=dev)
        if value.dim() == 0 or value.shape != (batch,):
            if value.numel() == 1 and value.dim() <= 1 and batch != 1:
                raise ValueError(f"{name} must be a scalar or a [batch] = [{batch}] tensor, got "
                                 f"shape {tuple(value.shape)}")
            if value.numel() != batch or value.dim() > 1:
                raise ValueError(f"{name} must be a [batch] = [{batch}] tensor, got shape "
                                 f"{tuple(value.shape)}")
            value = value.reshape(batch)
        return value, None
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be None, an int or an int tensor, got {type(value).__name__}")
        return None, int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be None, a float or a float tensor, got {type(value).__name__}")
    return None, float(value)


def _check_values(k_t, p_t, t_t) -> None:
    """ASCEND_KERNELS_CHECK_BOUNDS=1: range checks of tensor parameters (one host sync)."""
    checks = [(name, t, what, bad) for name, t, what, bad in (
        ("top_k", k_t, "must be >= 0 (0 = off)", lambda t: (t < 0).any()),
        ("top_p", p_t, "must be in (0, 1]", lambda t: ~((t > 0) & (t <= 1)).all()),
        ("temperature", t_t, "must be >= 0 (0 = greedy) and not NaN", lambda t: ~(t >= 0).all()))
        if t is not None]
    if checks:
        flags = torch.stack([bad(t) for _, t, _, bad in checks]).tolist()
        for (name, _, what, _), flag in zip(checks, flags):
            if flag:
                raise ValueError(f"{name} {what}; the tensor holds a value outside that range")


def _capability(backend: str, p: Problem) -> tuple[bool, str]:
    why = not_contiguous_in_last_dim({"logits": p.logits}, "vocab")
    if why:
        return False, why
    return True, "the kernel handles any batch, vocab and parameter mix"


def _launches(p: Problem, config: dict, backend: str) -> list:
    batch, vocab, dev, seeds = p.batch, p.vocab, p.device, p.seeds
    if batch == 0:
        return []
    constexprs, options = split_config(config, backend)
    gs, p_max = constexprs["GS"], constexprs["P_MAX"]
    num_groups = -(-vocab // gs)
    use_pool = bool(constexprs["USE_POOL"]) and (p.has_k or p.has_p) and vocab > gs
    constexprs["USE_POOL"] = use_pool
    chunk = min(constexprs["CHUNK"], next_pow2(vocab))
    constexprs["CHUNK"] = chunk
    constexprs["SC"] = min(constexprs["SC"], chunk)
    per_core = config.get("grid_programs_per_core", 1)
    ws_rows = 4 * p_max + (2 * num_groups if use_pool else 0)
    ws = torch.empty((batch, ws_rows), dtype=torch.int32, device=dev)
    lists, pool_k, pool_i = ws[:, :p_max], ws[:, p_max:2 * p_max], ws[:, 3 * p_max:4 * p_max]
    pool_x = ws[:, 2 * p_max:3 * p_max].view(torch.float32)
    gmax = ws[:, 4 * p_max:4 * p_max + num_groups].view(torch.float32) if use_pool else pool_x
    gsum = ws[:, 4 * p_max + num_groups:].view(torch.float32) if use_pool else pool_x
    k_t = p.top_k if p.top_k is not None else seeds      # unread unless K_TENSOR
    p_t = p.top_p if p.top_p is not None else pool_x     # unread unless P_TENSOR
    t_t = p.temperature if p.temperature is not None else pool_x
    gpb = constexprs["GPB"]
    group_grid = (_device.persistent_grid(dev, batch * -(-num_groups // gpb), max(per_core, 4), cube=False),)
    # one launch (SAMPLE_LAST), always for batches of at most ONE_LAUNCH_BATCH rows: the same
    # kernel time there, and one launch less of host time, which the tuner (timing graph
    # replays) does not see. Not while a graph is being captured before the counters exist
    # (they must be zeroed outside the graph).
    arrivals = zeroed_counters.get(dev, batch) if (
        use_pool and (batch <= ONE_LAUNCH_BATCH or constexprs.get("SAMPLE_LAST", False))
        and _device.backend_flag(backend, "LAST_ARRIVAL")) else None
    constexprs["SAMPLE_LAST"] = arrivals is not None
    launches = []
    if use_pool and arrivals is None:
        args = dict(logits_ptr=p.logits, gmax_ptr=gmax, gsum_ptr=gsum, temp_ptr=t_t,
                    temp_val=float(p.temperature_val), batch=batch, vocab=vocab, num_groups=num_groups,
                    stride_row=p.logits.stride(0), gmax_stride=ws_rows)
        launches.append(Launch(kern.group_max_kernel, group_grid, args,
                               dict(GS=gs, GPB=gpb, T_TENSOR=p.temperature is not None, WITH_SUM=True),
                               options))
    grid = group_grid if arrivals is not None else (_device.persistent_grid(dev, batch, per_core, cube=False),)
    args = dict(logits_ptr=p.logits, tokens_ptr=p.tokens, probs_ptr=p.probs, gmax_ptr=gmax, gsum_ptr=gsum,
                list_ptr=lists, pool_key_ptr=pool_k, pool_x_ptr=pool_x, pool_idx_ptr=pool_i,
                top_k_ptr=k_t, top_p_ptr=p_t, temp_ptr=t_t, seeds_ptr=seeds,
                arrivals_ptr=arrivals if arrivals is not None else seeds,  # unread without SAMPLE_LAST
                top_k_val=p.top_k_val, top_p_val=float(p.top_p_val), temp_val=float(p.temperature_val),
                batch=batch, vocab=vocab, num_groups=num_groups, stride_row=p.logits.stride(0),
                ws_stride=ws_rows)
    constexprs.update(HAS_K=p.has_k, K_TENSOR=p.top_k is not None, HAS_P=p.has_p,
                      P_TENSOR=p.top_p is not None, T_TENSOR=p.temperature is not None,
                      RETURN_PROBS=p.return_probs, NC=NC, ROUNDS=ROUNDS, SROUNDS=SROUNDS)
    launches.append(Launch(kern.sampling_kernel, grid, args, constexprs, options))
    return launches


def _fallback_args(p: Problem) -> tuple:
    return (p.logits,), dict(top_k=p.top_k if p.top_k is not None else p.top_k_val,
                             top_p=p.top_p if p.top_p is not None else p.top_p_val,
                             temperature=p.temperature if p.temperature is not None else p.temperature_val,
                             seeds=p.seeds, return_probs=p.return_probs)


def _copy_out(p: Problem, result) -> None:
    tokens, probs = result if p.return_probs else (result, None)
    p.tokens.copy_(tokens)
    if p.return_probs:
        p.probs.copy_(probs)


def _tuning_key(p: Problem) -> tuple[dict, dict]:
    fixed = {"vocab": p.vocab, "dtype": dtype_name(p.logits.dtype),
             "top_k": p.has_k, "top_p": p.has_p, "return_probs": p.return_probs}
    return fixed, {"batch": p.batch}


@define(problem=Problem, kernel_module=kern, capability=_capability, launches=_launches,
        fallbacks=fallbacks("topk_topp_sampling", _fallback_args, _copy_out),
        tuning_key=_tuning_key, outputs=("tokens", "probs"),
        result=lambda p: (p.tokens, p.probs) if p.return_probs else p.tokens,
        fresh={"seeds": lambda p: ref.draw_seeds(p.batch, p.device, p.generator) if p.seeds is None else p.seeds,
               "tokens": Output(lambda p: ((p.batch,), torch.int64)),
               "probs": Output(lambda p: ((p.batch, p.vocab), torch.float32), wanted=lambda p: p.return_probs)})
def topk_topp_sampling(logits: torch.Tensor, *, top_k: Union[int, torch.Tensor, None] = None,
                       top_p: Union[float, torch.Tensor, None] = None,
                       temperature: Union[float, torch.Tensor, None] = None,
                       seeds: Optional[torch.Tensor] = None,
                       generator: Optional[torch.Generator] = None, return_probs: bool = False):
    """Sample one token per row after temperature, top-k and top-p (vLLM's order and semantics).

    logits:      [batch, vocab] fp32/fp16/bf16, contiguous in vocab (any vocab size).
    top_k:       None, an int or an int32/int64 [batch] tensor; 0 or >= vocab: off for that row.
    top_p:       None, a float or a float [batch] tensor in (0, 1]; 1.0: off.
    temperature: None (1.0), a float or a float [batch] tensor >= 0; 0: greedy (argmax).
    seeds:       int64 [batch]: the row's Philox key. Same logits, parameters and seed -> same
                 token, whatever else is in the batch; pass seeds to capture in a graph. None:
                 per-row seeds derived from one seed drawn from `generator` (or torch's default
                 generator of the logits' device).
    Returns int64 token ids [batch]; with return_probs also the float32 probabilities after
    filtering and renormalisation [batch, vocab] (one-hot at the argmax for greedy rows).

    Order: logits / temperature, top-k keeps the k largest, top-p keeps the smallest set of the
    most likely survivors whose renormalised mass reaches top_p (never fewer than one), then one
    token is drawn from the renormalised rest (exponential race, argmax p_i / E_i).
    The Triton and fallback paths draw different tokens for the same seeds: the kernel's noise
    E_i is Philox (tl.rand keyed by the row's seed), the fallback's (the PyTorch reference, and
    after torch_npu's npu_top_k_top_p on Ascend) a splitmix64 hash of (seed, index). Each path is
    an exact sampler of the same filtered distribution (torch_npu's operator may break an exact
    tie at the top-p boundary differently) and repeats its tokens for the same seeds, so the
    paths agree in distribution, not token for token: keep one path (ASCEND_KERNELS_BACKEND)
    where runs must replay the same tokens.
    Ties at a threshold: every token equal to the threshold value is kept (a token survives
    top-k iff fewer than k tokens are strictly larger; top-p keeps or drops equal values as a
    group), so more than k tokens can survive. Ties are decided on the logits before the
    temperature division (a positive scale keeps the order).
    NaN logits count as -inf (never drawn); +inf counts as the largest finite float32 (the +inf
    tokens share the mass equally). A row whose logits are all -inf/NaN returns token 0 and zero
    probabilities; greedy picks the first index of the maximum. Ids are always in [0, vocab).
    Scalar parameters are range-checked here; the values of tensor parameters only with
    ASCEND_KERNELS_CHECK_BOUNDS=1 (a host sync). Unchecked, a row's out-of-range value turns
    that filter off: top_k < 0, top_p outside (0, 1] or NaN, temperature < 0 or NaN (= 1.0).
    The threshold is found without sorting: see kernels/topk_topp_sampling.py.
    """
    check_tensor("logits", logits, ndim=2, dtypes=FLOAT_DTYPES)
    dev = logits.device
    batch, vocab = logits.shape
    if vocab < 1:
        raise ValueError(f"logits must have a vocabulary of at least 1, got shape {tuple(logits.shape)}")
    if vocab >= 2 ** 31 - 1:
        raise ValueError(f"logits vocabulary {vocab} is too large (int32 indices)")
    k_t, k_s = _param("top_k", top_k, batch, dev, INT_DTYPES, "int")
    p_t, p_s = _param("top_p", top_p, batch, dev, PARAM_FLOAT_DTYPES, "float")
    t_t, t_s = _param("temperature", temperature, batch, dev, PARAM_FLOAT_DTYPES, "float")
    if k_s is not None and k_s < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {k_s}")
    if p_s is not None and not (0.0 < p_s <= 1.0):
        raise ValueError(f"top_p must be in (0, 1] (1 = off), got {p_s}")
    if t_s is not None and not (t_s >= 0.0):
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {t_s}")
    if seeds is not None:
        check_tensor("seeds", seeds, dtypes=(torch.int64,), device=dev)
        if seeds.shape != (batch,):
            raise ValueError(f"seeds must be a [batch] = [{batch}] int64 tensor, got shape "
                             f"{tuple(seeds.shape)}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if not isinstance(return_probs, bool):
        raise TypeError(f"return_probs must be a bool, got {type(return_probs).__name__}")
    if os.environ.get(CHECK_BOUNDS_ENV) == "1":
        _check_values(k_t, p_t, t_t)
    # fp16/bf16/fp32 rows are read as they are (the kernel converts); fp64 has no Ascend vector
    p_t, t_t = (t.float() if t is not None and t.dtype == torch.float64 else t for t in (p_t, t_t))
    return Problem(logits, k_t, k_s or 0, p_t, 1.0 if p_s is None else p_s, t_t,
                   1.0 if t_s is None else t_s, seeds, return_probs, generator=generator)


