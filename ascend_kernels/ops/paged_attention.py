"""paged_attention: decode attention (one query token per sequence) over a paged KV cache."""
from __future__ import annotations

import dataclasses
import os
from typing import Optional, Union

import torch

from ..kernels import paged_attention as kern
from ..launcher import device as _device
from ..launcher.checks import (FLOAT_DTYPES, check_dim, check_float, check_int, check_out, check_tensor,
                               check_tensors, dtype_name, next_pow2)
from ..launcher.configs import split_config
from ..launcher.launch import Launch, zeroed_counters
from ..launcher.op import Output, define
from ..reference import paged_attention as ref
from ._cache import (CACHE_DTYPES, FRESH_SCALES, QUANT_OF, cache_constexprs, check_caches, check_pages,
                     check_query_cache, check_scales, kernel_refusal, scale_args)
from ._common import fallbacks, softmax_scale_of

SPLIT_SIZE_ENV = "ASCEND_KERNELS_PA_SPLIT_SIZE"
MAX_SPLITS = 1024           # fixed split sizes giving more splits than this are refused
MAX_HEAD_SIZE = 256
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

    device = property(lambda self: self.query.device)

    @property
    def dims(self) -> dict:
        s, h, d = self.query.shape
        _, bs, kvh, _ = self.key_cache.shape
        return {"num_seqs": s, "num_heads": h, "num_kv_heads": kvh, "head_size": d,
                "block_size": bs, "max_blocks": self.block_table.shape[1]}


def _split_size_of(split_size) -> int:
    if split_size is None:
        env = os.environ.get(SPLIT_SIZE_ENV, "").strip()
        try:
            split_size = int(env or 0)
        except ValueError:
            raise ValueError(f"{SPLIT_SIZE_ENV}={env!r}: expected a number of tokens") from None
    return check_int("split_size", split_size, 0, " (tokens per split)")


def capability(backend: str, p: Problem) -> tuple[bool, str]:
    why = kernel_refusal(backend, {"query": p.query, "key_cache": p.key_cache, "value_cache": p.value_cache,
                                   "out": p.out}, p.key_cache.dtype)
    if why:
        return False, why
    d = p.dims
    if d["block_size"] < 16:
        return False, f"block_size {d['block_size']} < 16: tl.dot needs at least 16 keys per page"
    if d["head_size"] > MAX_HEAD_SIZE:
        return False, f"head_size {d['head_size']} > {MAX_HEAD_SIZE}"
    tile = d["block_size"] * next_pow2(d["head_size"]) * p.key_cache.element_size()
    smem = _device.properties(p.query.device)["smem_bytes"]
    if backend == "cuda" and smem and 2 * tile + kern.SMEM_RESERVE > smem:
        return False, (f"one K and one V page tile take {2 * tile} bytes (block_size x head_size "
                       f"each), over the {smem} bytes of shared memory a program may use")
    if backend == "npu":
        tile = tile // p.key_cache.element_size() * p.query.element_size()  # int8 pages are converted in UB
        if tile > NPU_TILE_BYTES:
            return False, (f"one KV page tile is {tile} bytes (block_size x head_size), over the "
                           f"{NPU_TILE_BYTES} bytes the Ascend UB budget allows per tile")
    return True, "the kernel handles these shapes, strides, dtypes and options"


def check_values(p: Problem) -> None:
    """ASCEND_KERNELS_CHECK_BOUNDS=1: the first length or page id (of the window's pages) out of
    range (syncs the host; see _cache.check_pages)."""
    check_pages("seq_lens", p.seq_lens, p.block_table, p.dims["block_size"], p.key_cache.shape[0],
                p.sliding_window)


def _launches(p: Problem, config: dict, backend: str) -> list:
    d = p.dims
    if d["num_seqs"] == 0 or d["num_heads"] == 0:
        return []
    out, q, kc, vc = p.out, p.query, p.key_cache, p.value_cache
    if backend == "cuda":
        config = kern.fit_shared_memory(d, config, _device.properties(p.device)["smem_bytes"],
                                        kc.element_size())
    _, options = split_config(config, backend)
    pl = kern.plan(d, config, backend, _device.grid_cap(p.device, cube=True), p.split_size,
                   vector_cores=_device.grid_cap(p.device, cube=False))
    ns = pl["num_splits"]
    s, h, hd = q.shape
    # MERGE_LAST, one launch: the last split of each task merges; not while a graph is being
    # captured before the counters exist (they must be zeroed outside the graph)
    arrivals = zeroed_counters.get(p.device, s * d["num_kv_heads"]) if (
        ns > 1 and _device.backend_flag(backend, "LAST_ARRIVAL") and config.get("MERGE_LAST", True)) else None
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
        **scale_args(p, p.seq_lens),  # unread without quantization
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
                      FP16_DOTS=kc.dtype in QUANT_OF and _device.backend_flag(backend, "QUANT_DOTS_FP16")
                      and bool(config.get("FP16_DOTS", True)),
                      **cache_constexprs(kc.dtype, p.k_scale, backend),
                      MERGE_LAST=merge_last, BLOCK_S=pl["merge_constexprs"]["BLOCK_S"])
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
             "cache_dtype": dtype_name(p.key_cache.dtype), "softcap": p.softcap > 0,
             "alibi": p.alibi_slopes is not None, "window": p.sliding_window > 0, "split_size": p.split_size}
    return fixed, {"seqs": d["num_seqs"], "context": d["max_blocks"] * d["block_size"]}


