"""paged_attention: decode attention (one query token per sequence) over a paged KV cache."""
from __future__ import annotations

import dataclasses
import os
from typing import Optional, Union

import torch

from ..kernels import paged_attention as kern
from ..launcher import device as _device
from ..launcher.device import backend_flag
from ..launcher.configs import split_config
from ..launcher.launch import Launch, zeroed_counters
from ..launcher.op import Output, define
from ..reference import paged_attention as ref
from ._cache import (CACHE_DTYPES, FP8_DTYPES, QUANT_OF, cache_constexprs, check_kv_caches, check_scales,
                     fresh_scale, no_fp8)
from ._common import (FLOAT_DTYPES, atb_fallback, check_dim, check_float, check_int,
                      check_same_device, check_tensor, dtype_name, first_bad, next_pow2,
                      not_contiguous_in_last_dim, softmax_scale_of)

SPLIT_SIZE_ENV = "ASCEND_KERNELS_PA_SPLIT_SIZE"
MAX_SPLITS = 1024           # fixed split sizes giving more splits than this are refused
AUTO_MAX_SPLITS = 64        # the automatic choice stays under this
# the automatic choice gives each split at least this many tokens (H200, 4 x 1024 tokens, 32/8
# heads: 2 splits of 512 took 23.0 us, 8 of 128 17.6 us in graph replay)
MIN_SPLIT_TOKENS = 128
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
    out: torch.Tensor                # None until made (allocated on every call when not given)
    scale: float
    sliding_window: int           # 0 = none
    softcap: float
    alibi_slopes: Optional[torch.Tensor]
    seq_lens_host: Optional[torch.Tensor] = None
    block_table_host: Optional[torch.Tensor] = None
    split_size: int = 0           # tokens per split (fixed, batch invariant); 0 = automatic
    k_scale: Optional[torch.Tensor] = None   # int8/fp8 caches: fp32 [1] or [num_kv_heads]
    v_scale: Optional[torch.Tensor] = None

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
    return check_int("split_size", split_size, 0, " (tokens per split)")


def capability(backend: str, p: Problem) -> tuple[bool, str]:
    why = not_contiguous_in_last_dim({"query": p.query, "key_cache": p.key_cache,
                                      "value_cache": p.value_cache, "out": p.out}, "head_size")
    if why:
        return False, why
    d = p.dims
    if d["block_size"] < 16:
        return False, f"block_size {d['block_size']} < 16: tl.dot needs at least 16 keys per page"
    if d["head_size"] > MAX_HEAD_SIZE:
        return False, f"head_size {d['head_size']} > {MAX_HEAD_SIZE}"
    why = no_fp8(backend, p.key_cache.dtype)
    if why:
        return False, f"cache dtype {why}"
    tile = d["block_size"] * next_pow2(d["head_size"]) * p.key_cache.element_size()
    smem = _device.properties(p.query.device)["smem_bytes"]
    if backend == "cuda" and smem and 2 * tile + SMEM_RESERVE > smem:
        return False, (f"one K and one V page tile take {2 * tile} bytes (block_size x head_size "
                       f"each), over the {smem} bytes of shared memory a program may use")
    if backend == "npu":
        tile = tile // p.key_cache.element_size() * p.query.element_size()  # int8 pages are converted in UB
        if tile > NPU_TILE_BYTES:
            return False, (f"one KV page tile is {tile} bytes (block_size x head_size), over the "
                           f"{NPU_TILE_BYTES} bytes the Ascend UB budget allows per tile")
    return True, "the kernel handles these shapes, strides, dtypes and options"


def _step_kv_bytes(dims: dict, config: dict, elem: int) -> int:
    """Bytes of the K and V tiles of one CUDA loop step (pages per step x page x head size)."""
    return (2 * _pages_per_step(dims, config, "cuda") * next_pow2(dims["block_size"])
            * max(16, next_pow2(dims["head_size"])) * elem)


def fit_shared_memory(p: Problem, config: dict) -> dict:
    """CUDA: fewer stages, then fewer pages per step, until the staged K/V tiles fit the shared
    memory one program may use (capability sent away pages too large for one step in 2 stages)."""
    smem = _device.properties(p.device)["smem_bytes"]
    if not smem or "num_stages" not in config:
        return config
    cfg, d, elem = dict(config), p.dims, p.key_cache.element_size()
    while (cfg["num_stages"] - 1) * _step_kv_bytes(d, cfg, elem) + SMEM_RESERVE > smem:
        if cfg["num_stages"] > 2:
            cfg["num_stages"] -= 1
        elif cfg.get("grid_step_tokens", 0) > d["block_size"]:
            cfg["grid_step_tokens"] //= 2
        else:
            break
    return cfg


