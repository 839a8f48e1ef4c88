"""flash_attention: varlen / paged prefill attention (causal, windows, softcap, GQA, lse)."""
from __future__ import annotations

import dataclasses
from typing import Optional, Union

import torch

from ..kernels import flash_attention as kern
from ..launcher import device as _device
from ..launcher.checks import (FLOAT_DTYPES, check_dim, check_float, check_int, check_out, check_same_device,
                               check_tensor, dtype_name, first_bad, next_pow2)
from ..launcher.configs import split_config
from ..launcher.launch import Launch
from ..launcher.op import Output, define
from ._cache import (CACHE_DTYPES, FRESH_SCALES, HALF_DTYPES, QUANT_OF, cache_constexprs, check_caches,
                     check_pages, check_query_cache, check_scales, kernel_refusal, scale_args)
from ._common import fallbacks, softmax_scale_of

TMA_MIN_TOKENS = 256  # query tokens from which K/V go through tensor descriptors (CUDA Hopper+)
MAX_HEAD_SIZE = 256


@dataclasses.dataclass
class Problem:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    cu_seqlens_q: torch.Tensor
    max_seqlen_q: int
    cu_seqlens_k: Optional[torch.Tensor]
    seqused_k: Optional[torch.Tensor]
    block_table: Optional[torch.Tensor]
    softmax_scale: float
    window_left: int
    window_right: int
    softcap: float
    out: torch.Tensor              # None until made (allocated on every call when not given)
    return_lse: bool
    k_scale: Optional[torch.Tensor]  # fp32 [1] or [num_kv_heads] for an int8/fp8 cache, else None
    v_scale: Optional[torch.Tensor]  # (a host float until made a tensor, on every call)
    lse: torch.Tensor = None  # [num_heads, total_q] fp32 ([0] without return_lse), every call

    device = property(lambda self: self.q.device)
    paged = property(lambda self: self.block_table is not None)
    batch = property(lambda self: self.cu_seqlens_q.numel() - 1)
    num_heads = property(lambda self: self.q.shape[1])
    num_kv_heads = property(lambda self: self.k.shape[-2])
    head_size = property(lambda self: self.q.shape[2])
    block_size = property(lambda self: self.k.shape[1] if self.paged else 0)  # 0 = varlen


def resolve_window(causal: bool, window_left: int, window_right: int,
                   sliding_window: Optional[int]) -> tuple[int, int]:
    """(window_left, window_right) from the two entry points, -1 = unbounded: sliding_window=W
    means (W - 1, 0) (vLLM), causal means window_right = 0; contradictions raise."""
    check_int("window_left", window_left, -1, " (-1 = unbounded)")
    check_int("window_right", window_right, -1, " (-1 = unbounded)")
    if sliding_window is not None:
        check_int("sliding_window", sliding_window, 1, " (W keys: the query and W - 1 before it)")
        given = (window_left, window_right)
        if given != (-1, -1) and given != (sliding_window - 1, 0):
            raise ValueError(f"sliding_window={sliding_window} means (window_left, window_right) = "
                             f"({sliding_window - 1}, 0), but window_left={window_left}, "
                             f"window_right={window_right} were also given")
        window_left, window_right = sliding_window - 1, 0
    if causal:
        if window_right > 0:
            raise ValueError(f"causal=True sets window_right to 0, but window_right={window_right} "
                             f"was given (pass causal=False for a window that looks ahead)")
        window_right = 0
    return window_left, window_right


def _check_seq_index(name: str, t, numel: Optional[int], dev: torch.device) -> None:
    check_tensor(name, t, ndim=1, dtypes=(torch.int32,), device=dev)
    if numel is not None and t.numel() != numel:
        raise ValueError(f"{name} must have {numel} entries, got shape {tuple(t.shape)}")


