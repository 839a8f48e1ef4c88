"""paged_attention: decode attention (one query token per sequence) over a paged KV cache."""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Optional

import torch

from ..kernels import paged_attention as kern
from ..launcher import autotune, device as _device, dispatch
from ..reference import paged_attention as ref
from ._common import (FLOAT_DTYPES, check_dim, check_same_device, check_tensor, next_pow2,
                      not_contiguous_in_last_dim, opaque_op)

OP = "paged_attention"
SPLIT_SIZE_ENV = "ASCEND_KERNELS_PA_SPLIT_SIZE"
MAX_SPLITS = 1024           # fixed split sizes giving more splits than this are refused
AUTO_MAX_SPLITS = 64        # the automatic choice stays under this
MIN_SPLIT_TOKENS = 512      # the automatic choice gives each split at least this many tokens
MERGE_BLOCK_S = 32          # splits merged per step of the merge kernel
MAX_HEAD_SIZE = 256
# CUDA shared memory beside the staged K/V tiles (scores, q, barriers): 12 KB measured on the
# H100 (a step of K/V tiles in n stages takes (n - 1) steps' bytes plus this), with room to spare
SMEM_RESERVE = 16 * 1024
NPU_TILE_BYTES = 32 * 1024  # one K (or V) page tile on Ascend: 4 of them (K, V, double-buffered) + scores fit UB


@dataclasses.dataclass
class Problem:
    query: torch.Tensor
    key_cache: torch.Tensor
    value_cache: torch.Tensor
    block_table: torch.Tensor
    seq_lens: torch.Tensor
    out: Optional[torch.Tensor]
    scale: float
    sliding_window: int           # 0 = none
    softcap: float
    alibi_slopes: Optional[torch.Tensor]
    seq_lens_host: Optional[torch.Tensor] = None
    block_table_host: Optional[torch.Tensor] = None
    split_size: int = 0           # tokens per split (fixed, batch invariant); 0 = automatic

    @property
    def device(self) -> torch.device:
        return self.query.device

    @property
    def dims(self) -> dict:
        s, h, d = self.query.shape
        nb, bs, kvh, _ = self.key_cache.shape
        return {"num_seqs": s, "num_heads": h, "num_kv_heads": kvh, "head_size": d,
                "block_size": bs, "max_blocks": self.block_table.shape[1]}


def _split_size_of(split_size) -> int:
    if split_size is None:
        env = os.environ.get(SPLIT_SIZE_ENV, "").strip()
        if not env:
            return 0
        try:
            split_size = int(env)
        except ValueError:
            raise ValueError(f"{SPLIT_SIZE_ENV}={env!r}: expected a number of tokens") from None
    if isinstance(split_size, bool) or not isinstance(split_size, int) or split_size < 0:
        raise ValueError(f"split_size must be a non-negative int (tokens per split), got {split_size!r}")
    return split_size