def check_values(p: Problem) -> None:
    """ASCEND_KERNELS_CHECK_BOUNDS=1: report the first bad length or page id (syncs the host).
    Lengths must lie in [0, max_blocks * block_size]; the page ids a sequence reads (its table
    entries up to ceil(len / block_size), from the window's first page) in [0, num_blocks)."""
    d = p.dims
    capacity = d["max_blocks"] * d["block_size"]
    lens = p.seq_lens.long()
    first_bad("seq_lens", (lens < 0) | (lens > capacity),
              lambda i: f"= {int(lens[i])} is outside [0, {capacity}] (block_table's "
                        f"{d['max_blocks']} pages x block_size {d['block_size']})")
    pages = (lens + d["block_size"] - 1) // d["block_size"]
    first = (lens - p.sliding_window).clamp(min=0) // d["block_size"] if p.sliding_window else 0 * lens
    col = torch.arange(d["max_blocks"], device=lens.device)[None, :]
    used = (col < pages[:, None]) & (col >= first[:, None])
    num_blocks = p.key_cache.shape[0]
    first_bad("block_table", used & ((p.block_table < 0) | (p.block_table >= num_blocks)),
              lambda i: f"= {int(p.block_table[i])} is outside the cache's {num_blocks} blocks "
                        f"(sequence {i[0]} reads {int(pages[i[0]])} pages)")


def _launches(p: Problem, config: dict, backend: str) -> list:
    d = p.dims
    if d["num_seqs"] == 0 or d["num_heads"] == 0:
        return []
    if backend == "cuda":
        config = fit_shared_memory(p, config)
    _, options = split_config(config, backend)
    pl = plan(d, config, backend, _device.grid_cap(p.device, cube=True), p.split_size,
              vector_cores=_device.grid_cap(p.device, cube=False))
    ns = pl["num_splits"]
    out, q, kc, vc = p.out, p.query, p.key_cache, p.value_cache
    s, h, hd = q.shape
    # one launch: the last split of each task merges; not while a graph is being captured before
    # the counters exist (they must be zeroed outside the graph)
    arrivals = zeroed_counters.get(p.device, s * d["num_kv_heads"]) if (
        ns > 1 and backend_flag(backend, "MERGE_IN_KERNEL") and config.get("MERGE_LAST", True)) else None
    merge_last = arrivals is not None
    if ns == 1:
        target, lse = out, out  # lse unread when NUM_SPLITS == 1
    else:
        # sized from static shapes only: one CUDA graph replays for any seq_lens
        target = torch.empty((s, h, ns, hd), dtype=torch.float32, device=p.device)
        lse = torch.empty((s, h, ns), dtype=torch.float32, device=p.device)
    args = dict(
        q_ptr=q, k_cache_ptr=kc, v_cache_ptr=vc, seq_lens_ptr=p.seq_lens,
        # an empty table: any int32 tensor, so that the clamped page-id prefetch reads memory
        block_table_ptr=p.block_table if d["max_blocks"] else p.seq_lens,
        alibi_ptr=p.alibi_slopes if p.alibi_slopes is not None else p.seq_lens,  # unread without ALiBi
        # unread without quantization
        k_scale_ptr=p.k_scale if p.k_scale is not None else p.seq_lens,
        v_scale_ptr=p.v_scale if p.v_scale is not None else p.seq_lens,
        out_ptr=target, lse_ptr=lse, scale=p.scale, window=p.sliding_window,
        pages_per_split=pl["pages_per_split"], num_tasks=pl["num_tasks"], num_kv_heads=d["num_kv_heads"],
        num_blocks=kc.shape[0], max_blocks=p.block_table.shape[1],
        q_stride_s=q.stride(0), q_stride_h=q.stride(1), k_stride_b=kc.stride(0), k_stride_s=kc.stride(1),
        k_stride_h=kc.stride(2), v_stride_b=vc.stride(0), v_stride_s=vc.stride(1), v_stride_h=vc.stride(2),
        bt_stride_s=p.block_table.stride(0) if d["max_blocks"] else 0, o_stride_s=target.stride(0),
        o_stride_h=target.stride(1), final_ptr=out, f_stride_s=out.stride(0), f_stride_h=out.stride(1),
        arrivals_ptr=arrivals if merge_last else p.seq_lens)  # unread without MERGE_LAST
    constexprs = dict(pl["constexprs"], SOFTCAP=p.softcap, USE_ALIBI=p.alibi_slopes is not None,
                      # quantized caches on CUDA: dots in fp16 (kernels/_quant.cache_tile_as); the
                      # config's FP16_DOTS False keeps them in the query's dtype
                      FP16_DOTS=kc.dtype in QUANT_OF and backend_flag(backend, "QUANT_DOTS_FP16")
                      and bool(config.get("FP16_DOTS", True)),
                      **cache_constexprs(kc.dtype, p.k_scale, backend))
    constexprs.update(MERGE_LAST=merge_last, BLOCK_S=pl["merge_constexprs"]["BLOCK_S"])
    launches = [Launch(kern.paged_attention_kernel, (pl["grid"],), args, constexprs, options)]
    if ns > 1 and not merge_last:
        merge = dict(part_ptr=target, lse_ptr=lse, out_ptr=out, num_rows=s * h, num_heads=h,
                     o_stride_s=out.stride(0), o_stride_h=out.stride(1))
        launches.append(Launch(kern.paged_attention_merge_kernel, (pl["merge_grid"],), merge,
                               dict(pl["merge_constexprs"]),
                               {k: v for k, v in options.items() if k != "num_stages"}))
    return launches


