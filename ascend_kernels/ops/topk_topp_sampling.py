"""topk_topp_sampling: draw one token per row after temperature, top-k and top-p filtering."""
from __future__ import annotations

import dataclasses
import numbers
from typing import Optional, Union

import torch

from ..kernels import topk_topp_sampling as kern
from ..launcher import autotune, device as _device, dispatch
from ..reference import topk_topp_sampling as ref
from ._common import (FLOAT_DTYPES, check_bounds_enabled, check_tensor, next_pow2, not_contiguous_in_last_dim,
                      opaque_op)

OP = "topk_topp_sampling"
NC = 16      # candidate keys per search round (17-ary search)
ROUNDS = 8   # 17^8 > 2^32: any int32 key range resolves in 8 rounds
SROUNDS = 12  # select path: at most this many rounds (9^11 > 2^32 covers SNC >= 8)
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
    seeds: Optional[torch.Tensor]       # [batch] int64 (drawn before the custom op if None)
    return_probs: bool = False

    @property
    def device(self) -> torch.device:
        return self.logits.device

    @property
    def batch(self) -> int:
        return self.logits.shape[0]

    @property
    def vocab(self) -> int:
        return self.logits.shape[1]

    @property
    def has_k(self) -> bool:
        return self.top_k is not None or 0 < self.top_k_val < self.vocab

    @property
    def has_p(self) -> bool:
        return self.top_p is not None or self.top_p_val < 1.0


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
    flags = []
    if k_t is not None:
        flags.append((k_t < 0).any())
    if p_t is not None:
        pf = p_t.float()
        flags.append(~((pf > 0) & (pf <= 1)).all())
    if t_t is not None:
        tf = t_t.float()
        flags.append(~(tf >= 0).all())
    if not flags:
        return
    bad = torch.stack(flags).tolist()
    names = [n for n, t in (("top_k", k_t), ("top_p", p_t), ("temperature", t_t)) if t is not None]
    for name, b in zip(names, bad):
        if b:
            what = {"top_k": "must be >= 0 (0 = off)", "top_p": "must be in (0, 1]",
                    "temperature": "must be >= 0 (0 = greedy) and not NaN"}[name]
            raise ValueError(f"{name} {what}; the tensor holds a value outside that range")


def _validate(logits, top_k, top_p, temperature, seeds, generator, return_probs) -> Problem:
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
    if check_bounds_enabled():
        _check_values(k_t, p_t, t_t)
    # fp16/bf16/fp32 rows are read as they are (the kernel converts); fp64 has no Ascend vector
    if p_t is not None and p_t.dtype == torch.float64:
        p_t = p_t.float()
    if t_t is not None and t_t.dtype == torch.float64:
        t_t = t_t.float()
    return Problem(logits, k_t, k_s or 0, p_t, 1.0 if p_s is None else p_s, t_t,
                   1.0 if t_s is None else t_s, seeds, return_probs)


def _capability(backend: str, p: Problem) -> tuple[bool, str]:
    why = not_contiguous_in_last_dim({"logits": p.logits}, "vocab")
    if why:
        return False, why
    return True, "the kernel handles any batch, vocab and parameter mix"


# Search spaces. CHUNK: elements per step of a pass over a row. GS: group size of the group max
# (pool path). NGB: groups gathered per step. P_MAX: pool capacity (top-k rows with k <= P_MAX
# use the pool). PB: pool entries per pairwise step. SNC: candidates per select round, SC:
# elements per step of a select round ([SNC, SC] accumulators). USE_POOL False: the
# bounded-search path only (no scatter stores, which Ascend scalarises); True: the pool path for
# top-k rows and the select path for the other top-p / top-k rows.
_CUDA = {"CHUNK": 1024, "GS": 128, "GPB": 8, "NGB": 16, "P_MAX": 512, "PB": 16, "SC": 512,
         "SNC": 16, "USE_POOL": True}
CONFIGS = {
    "cuda": ([dict(_CUDA, GS=gs, num_warps=8, grid_programs_per_core=4) for gs in (64, 128, 256)]
             + [dict(_CUDA, num_warps=w, grid_programs_per_core=4) for w in (4, 16)]
             + [dict(_CUDA, CHUNK=c, num_warps=8, grid_programs_per_core=4) for c in (512, 2048)]
             + [dict(_CUDA, P_MAX=256, num_warps=8, grid_programs_per_core=4),
                dict(_CUDA, NGB=8, num_warps=4, grid_programs_per_core=4)]),
    "npu": [{"CHUNK": c, "GS": 128, "GPB": 4, "NGB": 4, "P_MAX": 256, "PB": 8, "SC": 64, "SNC": 16,
             "USE_POOL": u,
             "multibuffer": False, "grid_programs_per_core": 1}
            for u, chunks in ((True, (128, 256)), (False, (256, 512))) for c in chunks],
    "cpu": [{"CHUNK": 64, "GS": 4, "GPB": 4, "NGB": 4, "P_MAX": 32, "PB": 8, "SC": 16, "SNC": 8,
             "USE_POOL": True,
             "grid_programs_per_core": 1}],
}