def _validate(query, key_cache, value_cache, block_table, seq_lens, *, scale=None, sliding_window=None,
              softcap=0.0, alibi_slopes=None, out=None, seq_lens_host=None, block_table_host=None,
              split_size=None) -> Problem:
    check_tensor("query", query, ndim=3, dtypes=FLOAT_DTYPES)
    check_tensor("key_cache", key_cache, ndim=4, dtypes=FLOAT_DTYPES)
    check_tensor("value_cache", value_cache, ndim=4, dtypes=FLOAT_DTYPES)
    check_tensor("block_table", block_table, ndim=2, dtypes=(torch.int32,))
    check_tensor("seq_lens", seq_lens, ndim=1, dtypes=(torch.int32,))
    check_same_device([("query", query), ("key_cache", key_cache), ("value_cache", value_cache),
                       ("block_table", block_table), ("seq_lens", seq_lens),
                       ("alibi_slopes", alibi_slopes), ("out", out)])
    num_seqs, num_heads, head_size = query.shape
    if key_cache.shape != value_cache.shape:
        raise ValueError(f"key_cache and value_cache must have the same shape, got "
                         f"{tuple(key_cache.shape)} and {tuple(value_cache.shape)}")
    for name, t in (("key_cache", key_cache), ("value_cache", value_cache)):
        if t.dtype != query.dtype:
            raise TypeError(f"{name} dtype {t.dtype} differs from query's {query.dtype}")
    check_dim("key_cache", key_cache, 3, head_size, "head_size of query")
    num_kv_heads = key_cache.shape[2]
    if num_kv_heads == 0 or num_heads % num_kv_heads:
        raise ValueError(f"query's num_heads ({num_heads}) must be a multiple of key_cache's "
                         f"num_kv_heads ({num_kv_heads})")
    if key_cache.shape[1] == 0:
        raise ValueError(f"key_cache has block_size 0, shape {tuple(key_cache.shape)}")
    check_dim("block_table", block_table, 0, num_seqs, "num_seqs of query")
    check_dim("seq_lens", seq_lens, 0, num_seqs, "num_seqs of query")
    if scale is None:
        scale = 1.0 / math.sqrt(head_size)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a float, got {type(scale).__name__}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite float > 0, got {scale!r}")
    if sliding_window is None:
        sliding_window = 0
    elif isinstance(sliding_window, bool) or not isinstance(sliding_window, int) or sliding_window <= 0:
        raise ValueError(f"sliding_window must be None or a positive int (keys seen), got {sliding_window!r}")
    if isinstance(softcap, bool) or not isinstance(softcap, (int, float)) or not softcap >= 0 \
            or not math.isfinite(softcap):
        raise ValueError(f"softcap must be a finite float >= 0 (0 = off), got {softcap!r}")
    if alibi_slopes is not None:
        check_tensor("alibi_slopes", alibi_slopes, ndim=1, dtypes=(torch.float32,))
        check_dim("alibi_slopes", alibi_slopes, 0, num_heads, "num_heads of query")
    if out is not None:
        check_tensor("out", out, ndim=3, dtypes=(query.dtype,))
        if out.shape != query.shape:
            raise ValueError(f"out must have query's shape {tuple(query.shape)}, got {tuple(out.shape)}")
    for name, host, like in (("seq_lens_host", seq_lens_host, seq_lens),
                             ("block_table_host", block_table_host, block_table)):
        if host is None:
            continue
        check_tensor(name, host, dtypes=(torch.int32,))
        if host.device.type != "cpu":
            raise ValueError(f"{name} must be a CPU (pinned) tensor, got one on {host.device}")
        if host.shape != like.shape:
            raise ValueError(f"{name} must have the shape of its device twin {tuple(like.shape)}, "
                             f"got {tuple(host.shape)}")
    split_size = _split_size_of(split_size)
    block_size = key_cache.shape[1]
    if split_size:
        if split_size % block_size:
            raise ValueError(f"split_size ({split_size}) must be a multiple of block_size ({block_size})")
        splits = -(-block_table.shape[1] // (split_size // block_size))
        if splits > MAX_SPLITS:
            raise ValueError(f"split_size {split_size} gives {splits} splits for a block_table of "
                             f"{block_table.shape[1]} pages; at most {MAX_SPLITS}")
    return Problem(query, key_cache, value_cache, block_table, seq_lens, out, float(scale),
                   int(sliding_window), float(softcap), alibi_slopes, seq_lens_host, block_table_host,
                   split_size)


def _capability(backend: str, p: Problem) -> tuple[bool, str]:
    why = not_contiguous_in_last_dim({"query": p.query, "key_cache": p.key_cache,
                                      "value_cache": p.value_cache, "out": p.out}, "head_size")
    if why:
        return False, why
    d = p.dims
    if d["block_size"] < 16:
        return False, f"block_size {d['block_size']} < 16: tl.dot needs at least 16 keys per page"
    if d["head_size"] > MAX_HEAD_SIZE:
        return False, f"head_size {d['head_size']} > {MAX_HEAD_SIZE}"
    tile = d["block_size"] * next_pow2(d["head_size"]) * p.key_cache.element_size()
    smem = _device.properties(p.query.device)["smem_bytes"]
    if backend == "cuda" and smem and 2 * tile + SMEM_RESERVE > smem:
        return False, (f"one K and one V page tile take {2 * tile} bytes (block_size x head_size "
                       f"each), over the {smem} bytes of shared memory a program may use")
    if backend == "npu":
        if tile > NPU_TILE_BYTES:
            return False, (f"one KV page tile is {tile} bytes (block_size x head_size), over the "
                           f"{NPU_TILE_BYTES} bytes the Ascend UB budget allows per tile")
    return True, "the kernel handles these shapes, strides, dtypes and options"


# Search spaces. grid_step_tokens: tokens per loop step (pages per step = step // block_size,
# at least 1; Ascend always 1 page: a multi-page tile is a gather there). grid_split_target:
# programs per core wanted before split-KV kicks in. grid_programs_per_core sizes the grid.
CONFIGS = {
    "cuda": [{"grid_step_tokens": t, "num_warps": w, "num_stages": s, "grid_programs_per_core": 8,
              "grid_split_target": 2}
             for t in (64, 128, 256) for w in (4, 8) for s in (2, 3, 4)],
    "npu": [{"multibuffer": m, "grid_programs_per_core": 1, "grid_split_target": 1} for m in (True, False)],
    "cpu": [{"grid_step_tokens": 32, "grid_programs_per_core": 1, "grid_split_target": 1}],
}


def _step_kv_bytes(dims: dict, config: dict, elem: int) -> int:
    """Bytes of the K and V tiles of one CUDA loop step (pages per step x page x head size)."""
    return (2 * _pages_per_step(dims, config, "cuda") * next_pow2(dims["block_size"])
            * max(16, next_pow2(dims["head_size"])) * elem)


def _default_config(backend: str, p: Optional[Problem] = None) -> dict:
    if backend == "cuda":
        # H100 sweeps (bench/results/paged_attention_h100.md): split-KV (short tasks) likes
        # small steps; long tasks over small pages like 8 warps over 128-token steps in 2
        # stages (370 us at b=64 x 4096, bs 16; 256-token steps in 3 stages need 268 KB of
        # shared memory, over the H100's 227 KB).
        cfg = {"grid_step_tokens": 128, "num_warps": 4, "num_stages": 3, "grid_programs_per_core": 8,
               "grid_split_target": 2}
        if p is not None:
            d = p.dims
            cores = _device.grid_cap(p.device, cube=True)
            if d["num_seqs"] * d["num_kv_heads"] < cores * cfg["grid_split_target"]:
                cfg.update(grid_step_tokens=64)
            elif d["block_size"] <= 32:
                cfg.update(num_warps=8, num_stages=2)
            smem = _device.properties(p.query.device)["smem_bytes"]
            if smem:  # fewer stages, then fewer pages per step, until the staged tiles fit
                elem = p.key_cache.element_size()
                while (cfg["num_stages"] - 1) * _step_kv_bytes(d, cfg, elem) + SMEM_RESERVE > smem:
                    if cfg["num_stages"] > 2:
                        cfg["num_stages"] -= 1
                    elif cfg["grid_step_tokens"] > d["block_size"]:
                        cfg["grid_step_tokens"] //= 2
                    else:
                        break  # one page per step in 2 stages: _capability sent larger pages away
        return cfg
    if backend == "npu":
        return dict(CONFIGS["npu"][0])
    return dict(CONFIGS["cpu"][0])


def _tuning_key(p: Problem) -> tuple[dict, dict]:
    d = p.dims
    fixed = {"heads": d["num_heads"], "kv_heads": d["num_kv_heads"], "head_size": d["head_size"],
             "block_size": d["block_size"], "dtype": str(p.query.dtype).replace("torch.", ""),
             "softcap": p.softcap > 0, "alibi": p.alibi_slopes is not None,
             "window": p.sliding_window > 0, "split_size": p.split_size}
    return fixed, {"seqs": d["num_seqs"], "context": d["max_blocks"] * d["block_size"]}


def auto_splits(tasks: int, max_context: int, cores: int, target: int) -> int:
    """Splits per (sequence, kv head) from shapes only: enough programs for `target` per core
    when the batch alone has fewer, then rounded up (at most 2x) until the equal-length tasks
    fill their last wave over the cores to >= 90% (H100: b=4 x 32k, 8 kv heads: 9 splits =
    288 tasks ran at 74% of copy bandwidth, 16 splits = 512 tasks at 90%)."""
    if tasks <= 0 or tasks >= cores * target:
        return 1
    cap = max(1, min(AUTO_MAX_SPLITS, max_context // MIN_SPLIT_TOKENS))
    base = min(-(-cores * target // tasks), cap)

    def fill(s: int) -> float:
        n = tasks * s
        return n / (-(-n // cores) * cores)

    candidates = range(base, max(base, min(2 * base, cap)) + 1)
    good = [s for s in candidates if fill(s) >= 0.9]
    return good[0] if good else max(candidates, key=fill)


def _pages_per_step(dims: dict, config: dict, backend: str) -> int:
    """Pages per loop step: grid_step_tokens // block_size rounded down to a power of two (the
    kernel's tile is an arange of PAGES_PER_STEP * BLOCK_N rows), at most the table's width;
    1 on Ascend (a multi-page tile is a gather there)."""
    if backend == "npu":
        return 1
    bs = dims["block_size"]
    pages = max(1, config.get("grid_step_tokens", bs) // bs)
    return min(1 << (pages.bit_length() - 1), next_pow2(max(1, dims["max_blocks"])))


def plan(dims: dict, config: dict, backend: str, cores: int, split_size: int = 0) -> dict:
    """Everything about a launch that follows from shapes and the config (never from data):
    constexprs of both kernels, number of splits, fixed pages per split, grid sizes."""
    s, h, kvh, hd = dims["num_seqs"], dims["num_heads"], dims["num_kv_heads"], dims["head_size"]
    bs, max_blocks = dims["block_size"], dims["max_blocks"]
    gqa = h // kvh
    pages_per_step = _pages_per_step(dims, config, backend)
    tasks = s * kvh
    pages_per_split = 0
    if split_size:
        pages_per_split = split_size // bs
        num_splits = max(1, -(-max_blocks // pages_per_split))
    elif "grid_num_splits" in config:  # tests: force a split count
        num_splits = max(1, int(config["grid_num_splits"]))
    else:
        num_splits = auto_splits(tasks, max_blocks * bs, cores, config.get("grid_split_target", 1))
    n_tasks = tasks * num_splits
    ppc = config.get("grid_programs_per_core", 1)
    grid = _device.grid_size(cores, n_tasks, ppc)
    merge_grid = _device.grid_size(cores, s * h, ppc)
    return {
        "num_splits": num_splits, "pages_per_split": pages_per_split, "num_tasks": n_tasks,
        "grid": grid, "merge_grid": merge_grid,
        "constexprs": {"GQA": gqa, "BLOCK_M": max(16, next_pow2(gqa)), "HEAD_SIZE": hd,
                       "BLOCK_D": max(16, next_pow2(hd)), "BLOCK_SIZE": bs, "BLOCK_N": next_pow2(bs),
                       "PAGES_PER_STEP": pages_per_step, "NUM_SPLITS": num_splits},
        "merge_constexprs": {"NUM_SPLITS": num_splits,
                             "BLOCK_S": min(MERGE_BLOCK_S, next_pow2(num_splits)),
                             "HEAD_SIZE": hd, "BLOCK_D": max(16, next_pow2(hd))},
    }


def _launch(p: Problem, config: dict) -> None:
    d = p.dims
    if d["num_seqs"] == 0 or d["num_heads"] == 0:
        return
    backend = p.device.type
    _, options = autotune.split_config(config, backend)
    cores = _device.grid_cap(p.device, cube=True)
    pl = plan(d, config, backend, cores, p.split_size)
    ns = pl["num_splits"]
    out = p.out
    s, h, hd = p.query.shape
    if ns == 1:
        target, lse = out, out  # lse unread when NUM_SPLITS == 1
        o_stride_s, o_stride_h = out.stride(0), out.stride(1)
    else:
        # sized from static shapes only: one CUDA graph replays for any seq_lens
        target = torch.empty((s, h, ns, hd), dtype=torch.float32, device=p.device)
        lse = torch.empty((s, h, ns), dtype=torch.float32, device=p.device)
        o_stride_s, o_stride_h = target.stride(0), target.stride(1)
    alibi = p.alibi_slopes if p.alibi_slopes is not None else p.seq_lens  # unread without USE_ALIBI
    kc, vc, q = p.key_cache, p.value_cache, p.query
    kern.paged_attention_kernel[(pl["grid"],)](
        q, kc, vc, p.block_table, p.seq_lens, alibi, target, lse,
        p.scale, p.sliding_window, pl["pages_per_split"], pl["num_tasks"], d["num_kv_heads"],
        kc.shape[0], p.block_table.shape[1],
        q.stride(0), q.stride(1), kc.stride(0), kc.stride(1), kc.stride(2),
        vc.stride(0), vc.stride(1), vc.stride(2), p.block_table.stride(0), o_stride_s, o_stride_h,
        SOFTCAP=p.softcap, USE_ALIBI=p.alibi_slopes is not None,
        DOT_FP32=_device.dots_in_fp32(backend),
        **pl["constexprs"], **options)
    if ns > 1:
        merge_options = {k: v for k, v in options.items() if k != "num_stages"}
        kern.paged_attention_merge_kernel[(pl["merge_grid"],)](
            target, lse, out, s * h, h, out.stride(0), out.stride(1),
            **pl["merge_constexprs"], **merge_options)


def _run(p: Problem) -> None:
    decision = dispatch.decide(SPEC, p)
    if decision.path == "triton":
        _launch(p, decision.config)
    elif decision.backend == "npu":
        from ..fallback_atb import paged_attention as atb

        atb.paged_attention(p.query, p.key_cache, p.value_cache, p.block_table, p.seq_lens, p.out,
                            scale=p.scale, sliding_window=p.sliding_window, softcap=p.softcap,
                            alibi_slopes=p.alibi_slopes, seq_lens_host=p.seq_lens_host,
                            block_table_host=p.block_table_host)
    else:
        p.out.copy_(ref.paged_attention(p.query, p.key_cache, p.value_cache, p.block_table, p.seq_lens,
                                        p.scale, p.sliding_window, p.softcap, p.alibi_slopes))


@opaque_op("ascend_kernels::paged_attention", mutates_args=("out",))
def _paged_attention_op(query: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor,
                        block_table: torch.Tensor, seq_lens: torch.Tensor, out: torch.Tensor,
                        scale: float, sliding_window: int, softcap: float,
                        alibi_slopes: Optional[torch.Tensor], seq_lens_host: Optional[torch.Tensor],
                        block_table_host: Optional[torch.Tensor], split_size: int) -> None:
    _run(Problem(query, key_cache, value_cache, block_table, seq_lens, out, scale, sliding_window,
                 softcap, alibi_slopes, seq_lens_host, block_table_host, split_size))


@_paged_attention_op.register_fake
def _(query, key_cache, value_cache, block_table, seq_lens, out, scale, sliding_window, softcap,
      alibi_slopes, seq_lens_host, block_table_host, split_size) -> None:
    return None


def _prepare(*args, **kwargs) -> Problem:
    return _validate(*args, **kwargs)


def paged_attention(query: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor,
                    block_table: torch.Tensor, seq_lens: torch.Tensor, *, scale: Optional[float] = None,
                    sliding_window: Optional[int] = None, softcap: float = 0.0,
                    alibi_slopes: Optional[torch.Tensor] = None, out: Optional[torch.Tensor] = None,
                    seq_lens_host: Optional[torch.Tensor] = None,
                    block_table_host: Optional[torch.Tensor] = None,
                    split_size: Optional[int] = None) -> torch.Tensor:
    """Decode attention over a paged KV cache (vLLM's paged_attention / unified decode).

    query:        [num_seqs, num_heads, head_size], fp16/bf16/fp32: one new token per sequence,
                  at position seq_lens[i] - 1 (its key/value already in the cache).
    key_cache, value_cache: [num_blocks, block_size, num_kv_heads, head_size], query's dtype;
                  num_heads a multiple of num_kv_heads (GQA: head h reads kv head h // group).
    block_table:  int32 [num_seqs, max_blocks]: page ids of each sequence. Entries past
                  ceil(seq_lens[i] / block_size) are never read (garbage, even out-of-range ids,
                  is fine).
    seq_lens:     int32 [num_seqs], on the device; 0 gives a 0 output row.
    scale:        softmax scale, default 1/sqrt(head_size).
    sliding_window: W > 0: the query sees only the last W keys [len - W, len).
    softcap:      > 0: scores become softcap * tanh(scores / softcap) (before ALiBi).
    alibi_slopes: fp32 [num_heads]: adds slope * (key_pos - query_pos) to the scores.
    out:          optional [num_seqs, num_heads, head_size] output (query's dtype), written in place.
    split_size:   tokens per split-KV partition, a multiple of block_size (default: env
                  ASCEND_KERNELS_PA_SPLIT_SIZE, else automatic). Fixing it makes every
                  sequence's result independent of the batch it runs in (batch invariance);
                  the automatic choice depends on the batch's shapes only (never on data).
    seq_lens_host, block_table_host: optional CPU (ideally pinned) int32 copies of seq_lens /
                  block_table. Why they exist: the Triton kernels read lengths and tables on the
                  device and never sync, so they ignore these; but the ATB fallback on Ascend
                  (torch_npu._npu_paged_attention / npu_fused_infer_attention_score) takes the
                  context lengths as a HOST tensor/list. Passing seq_lens_host lets that path run
                  without a device->host copy; without it the fallback copies seq_lens to the
                  host, a documented sync (and not graph capturable). block_table_host is
                  accepted for the same metadata contract (vLLM-Ascend keeps both); no current
                  path needs it.

    Nothing allocated depends on data (split-KV buffers are sized from block_table.shape), so
    the Triton path captures in one CUDA graph / NPUGraph that replays for any seq_lens and
    block tables. Returns `out` (allocated when not given).
    """
    p = _validate(query, key_cache, value_cache, block_table, seq_lens, scale=scale,
                  sliding_window=sliding_window, softcap=softcap, alibi_slopes=alibi_slopes, out=out,
                  seq_lens_host=seq_lens_host, block_table_host=block_table_host, split_size=split_size)
    if p.out is None:
        p.out = torch.empty_like(query)
    _paged_attention_op(p.query, p.key_cache, p.value_cache, p.block_table, p.seq_lens, p.out,
                        p.scale, p.sliding_window, p.softcap, p.alibi_slopes, p.seq_lens_host,
                        p.block_table_host, p.split_size)
    return p.out


def _make_problem(shape: dict, device: torch.device, dtype: torch.dtype = torch.bfloat16) -> Problem:
    """Fresh random inputs: seqs, heads, kv_heads, head_size, block_size, context (tokens per
    sequence; every sequence this long), optional num_blocks (default: just enough, shuffled)."""
    s, h, kvh, hd = shape["seqs"], shape["heads"], shape["kv_heads"], shape["head_size"]
    bs, ctx = shape["block_size"], shape["context"]
    max_blocks = -(-ctx // bs)
    num_blocks = shape.get("num_blocks", s * max_blocks)
    q = torch.randn(s, h, hd, device=device, dtype=dtype)
    kc = torch.randn(num_blocks, bs, kvh, hd, device=device, dtype=dtype)
    vc = torch.randn(num_blocks, bs, kvh, hd, device=device, dtype=dtype)
    bt = torch.randperm(num_blocks, device=device)[: s * max_blocks] % num_blocks
    bt = bt.to(torch.int32).reshape(s, max_blocks)
    lens = torch.full((s,), ctx, dtype=torch.int32, device=device)
    return Problem(q, kc, vc, bt, lens, torch.empty_like(q), 1.0 / math.sqrt(hd), 0, 0.0, None)


def _ascend_cases(shape: dict, config: dict) -> list:
    """The Ascend compile check's cases for one suite shape and one npu config."""
    from .. import ascend_check

    dtype = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}[shape.get("dtype", "bfloat16")]
    dims = {"num_seqs": shape["seqs"], "num_heads": shape["heads"], "num_kv_heads": shape["kv_heads"],
            "head_size": shape["head_size"], "block_size": shape["block_size"],
            "max_blocks": -(-shape["context"] // shape["block_size"])}
    elem = 4 if dtype == "fp32" else 2
    if dims["block_size"] < 16 or dims["head_size"] > MAX_HEAD_SIZE or \
            dims["block_size"] * next_pow2(dims["head_size"]) * elem > NPU_TILE_BYTES:
        return []  # _capability sends these shapes to fallback_atb on npu: nothing to lower
    cores = shape.get("cores", 20)  # Ascend 910B: 20-24 cube cores
    pl = plan(dims, config, "npu", cores, shape.get("split_size", 0))
    ns = pl["num_splits"]
    label = ",".join(f"{k}={v}" for k, v in shape.items())
    softcap = float(shape.get("softcap", 0.0))
    alibi = bool(shape.get("alibi", False))
    sig = {"q_ptr": f"*{dtype}", "k_cache_ptr": f"*{dtype}", "v_cache_ptr": f"*{dtype}",
           "block_table_ptr": "*i32", "seq_lens_ptr": "*i32", "alibi_ptr": "*fp32" if alibi else "*i32",
           "out_ptr": f"*{dtype}" if ns == 1 else "*fp32", "lse_ptr": "*fp32" if ns > 1 else f"*{dtype}",
           "scale": "fp32", "window": "i32", "pages_per_split": "i32", "num_tasks": "i32",
           "num_kv_heads": "i32", "num_blocks": "i32", "max_blocks": "i32"}
    for name in ("q_stride_s", "q_stride_h", "k_stride_b", "k_stride_s", "k_stride_h", "v_stride_b",
                 "v_stride_s", "v_stride_h", "bt_stride_s", "o_stride_s", "o_stride_h"):
        sig[name] = "i32"
    cases = [ascend_check.KernelCase(
        op=OP, kernel=kern.paged_attention_kernel, signature=sig,
        constexprs={**pl["constexprs"], "SOFTCAP": softcap, "USE_ALIBI": alibi,
                    "DOT_FP32": _device.dots_in_fp32("npu")},
        config=config, label=label + f",splits={ns}")]
    if ns > 1:
        msig = {"part_ptr": "*fp32", "lse_ptr": "*fp32", "out_ptr": f"*{dtype}", "num_rows": "i32",
                "num_heads": "i32", "o_stride_s": "i32", "o_stride_h": "i32"}
        cases.append(ascend_check.KernelCase(
            op=OP, kernel=kern.paged_attention_merge_kernel, signature=msig,
            constexprs=dict(pl["merge_constexprs"]), config=config, label=label + f",splits={ns}"))
    return cases


SPEC = dispatch.register(dispatch.OpSpec(
    name=OP, prepare=_prepare, capability=_capability, configs=CONFIGS,
    default_config=_default_config, tuning_key=_tuning_key, launch=_launch,
    kernels=(kern.paged_attention_kernel, kern.paged_attention_merge_kernel),
    ascend_cases=_ascend_cases, make_problem=_make_problem))