def _atb_args(p: Problem) -> tuple:
    return ((p.query, p.key_cache, p.value_cache, p.block_table, p.seq_lens, p.out),
            dict(scale=p.scale, sliding_window=p.sliding_window, softcap=p.softcap,
                 alibi_slopes=p.alibi_slopes, seq_lens_host=p.seq_lens_host,
                 block_table_host=p.block_table_host, k_scale=p.k_scale, v_scale=p.v_scale))


def _reference(p: Problem) -> None:
    p.out.copy_(ref.paged_attention(p.query, p.key_cache, p.value_cache, p.block_table, p.seq_lens,
                                    p.scale, p.sliding_window, p.softcap, p.alibi_slopes,
                                    k_scale=p.k_scale, v_scale=p.v_scale))


def _tuning_key(p: Problem) -> tuple[dict, dict]:
    d = p.dims
    fixed = {"heads": d["num_heads"], "kv_heads": d["num_kv_heads"], "head_size": d["head_size"],
             "block_size": d["block_size"], "dtype": dtype_name(p.query.dtype),
             "cache_dtype": dtype_name(p.key_cache.dtype),
             "softcap": p.softcap > 0, "alibi": p.alibi_slopes is not None,
             "window": p.sliding_window > 0, "split_size": p.split_size}
    return fixed, {"seqs": d["num_seqs"], "context": d["max_blocks"] * d["block_size"]}


def features(p: Problem) -> dict:
    fixed, data_dependent = _tuning_key(p)
    tasks = p.dims["num_seqs"] * p.dims["num_kv_heads"]
    return {**fixed, **data_dependent, "tasks_per_core": tasks / _device.grid_cap(p.device, cube=True)}


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


def plan(dims: dict, config: dict, backend: str, cores: int, split_size: int = 0,
         vector_cores: Optional[int] = None) -> dict:
    """Everything about a launch that follows from shapes and the config (never from data):
    constexprs of both kernels, number of splits, fixed pages per split, grid sizes. `cores`
    sizes the attention grid (cube cores: it has tl.dot), `vector_cores` (default `cores`) the
    vector-only merge's."""
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
    merge_grid = _device.grid_size(vector_cores or cores, s * h, ppc)
    return {
        "num_splits": num_splits, "pages_per_split": pages_per_split, "num_tasks": n_tasks,
        "grid": grid, "merge_grid": merge_grid,
        # Ascend's tl.dot takes any M (the cube pads to 16 itself): padding rows there would only
        # add softmax vector work; upstream Triton and both interpreters need M >= 16
        "constexprs": {"GQA": gqa, "BLOCK_M": next_pow2(gqa) if backend == "npu" else max(16, next_pow2(gqa)),
                       "HEAD_SIZE": hd,
                       "BLOCK_D": max(16, next_pow2(hd)), "BLOCK_SIZE": bs, "BLOCK_N": next_pow2(bs),
                       "PAGES_PER_STEP": pages_per_step, "NUM_SPLITS": num_splits},
        "merge_constexprs": {"NUM_SPLITS": num_splits,
                             "BLOCK_S": min(MERGE_BLOCK_S, next_pow2(num_splits)),
                             "HEAD_SIZE": hd, "BLOCK_D": max(16, next_pow2(hd))},
    }


@define(problem=Problem, kernel_module=kern, capability=capability, launches=_launches,
        fallbacks={"fallback_atb": atb_fallback("paged_attention", _atb_args), "reference": _reference}, tuning_key=_tuning_key,
        features=features, result=lambda p: p.out, outputs=("out",),
        fresh={"out": Output(lambda p: (p.query.shape, p.query.dtype)),
               "k_scale": fresh_scale("k_scale"), "v_scale": fresh_scale("v_scale")},
        check_values=check_values)