def features(p: Problem) -> dict:
    fixed, data_dependent = _tuning_key(p)
    tasks = p.dims["num_seqs"] * p.dims["num_kv_heads"]
    return {**fixed, **data_dependent, "tasks_per_core": tasks / _device.grid_cap(p.device, cube=True),
            "quantized": p.key_cache.dtype in QUANT_OF}


@define(problem=Problem, kernel_module=kern, capability=capability, launches=_launches,
        fallbacks=fallbacks("paged_attention", _atb_args, reference=_reference), tuning_key=_tuning_key,
        features=features, result=lambda p: p.out, outputs=("out",),
        fresh={"out": Output(lambda p: (p.query.shape, p.query.dtype)), **FRESH_SCALES},
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
    key_cache, value_cache: [num_blocks, block_size, num_kv_heads, head_size], query's dtype, or
                  int8 / fp8 (CUDA only; with an fp16/bf16 query) written by reshape_and_cache with
                  k_scale/v_scale; num_heads a multiple of num_kv_heads (GQA: head h reads kv head
                  h // group).
    block_table:  int32 [num_seqs, max_blocks]: page ids of each sequence; entries past
                  ceil(seq_lens[i] / block_size) are never read (garbage, even out-of-range ids, is fine).
    seq_lens:     int32 [num_seqs], on the device; 0 gives a 0 output row.
    scale:        softmax scale, default 1/sqrt(head_size).
    sliding_window: W > 0: the query sees only the last W keys [len - W, len).
    softcap:      > 0: scores become softcap * tanh(scores / softcap) (before ALiBi).
    alibi_slopes: fp32 [num_heads]: adds slope * (key_pos - query_pos) to the scores.
    out:          optional [num_seqs, num_heads, head_size] output (query's dtype), written in place.
    k_scale, v_scale: int8/fp8 caches only (then required): the cache holds x / scale; a float,
                  a 1-element fp32 tensor (per tensor) or fp32 [num_kv_heads] (per kv head).
    split_size:   tokens per split-KV partition, a multiple of block_size (default: env
                  ASCEND_KERNELS_PA_SPLIT_SIZE, else automatic, from the batch's shapes only, never
                  its data). A fixed one makes each sequence's result independent of the batch it
                  runs in (batch invariance).
    seq_lens_host, block_table_host: optional CPU (ideally pinned) int32 copies of seq_lens /
                  block_table. The Triton kernels read both on the device, never sync, and ignore
                  these; the ATB fallback on Ascend (torch_npu._npu_paged_attention /
                  npu_fused_infer_attention_score) takes the context lengths as a HOST
                  tensor/list: seq_lens_host spares it a device->host copy of seq_lens (a
                  documented sync, not graph capturable). block_table_host is accepted for the
                  same metadata contract (vLLM-Ascend keeps both); no current path needs it.

    Nothing allocated depends on data (split-KV buffers are sized from block_table.shape), so
    the Triton path captures in one CUDA graph / NPUGraph that replays for any seq_lens and
    block tables. Returns `out` (allocated when not given).
    """
    i32 = (torch.int32,)
    dev = check_tensors({"query": (query, 3, FLOAT_DTYPES), "key_cache": (key_cache, 4, CACHE_DTYPES),
                         "value_cache": (value_cache, 4, CACHE_DTYPES), "block_table": (block_table, 2, i32),
                         "seq_lens": (seq_lens, 1, i32)}, ("alibi_slopes", alibi_slopes), ("out", out))
    num_seqs, num_heads, head_size = query.shape
    check_caches("key_cache", key_cache, "value_cache", value_cache, dev)
    num_kv_heads = check_query_cache("query", query, "key_cache", key_cache, True)
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
    check_out(out, query, "query")
    for name, host, like in (("seq_lens_host", seq_lens_host, seq_lens),
                             ("block_table_host", block_table_host, block_table)):
        if host is not None:
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