def _default_config(backend: str, p: Problem) -> dict:
    if backend == "cuda":
        # top-p without top-k runs the select path (latency-bound passes, one program per row):
        # 16 warps measured 648 -> 562 us at batch 64 and 563 -> 475 us at batch 1 (H100)
        warps = 16 if (p is not None and p.has_p and not p.has_k) else 8
        return dict(_CUDA, num_warps=warps, grid_programs_per_core=4)
    if backend == "npu":
        return dict(CONFIGS["npu"][0])
    return dict(CONFIGS["cpu"][0])


def _tuning_key(p: Problem) -> tuple[dict, dict]:
    fixed = {"vocab": p.vocab, "dtype": str(p.logits.dtype).replace("torch.", ""),
             "top_k": p.has_k, "top_p": p.has_p, "return_probs": p.return_probs}
    return fixed, {"batch": p.batch}


def _launch(p: Problem, config: dict):
    """Runs the kernels; returns (tokens [batch] int64, probs [batch, vocab] fp32 or [0])."""
    batch, vocab, dev = p.batch, p.vocab, p.device
    tokens = torch.empty(batch, dtype=torch.int64, device=dev)
    probs = torch.empty((batch, vocab) if p.return_probs else (0,), dtype=torch.float32, device=dev)
    if batch == 0:
        return tokens, probs
    backend = dev.type
    constexprs, options = autotune.split_config(config, backend)
    seeds = p.seeds
    if seeds is None:
        seeds = ref.draw_seeds(batch, dev)
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
    if use_pool:
        gpb = constexprs["GPB"]
        tasks = batch * -(-num_groups // gpb)
        grid = (_device.persistent_grid(dev, tasks, max(per_core, 4), cube=False),)
        kern.group_max_kernel[grid](p.logits, gmax, gsum, t_t, float(p.temperature_val), batch,
                                    vocab, num_groups, p.logits.stride(0), ws_rows, GS=gs, GPB=gpb,
                                    T_TENSOR=p.temperature is not None, WITH_SUM=True, **options)
    grid = (_device.persistent_grid(dev, batch, per_core, cube=False),)
    kern.sampling_kernel[grid](
        p.logits, tokens, probs, gmax, gsum, lists, pool_k, pool_x, pool_i,
        k_t, p_t, t_t, seeds, p.top_k_val, float(p.top_p_val), float(p.temperature_val),
        batch, vocab, num_groups, p.logits.stride(0), ws_rows,
        HAS_K=p.has_k, K_TENSOR=p.top_k is not None, HAS_P=p.has_p, P_TENSOR=p.top_p is not None,
        T_TENSOR=p.temperature is not None, RETURN_PROBS=p.return_probs,
        NC=NC, ROUNDS=ROUNDS, SROUNDS=SROUNDS, **{k: v for k, v in constexprs.items() if k != "GPB"}, **options)
    return tokens, probs


def _run(p: Problem):
    decision = dispatch.decide(SPEC, p)
    if decision.path == "triton":
        return _launch(p, decision.config)
    args = dict(top_k=p.top_k if p.top_k is not None else p.top_k_val,
                top_p=p.top_p if p.top_p is not None else p.top_p_val,
                temperature=p.temperature if p.temperature is not None else p.temperature_val,
                seeds=p.seeds, return_probs=p.return_probs)
    fn = ref.topk_topp_sampling
    if decision.backend == "npu":
        from ..fallback_atb import topk_topp_sampling as atb

        fn = atb.topk_topp_sampling
    if p.return_probs:
        return fn(p.logits, **args)
    return fn(p.logits, **args), p.logits.new_empty((0,), dtype=torch.float32)


@opaque_op("ascend_kernels::topk_topp_sampling", mutates_args=())
def _topk_topp_sampling_op(logits: torch.Tensor, top_k: Optional[torch.Tensor], top_k_val: int,
                           top_p: Optional[torch.Tensor], top_p_val: float,
                           temperature: Optional[torch.Tensor], temperature_val: float,
                           seeds: torch.Tensor, return_probs: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _run(Problem(logits, top_k, top_k_val, top_p, top_p_val, temperature, temperature_val,
                        seeds, return_probs))


@_topk_topp_sampling_op.register_fake
def _(logits, top_k, top_k_val, top_p, top_p_val, temperature, temperature_val, seeds, return_probs):
    tokens = logits.new_empty((logits.shape[0],), dtype=torch.int64)
    probs = logits.new_empty(tuple(logits.shape) if return_probs else (0,), dtype=torch.float32)
    return tokens, probs


def _prepare(logits, *, top_k=None, top_p=None, temperature=None, seeds=None, generator=None,
             return_probs=False) -> Problem:
    return _validate(logits, top_k, top_p, temperature, seeds, generator, return_probs)


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
    p = _validate(logits, top_k, top_p, temperature, seeds, generator, return_probs)
    if p.seeds is None:
        p.seeds = ref.draw_seeds(p.batch, p.device, generator)
    tokens, probs = _topk_topp_sampling_op(p.logits, p.top_k, p.top_k_val, p.top_p, p.top_p_val,
                                           p.temperature, p.temperature_val, p.seeds, p.return_probs)
    return (tokens, probs) if return_probs else tokens


def _make_problem(shape: dict, device: torch.device, dtype: torch.dtype = torch.float32) -> Problem:
    """Fresh random inputs: batch, vocab, optional top_k (50), top_p (0.9), temperature (1.0),
    scale (logit std, 3.0), return_probs."""
    b, v = shape["batch"], shape["vocab"]
    logits = (torch.randn(b, v, device=device, dtype=torch.float32) * shape.get("scale", 3.0)).to(dtype)
    seeds = torch.randint(0, 2 ** 62, (b,), device=device, dtype=torch.int64)
    return Problem(logits, None, int(shape.get("top_k", 50)), None, float(shape.get("top_p", 0.9)),
                   None, float(shape.get("temperature", 1.0)), seeds,
                   bool(shape.get("return_probs", False)))




def ascend_cases(shape: dict, config: dict) -> list:
    """The kernels this op launches on Ascend for one bench shape and config (every flag on,
    tensor parameters: the largest specialisation)."""
    from .. import ascend_check

    vocab = int(shape["vocab"])
    dt = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "fp32": "fp32", "fp16": "fp16",
          "bf16": "bf16"}[str(shape.get("dtype", "float32")).replace("torch.", "")]
    label = f"batch={shape.get('batch')},vocab={vocab},{dt}"
    chunk = min(config["CHUNK"], next_pow2(vocab))
    cases = []
    if config["USE_POOL"]:
        cases.append(ascend_check.KernelCase(
            op=OP, kernel=kern.group_max_kernel,
            signature={"logits_ptr": f"*{dt}", "gmax_ptr": "*fp32", "gsum_ptr": "*fp32",
                       "temp_ptr": "*fp32", "temp_val": "fp32", "batch": "i32", "vocab": "i32",
                       "num_groups": "i32", "stride_row": "i32", "gmax_stride": "i32"},
            constexprs={"GS": config["GS"], "GPB": config["GPB"], "T_TENSOR": True,
                        "WITH_SUM": True}, config=config, label=label))
    sig = {"logits_ptr": f"*{dt}", "tokens_ptr": "*i64", "probs_ptr": "*fp32", "gmax_ptr": "*fp32",
           "gsum_ptr": "*fp32",
           "list_ptr": "*i32", "pool_key_ptr": "*i32", "pool_x_ptr": "*fp32", "pool_idx_ptr": "*i32",
           "top_k_ptr": "*i32", "top_p_ptr": "*fp32", "temp_ptr": "*fp32", "seeds_ptr": "*i64",
           "top_k_val": "i32", "top_p_val": "fp32", "temp_val": "fp32", "batch": "i32",
           "vocab": "i32", "num_groups": "i32", "stride_row": "i32", "ws_stride": "i32"}
    const = {"HAS_K": True, "K_TENSOR": True, "HAS_P": True, "P_TENSOR": True, "T_TENSOR": True,
             "RETURN_PROBS": True, "USE_POOL": bool(config["USE_POOL"]), "CHUNK": chunk, "NC": NC,
             "ROUNDS": ROUNDS, "GS": config["GS"], "NGB": config["NGB"], "P_MAX": config["P_MAX"],
             "PB": config["PB"], "SC": min(config["SC"], chunk), "SNC": config["SNC"],
             "SROUNDS": SROUNDS}
    note = ("the candidate pool is stored at cumsum positions and its groups are gathered by "
            "index (data-dependent addresses), which the adapter lowers per element or row: only "
            "the pool's <= P_MAX entries per row; USE_POOL=False configs have none"
            ) if config["USE_POOL"] else ""
    cases.append(ascend_check.KernelCase(op=OP, kernel=kern.sampling_kernel, signature=sig,
                                         constexprs=const, config=config, label=label, note=note))
    return cases


SPEC = dispatch.register(dispatch.OpSpec(
    name=OP, prepare=_prepare, capability=_capability, configs=CONFIGS,
    default_config=_default_config, tuning_key=_tuning_key, launch=_launch,
    kernels=(kern.sampling_kernel, kern.group_max_kernel, kern._pool_row, kern._general_row,
             kern._select_row, kern._select, kern._pool_above, kern._temperature, kern._row_param,
             kern._draw, kern._search, kern._mass_ge,
             kern._sanitize_key, kern._key_of, kern._value_of),
    ascend_cases=ascend_cases, make_problem=_make_problem))