def _capability(backend: str, p: Problem) -> tuple[bool, str]:
    if p.q.dtype not in HALF_DTYPES:
        return False, f"dtype {p.q.dtype}: the kernel's dots are fp16/bf16"
    if p.head_size > MAX_HEAD_SIZE:
        return False, f"head_size {p.head_size} > {MAX_HEAD_SIZE} (tiles would not fit on chip)"
    why = kernel_refusal(backend, {"q": p.q, "k": p.k, "v": p.v, "out": p.out}, p.k.dtype, "k/v")
    if why:
        return False, why
    bs = p.block_size
    if p.paged and (bs < 16 or bs > 256 or bs & (bs - 1)):
        return False, f"block_size {bs}: a paged KV tile is one page, which must be a power of two in [16, 256]"
    return True, "the kernel handles these shapes, strides and dtypes"


def _launches(p: Problem, config: dict, backend: str) -> list:
    if p.batch == 0 or p.max_seqlen_q == 0 or p.q.shape[0] == 0:
        return []
    constexprs, options = split_config(config, backend)
    # MULTI_PAGE: a paged tile of several whole pages (a gather: not on Ascend)
    multi_page = (config.get("MULTI_PAGE", False) and p.paged and backend != "npu"
                  and config["BLOCK_N"] > p.block_size)
    block_m, constexprs["BLOCK_N"] = kern.tiles(backend, config, p.head_size, 0 if multi_page else p.block_size,
                                                  p.softcap > 0, p.k.dtype in QUANT_OF)
    gqa = p.num_heads // p.num_kv_heads
    heads = kern.heads_per_task(config, gqa, block_m)
    constexprs.update(BLOCK_M=block_m, HEADS_PER_TASK=heads, HEADS_PAD=next_pow2(heads),
                      IO_BLOCKS=bool(config.get("IO_BLOCKS", False)) and heads > 1)
    q_tiles = -(-p.max_seqlen_q // (block_m // next_pow2(heads)))
    n_tasks = p.batch * q_tiles * p.num_kv_heads * (gqa // heads)
    grid = (_device.persistent_grid(p.device, n_tasks, config.get("grid_programs_per_core", 1), cube=True),)
    q, k, v, out = p.q, p.k, p.v, p.out
    lse = p.lse if p.return_lse else out  # unread without RETURN_LSE
    cu_k = p.cu_seqlens_k if p.cu_seqlens_k is not None else p.cu_seqlens_q
    used = p.seqused_k if p.seqused_k is not None else p.cu_seqlens_q
    bt = p.block_table if p.block_table is not None else p.cu_seqlens_q
    (kt, kh, kb), (vt, vh, vb) = kern.kv_strides(k, p.paged), kern.kv_strides(v, p.paged)
    block_d = max(16, next_pow2(p.head_size))
    # tensor descriptors cost the host about 7 us per call (two descriptors to build and encode:
    # H200, bench/results/h200/host_time.md), more than they save a prefill of a few hundred
    # tokens; the config's USE_TMA False turns them off for any size
    use_tma = (backend == "cuda" and q.shape[0] >= TMA_MIN_TOKENS and config.get("USE_TMA", True)
               and not multi_page and _device.properties(p.device)["tma"])
    descs = kern.tma_descriptors(k, v, p.paged, constexprs["BLOCK_N"], block_d) if use_tma else None
    k_desc, v_desc = descs or (k, v)  # unread without USE_TMA
    args = dict(
        q_ptr=q, k_ptr=k, v_ptr=v, k_desc=k_desc, v_desc=v_desc, out_ptr=out, lse_ptr=lse,
        cu_seqlens_q_ptr=p.cu_seqlens_q, cu_seqlens_k_ptr=cu_k, seqused_k_ptr=used, block_table_ptr=bt,
        **scale_args(p, bt),  # unread without quantization: any tensor will do
        sm_scale=p.softmax_scale, window_left=p.window_left, window_right=p.window_right,
        batch=p.batch, tiles_per_seq=q_tiles, total_q=q.shape[0], kv_limit=k.shape[0],
        max_blocks=bt.shape[1] if p.paged else 0,
        stride_qt=q.stride(0), stride_qh=q.stride(1), stride_kt=kt, stride_kh=kh, stride_kb=kb,
        stride_vt=vt, stride_vh=vh, stride_vb=vb, stride_ot=out.stride(0), stride_oh=out.stride(1),
        stride_lse_h=p.lse.stride(0) if p.return_lse else 0, stride_bt_b=bt.stride(0) if p.paged else 0)
    constexprs.update(
        NUM_KV_HEADS=p.num_kv_heads, GQA=gqa, HEAD_SIZE=p.head_size,
        BLOCK_D=block_d, PAGED=p.paged, PAGE_SIZE=max(p.block_size, 1),
        HAS_SEQUSED=p.seqused_k is not None, SOFTCAP=p.softcap, RETURN_LSE=p.return_lse,
        USE_TMA=descs is not None, PERSISTENT=grid[0] < n_tasks, MULTI_PAGE=multi_page,
        **cache_constexprs(p.k.dtype, p.k_scale, backend))
    return [Launch(kern.flash_attention_kernel, grid, args, constexprs, options)]


def _fallback_args(p: Problem) -> tuple:
    return ((p.q, p.k, p.v, p.cu_seqlens_q, p.cu_seqlens_k, p.seqused_k, p.block_table,
             p.softmax_scale, p.window_left, p.window_right, p.softcap),
            dict(k_scale=p.k_scale, v_scale=p.v_scale, out=p.out, return_lse=p.return_lse))


def _copy_lse(p: Problem, result) -> None:
    if p.return_lse:
        p.lse.copy_(result[1])


def _mask(p: Problem) -> str:
    if p.window_left < 0 and p.window_right < 0:
        return "none"
    return "causal" if p.window_left < 0 and p.window_right == 0 else "band"


def _tuning_key(p: Problem) -> tuple[dict, dict]:
    fixed = {"heads": p.num_heads, "kv_heads": p.num_kv_heads, "head_size": p.head_size,
             "dtype": dtype_name(p.q.dtype), "kv_dtype": dtype_name(p.k.dtype),
             "block_size": p.block_size, "mask": _mask(p), "softcap": p.softcap > 0}
    return fixed, {"max_seqlen_q": p.max_seqlen_q, "tokens": p.q.shape[0]}


def _features(p: Problem) -> dict:
    fixed, data_dependent = _tuning_key(p)
    # windows and varlen prefills of up to 2048 tokens (not paged) like smaller tiles
    short = (p.window_left >= 0 or p.max_seqlen_q <= 2048) and not p.paged
    return {**fixed, **data_dependent, "head_block": next_pow2(p.head_size), "short_prefill": short,
            "small_pages": p.paged and p.block_size <= 32}


def _check_values(p: Problem) -> None:
    """ASCEND_KERNELS_CHECK_BOUNDS=1: the values the kernel trusts (host syncs). cu_seqlens
    start at 0, never decrease and end within the tokens; max_seqlen_q covers every query
    length; scales are finite and > 0; seqused_k fits the keys (varlen) or the block table
    (paged); the page ids a sequence reads lie in [0, num_blocks)."""
    cus = [("cu_seqlens_q", p.cu_seqlens_q, p.q.shape[0])]
    if not p.paged:
        cus.append(("cu_seqlens_k", p.cu_seqlens_k, p.k.shape[0]))
    for name, cu, total in cus:
        cu = cu.long()
        at = torch.arange(cu.numel(), device=cu.device)
        first_bad(name, (at == 0) & (cu != 0), lambda i: f"= {int(cu[i])}: must start at 0")
        first_bad(name, (at > 0) & (cu < cu[(at - 1).clamp(min=0)]),
                   lambda i: f"= {int(cu[i])} is below the entry before it ({int(cu[i[0] - 1])})")
        first_bad(name, (at == cu.numel() - 1) & (cu > total),
                   lambda i: f"= {int(cu[i])} is past the {total} tokens")
    lens_q = (p.cu_seqlens_q[1:] - p.cu_seqlens_q[:-1]).long()
    first_bad("cu_seqlens_q", lens_q > p.max_seqlen_q,
               lambda i: f"gives sequence {i[0]} {int(lens_q[i[0]])} queries, more than max_seqlen_q={p.max_seqlen_q}")
    for name in ("k_scale", "v_scale"):
        scale = getattr(p, name)
        if scale is not None:
            first_bad(name, ~(torch.isfinite(scale) & (scale > 0)),
                       lambda i: f"= {float(scale[i])}: a scale must be finite and > 0")
    if p.paged:
        check_pages("seqused_k", p.seqused_k, p.block_table, p.block_size, p.k.shape[0])
    elif p.seqused_k is not None:
        used, limit = p.seqused_k.long(), (p.k.shape[0] - p.cu_seqlens_k[:-1]).long()
        first_bad("seqused_k", (used < 0) | (used > limit),
                  lambda i: f"= {int(used[i])} is outside [0, {int(limit[i])}] (the tokens of k from the "
                            f"sequence's cu_seqlens_k on)")


@define(problem=Problem, kernel_module=kern, capability=_capability, launches=_launches,
        fallbacks=fallbacks("flash_attention", _fallback_args, _copy_lse),
        tuning_key=_tuning_key, features=_features,
        result=lambda p: (p.out, p.lse) if p.return_lse else p.out, outputs=("out", "lse"),
        fresh={"out": Output(lambda p: (p.q.shape, p.q.dtype)),
               "lse": Output(lambda p: ((p.num_heads, p.q.shape[0]), torch.float32), wanted=lambda p: p.return_lse),
               **FRESH_SCALES},
        check_values=_check_values)
def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                    cu_seqlens_q: torch.Tensor, max_seqlen_q: int,
                    cu_seqlens_k: Optional[torch.Tensor] = None, max_seqlen_k: Optional[int] = None,
                    seqused_k: Optional[torch.Tensor] = None,
                    block_table: Optional[torch.Tensor] = None,
                    softmax_scale: Optional[float] = None, causal: bool = True,
                    window_left: int = -1, window_right: int = -1,
                    sliding_window: Optional[int] = None, softcap: float = 0.0,
                    out: Optional[torch.Tensor] = None, return_lse: bool = False,
                    k_scale: Union[torch.Tensor, float, None] = None,
                    v_scale: Union[torch.Tensor, float, None] = None):
    """Prefill attention over a varlen batch, with K/V varlen or in a paged cache.

    q:            [total_q, num_heads, head_size], fp16/bf16 (fp32 takes the fallback);
                  head_size <= 256 (64, 80, 96, 112, 128, 192, 256, ...).
    k, v:         varlen [total_k, num_kv_heads, head_size] with cu_seqlens_k, or a paged cache
                  [num_blocks, block_size, num_kv_heads, head_size] with block_table and seqused_k;
                  num_kv_heads divides num_heads (GQA). q's dtype, or (paged only) an int8 cache, or
                  fp8 e4m3/e5m2 (CUDA; the CPU takes the reference), as reshape_and_cache writes it.
    k_scale, v_scale: for an int8/fp8 cache only: the value is stored * scale; a host float
                  (made a device tensor on every call: pass tensors under graph capture), or
                  fp32 [1] (per tensor) or [num_kv_heads] (per kv head), both of one kind.
    cu_seqlens_q: int32 [batch + 1]; max_seqlen_q: host int >= every query length (as in
                  FlashAttention: rows past it are not computed).
    cu_seqlens_k: int32 [batch + 1] (varlen; defaults to cu_seqlens_q when k has total_q tokens);
                  max_seqlen_k is accepted for FlashAttention compatibility and unused.
    seqused_k:    int32 [batch]: keys per sequence (paged: required; varlen: overrides the
                  lengths from cu_seqlens_k).
    block_table:  int32 [batch, max_blocks]: the pages of each sequence's keys, in order.
    When a sequence has more keys (sk) than queries (sq), the queries are its last sq tokens: query
    i sees keys j with i + sk - sq - window_left <= j <= i + sk - sq + window_right (-1 =
    unbounded); causal=True sets window_right = 0; sliding_window=W means (W - 1, 0).
    softcap > 0:  scores become softcap * tanh(score / softcap) (score already scaled).
    Returns out [total_q, num_heads, head_size] (written into `out` when given), and with
    return_lse=True also lse float32 [num_heads, total_q] (natural log). A row that sees no key
    gives 0 and lse -inf. With ASCEND_KERNELS_CHECK_BOUNDS=1 the lengths and page ids are checked
    first (a host sync): see _check_values.
    """
    dev = check_same_device([("q", q), ("k", k), ("v", v), ("cu_seqlens_q", cu_seqlens_q),
                             ("cu_seqlens_k", cu_seqlens_k), ("seqused_k", seqused_k),
                             ("block_table", block_table), ("out", out)])
    check_tensor("q", q, ndim=3, dtypes=FLOAT_DTYPES)
    paged = block_table is not None
    if paged:  # before k/v: it decides their expected layout
        check_tensor("block_table", block_table, ndim=2, dtypes=(torch.int32,))
    layout = ("[num_blocks, block_size, num_kv_heads, head_size] (paged: block_table given)"
              if paged else "[total_k, num_kv_heads, head_size] (varlen: no block_table)")
    for name, t in (("k", k), ("v", v)):
        check_tensor(name, t, dtypes=CACHE_DTYPES)
        if t.dim() != (4 if paged else 3):
            raise ValueError(f"{name} must be {layout}, got shape {tuple(t.shape)}")
    num_kv_heads = check_query_cache("q", q, "k", k, paged, "paged cache (block_table given)")
    check_caches("k", k, "v", v, dev)
    _check_seq_index("cu_seqlens_q", cu_seqlens_q, None, dev)
    batch = cu_seqlens_q.numel() - 1
    if batch < 0:
        raise ValueError("cu_seqlens_q must hold batch + 1 >= 1 entries, got none")
    check_int("max_seqlen_q", max_seqlen_q, 0, " (the longest query length, a host value)")
    if max_seqlen_k is not None:
        check_int("max_seqlen_k", max_seqlen_k, 0, " or None")
    if paged:
        check_dim("block_table", block_table, 0, batch, "the batch of cu_seqlens_q")
        if seqused_k is None:
            raise ValueError("seqused_k (int32 [batch], keys per sequence) is required with block_table")
        if cu_seqlens_k is not None:
            raise ValueError("cu_seqlens_k is for varlen k/v; with block_table give seqused_k only")
    else:
        if cu_seqlens_k is None:
            if k.shape[0] != q.shape[0]:
                raise ValueError(f"cu_seqlens_k is required when k holds another number of tokens "
                                 f"({k.shape[0]}) than q ({q.shape[0]})")
            cu_seqlens_k = cu_seqlens_q  # self-attention over the same tokens
        _check_seq_index("cu_seqlens_k", cu_seqlens_k, batch + 1, dev)
    if seqused_k is not None:
        _check_seq_index("seqused_k", seqused_k, batch, dev)
    softmax_scale = softmax_scale_of("softmax_scale", softmax_scale, q.shape[2])
    softcap = check_float("softcap", softcap, what=" (0 = off)")
    window_left, window_right = resolve_window(bool(causal), window_left, window_right, sliding_window)
    check_out(out, q, "q")
    k_scale, v_scale = check_scales(k.dtype, k_scale, v_scale, num_kv_heads, dev)
    for name, scale in (("k_scale", k_scale), ("v_scale", v_scale)):
        if isinstance(scale, (int, float)):
            check_float(name, scale, positive=True, what=" (the cache stores x / scale)")
    return Problem(q, k, v, cu_seqlens_q, max_seqlen_q, cu_seqlens_k, seqused_k, block_table,
                   softmax_scale, window_left, window_right, softcap, out,
                   bool(return_lse), k_scale, v_scale)