def paged_attention(query: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor,
                    block_table: torch.Tensor, seq_lens: torch.Tensor, *, scale: Optional[float] = None,
                    sliding_window: Optional[int] = None, softcap: float = 0.0,
                    alibi_slopes: Optional[torch.Tensor] = None, out: Optional[torch.Tensor] = None,
                    seq_lens_host: Optional[torch.Tensor] = None,
                    block_table_host: Optional[torch.Tensor] = None,
                    split_size: Optional[int] = None, k_scale: Union[torch.Tensor, float, None] = None,
                    v_scale: Union[torch.Tensor, float, None] = None) -> torch.Tensor:
    """Decode attention over a paged KV cache (vLLM's paged_attention / unified decode).

    query:        [num_seqs, num_heads, head_size], fp16/bf16/fp32: one new token per sequence,
                  at position seq_lens[i] - 1 (its key/value already in the cache).
    key_cache, value_cache: [num_blocks, block_size, num_kv_heads, head_size], query's dtype,
                  or int8 / fp8 (CUDA only) written by reshape_and_cache with k_scale/v_scale
                  (a query of fp16/bf16 then); num_heads a multiple of num_kv_heads (GQA: head
                  h reads kv head h // group).
    block_table:  int32 [num_seqs, max_blocks]: page ids of each sequence. Entries past
                  ceil(seq_lens[i] / block_size) are never read (garbage, even out-of-range ids,
                  is fine).
    seq_lens:     int32 [num_seqs], on the device; 0 gives a 0 output row.
    scale:        softmax scale, default 1/sqrt(head_size).
    sliding_window: W > 0: the query sees only the last W keys [len - W, len).
    softcap:      > 0: scores become softcap * tanh(scores / softcap) (before ALiBi).
    alibi_slopes: fp32 [num_heads]: adds slope * (key_pos - query_pos) to the scores.
    out:          optional [num_seqs, num_heads, head_size] output (query's dtype), written in place.
    k_scale, v_scale: int8/fp8 caches only (then required): the cache holds x / scale; a float,
                  a 1-element fp32 tensor (per tensor) or fp32 [num_kv_heads] (per kv head).
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
    check_tensor("query", query, ndim=3, dtypes=FLOAT_DTYPES)
    check_tensor("key_cache", key_cache, ndim=4, dtypes=CACHE_DTYPES)
    check_tensor("value_cache", value_cache, ndim=4, dtypes=CACHE_DTYPES)
    check_tensor("block_table", block_table, ndim=2, dtypes=(torch.int32,))
    check_tensor("seq_lens", seq_lens, ndim=1, dtypes=(torch.int32,))
    dev = check_same_device([("query", query), ("key_cache", key_cache), ("value_cache", value_cache),
                       ("block_table", block_table), ("seq_lens", seq_lens),
                       ("alibi_slopes", alibi_slopes), ("out", out)])
    num_seqs, num_heads, head_size = query.shape
    check_kv_caches(key_cache, value_cache)
    if key_cache.dtype in QUANT_OF:
        if query.dtype not in (torch.float16, torch.bfloat16):
            raise TypeError(f"query dtype {query.dtype}: a {key_cache.dtype} cache is read with an "
                            f"fp16/bf16 query")
        if dev.type == "npu" and key_cache.dtype in FP8_DTYPES:
            raise TypeError(f"key_cache dtype {key_cache.dtype}: Ascend has no fp8; use an int8 cache")
    elif key_cache.dtype != query.dtype:
        raise TypeError(f"key_cache dtype {key_cache.dtype} differs from query's {query.dtype} "
                        f"(int8/fp8 caches take k_scale/v_scale)")
    check_dim("key_cache", key_cache, 3, head_size, "head_size of query")
    num_kv_heads = key_cache.shape[2]
    if num_kv_heads == 0 or num_heads % num_kv_heads:
        raise ValueError(f"query's num_heads ({num_heads}) must be a multiple of key_cache's "
                         f"num_kv_heads ({num_kv_heads})")
    k_scale, v_scale = check_scales(key_cache.dtype, k_scale, v_scale, num_kv_heads, dev)
    if key_cache.shape[1] == 0:
        raise ValueError(f"key_cache has block_size 0, shape {tuple(key_cache.shape)}")
    check_dim("block_table", block_table, 0, num_seqs, "num_seqs of query")
    check_dim("seq_lens", seq_lens, 0, num_seqs, "num_seqs of query")
    scale = softmax_scale_of("scale", scale, head_size)
    sliding_window = 0 if sliding_window is None else check_int("sliding_window", sliding_window, 1,
                                                                " (keys seen) or None")
    softcap = check_float("softcap", softcap, what=" (0 = off)")
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
    return Problem(query, key_cache, value_cache, block_table, seq_lens, out, scale,
                   sliding_window, softcap, alibi_slopes, seq_lens_host, block_table_host,
                   split_size, k_scale, v_scale)


