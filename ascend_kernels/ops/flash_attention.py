"""flash_attention: varlen / paged prefill attention (causal, windows, softcap, GQA, lse)."""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch

from ..kernels import flash_attention as kern
from ..launcher import autotune, device as _device, dispatch
from ..reference import flash_attention as ref
from ._common import (check_same_device, check_tensor, next_pow2, not_contiguous_in_last_dim,
                      opaque_op)

OP = "flash_attention"
HALF_DTYPES = (torch.float16, torch.bfloat16)
ATTN_DTYPES = HALF_DTYPES + (torch.float32,)
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
    out: torch.Tensor
    return_lse: bool
    lse: Optional[torch.Tensor] = None  # [num_heads, total_q] fp32 when return_lse

    @property
    def device(self) -> torch.device:
        return self.q.device

    @property
    def paged(self) -> bool:
        return self.block_table is not None

    @property
    def batch(self) -> int:
        return self.cu_seqlens_q.numel() - 1

    @property
    def num_heads(self) -> int:
        return self.q.shape[1]

    @property
    def num_kv_heads(self) -> int:
        return self.k.shape[-2]

    @property
    def head_size(self) -> int:
        return self.q.shape[2]

    @property
    def block_size(self) -> int:
        return self.k.shape[1] if self.paged else 0


def resolve_window(causal: bool, window_left: int, window_right: int,
                   sliding_window: Optional[int]) -> tuple[int, int]:
    """(window_left, window_right) from the two entry points; -1 = unbounded.

    sliding_window=W means (W - 1, 0) (vLLM); causal means window_right = 0. Contradictions raise.
    """
    for name, w in (("window_left", window_left), ("window_right", window_right)):
        if not isinstance(w, int) or isinstance(w, bool) or w < -1:
            raise ValueError(f"{name} must be an int >= -1 (-1 = unbounded), got {w!r}")
    if sliding_window is not None:
        if not isinstance(sliding_window, int) or isinstance(sliding_window, bool) or sliding_window < 1:
            raise ValueError(f"sliding_window must be a positive int (W keys: the query and W - 1 "
                             f"before it), got {sliding_window!r}")
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


def _validate(q, k, v, cu_seqlens_q, max_seqlen_q, cu_seqlens_k, max_seqlen_k, seqused_k,
              block_table, softmax_scale, causal, window_left, window_right, sliding_window,
              softcap, out, return_lse) -> Problem:
    dev = check_same_device([("q", q), ("k", k), ("v", v), ("cu_seqlens_q", cu_seqlens_q),
                             ("cu_seqlens_k", cu_seqlens_k), ("seqused_k", seqused_k),
                             ("block_table", block_table), ("out", out)])
    check_tensor("q", q, ndim=3, dtypes=ATTN_DTYPES)
    paged = block_table is not None
    if paged:  # before k/v: it decides their expected layout
        check_tensor("block_table", block_table, ndim=2, dtypes=(torch.int32,))
    kv_ndim = 4 if paged else 3
    layout = ("[num_blocks, block_size, num_kv_heads, head_size] (paged: block_table given)"
              if paged else "[total_k, num_kv_heads, head_size] (varlen: no block_table)")
    for name, t in (("k", k), ("v", v)):
        check_tensor(name, t, dtypes=ATTN_DTYPES)
        if t.dim() != kv_ndim:
            raise ValueError(f"{name} must be {layout}, got shape {tuple(t.shape)}")
        if t.dtype != q.dtype:
            raise TypeError(f"{name} must have q's dtype {q.dtype}, got {t.dtype}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have one shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    total_q, num_heads, head_size = q.shape
    num_kv_heads = k.shape[-2]
    if k.shape[-1] != head_size:
        raise ValueError(f"k's head_size {k.shape[-1]} differs from q's {head_size}")
    if num_kv_heads < 1 or num_heads % num_kv_heads:
        raise ValueError(f"k's num_kv_heads ({num_kv_heads}) must divide q's num_heads ({num_heads})")
    _check_seq_index("cu_seqlens_q", cu_seqlens_q, None, dev)
    batch = cu_seqlens_q.numel() - 1
    if batch < 0:
        raise ValueError("cu_seqlens_q must hold batch + 1 >= 1 entries, got none")
    if not isinstance(max_seqlen_q, int) or isinstance(max_seqlen_q, bool) or max_seqlen_q < 0:
        raise ValueError(f"max_seqlen_q must be a non-negative int (the longest query length, a "
                         f"host value), got {max_seqlen_q!r}")
    if max_seqlen_k is not None and (not isinstance(max_seqlen_k, int) or isinstance(max_seqlen_k, bool)
                                     or max_seqlen_k < 0):
        raise ValueError(f"max_seqlen_k must be a non-negative int or None, got {max_seqlen_k!r}")
    if paged:
        if block_table.shape[0] != batch:
            raise ValueError(f"block_table must be [batch={batch}, max_blocks], got shape "
                             f"{tuple(block_table.shape)}")
        if seqused_k is None:
            raise ValueError("seqused_k (int32 [batch], keys per sequence) is required with block_table")
        if cu_seqlens_k is not None:
            raise ValueError("cu_seqlens_k is for varlen k/v; with block_table give seqused_k only")
    else:
        if cu_seqlens_k is None:
            if k.shape[0] != total_q:
                raise ValueError(f"cu_seqlens_k is required when k holds another number of tokens "
                                 f"({k.shape[0]}) than q ({total_q})")
            cu_seqlens_k = cu_seqlens_q  # self-attention over the same tokens
        _check_seq_index("cu_seqlens_k", cu_seqlens_k, batch + 1, dev)
    if seqused_k is not None:
        _check_seq_index("seqused_k", seqused_k, batch, dev)
    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(head_size)
    if not isinstance(softmax_scale, (int, float)) or isinstance(softmax_scale, bool) \
            or not math.isfinite(softmax_scale) or softmax_scale <= 0:
        raise ValueError(f"softmax_scale must be a positive finite float or None, got {softmax_scale!r}")
    if not isinstance(softcap, (int, float)) or isinstance(softcap, bool) or not softcap >= 0 \
            or not math.isfinite(softcap):
        raise ValueError(f"softcap must be a finite float >= 0 (0 = off), got {softcap!r}")
    window_left, window_right = resolve_window(bool(causal), window_left, window_right, sliding_window)
    if out is None:
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
    else:
        check_tensor("out", out, ndim=3, dtypes=(q.dtype,))
        if out.shape != q.shape:
            raise ValueError(f"out must have q's shape {tuple(q.shape)}, got {tuple(out.shape)}")
    return Problem(q, k, v, cu_seqlens_q, max_seqlen_q, cu_seqlens_k, seqused_k, block_table,
                   float(softmax_scale), window_left, window_right, float(softcap), out,
                   bool(return_lse))


def _capability(backend: str, p: Problem) -> tuple[bool, str]:
    if p.q.dtype not in HALF_DTYPES:
        return False, f"dtype {p.q.dtype}: the kernel's dots are fp16/bf16"
    if p.head_size > MAX_HEAD_SIZE:
        return False, f"head_size {p.head_size} > {MAX_HEAD_SIZE} (tiles would not fit on chip)"
    why = not_contiguous_in_last_dim({"q": p.q, "k": p.k, "v": p.v, "out": p.out}, "head_size")
    if why:
        return False, why
    if p.paged:
        bs = p.block_size
        if bs < 16 or bs > 256 or bs & (bs - 1):
            return False, f"block_size {bs}: a paged KV tile is one page, which must be a power of two in [16, 256]"
    return True, "the kernel handles these shapes, strides and dtypes"


def _cuda_configs():
    out = []
    for bm in (64, 128):
        for bn in (32, 64, 128):
            for w in (4, 8):
                for s in (2, 3, 4):
                    out.append({"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": w, "num_stages": s,
                                "grid_programs_per_core": 64})
    # lazy rescaling (FA4 style) was tried and removed: 12-13% slower on the H100
    # (bench/results/flash_attention_h100.md, run 4)
    return out


# Paged K/V: a tile is one page or a slice of one (see _tiles; on Ascend tiles also shrink to fit UB).
# grid_programs_per_core sizes the persistent grid (cube cores on Ascend, SMs on CUDA).
# HEADS_PER_TASK (optional; the gcd with the GQA ratio is taken): query heads of one kv head
# that a task runs. Left out: 1 on CUDA (a head per task: enough tasks for the SMs), the whole
# group elsewhere.
CONFIGS = {
    "cuda": _cuda_configs(),
    "npu": [{"BLOCK_M": bm, "BLOCK_N": bn, "multibuffer": mb, "grid_programs_per_core": 1}
            for bm in (16, 32, 64, 128) for bn in (32, 64, 128) for mb in (True, False)],
    "cpu": [{"BLOCK_M": 32, "BLOCK_N": 32, "grid_programs_per_core": 1}],
}


def _default_config(backend: str, p: Problem) -> dict:
    """Heuristic configs; the CUDA ones are the best of the H100 sweep in
    bench/results/flash_attention_h100.md (B2 S4096 H32 D128 bf16)."""
    d = next_pow2(p.head_size)
    band = p.window_left >= 0  # a left window: few tiles per row, smaller tiles balance better
    if backend == "cuda":
        if d <= 64:
            return {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3,
                    "grid_programs_per_core": 64}
        if d <= 128:
            # windows and varlen prefills of up to 2048 tokens: 64 x 64 tiles (run 5's short
            # sweep: B16 x 512 149 vs 189 us, B8 x 2048 GQA 8 177 vs 193 us; at 4096, 128 x 128
            # wins). Paged prefills (a cached prefix) keep the long key loops of 128 x 128.
            if (band or p.max_seqlen_q <= 2048) and not p.paged:
                return {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3,
                        "grid_programs_per_core": 64}
            # causal, non-causal and paged: 128 x 128 tiles with K/V through the bulk tensor
            # copy engine (run 5); 3 stages of them take 224 KB of shared memory, which only
            # Hopper has. Pointer loads: 128 x 64 (runs 3 and 4).
            block_n = 128 if _device.properties(p.device)["tma"] else 64
            return {"BLOCK_M": 128, "BLOCK_N": block_n, "num_warps": 8, "num_stages": 3,
                    "grid_programs_per_core": 64}
        return {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2,
                "grid_programs_per_core": 64}
    if backend == "npu":  # _tiles shrinks these to fit the unified buffer for larger heads
        return {"BLOCK_M": 64, "BLOCK_N": 64, "multibuffer": True, "grid_programs_per_core": 1}
    return dict(CONFIGS["cpu"][0])


def _tuning_key(p: Problem) -> tuple[dict, dict]:
    fixed = {"heads": p.num_heads, "kv_heads": p.num_kv_heads, "head_size": p.head_size,
             "dtype": str(p.q.dtype).replace("torch.", ""), "block_size": p.block_size,
             "mask": ("none" if p.window_left < 0 and p.window_right < 0 else
                      "causal" if p.window_left < 0 and p.window_right == 0 else "band"),
             "softcap": p.softcap > 0}
    return fixed, {"max_seqlen_q": p.max_seqlen_q, "tokens": p.q.shape[0]}


def _npu_step_bytes(block_m: int, block_n: int, block_d: int, multibuffer: bool) -> float:
    """The Ascend compile check's unified-buffer estimate for one KV step, fitted on its reports
    (bench/results/ascend_check.md): q (fp16) and acc (fp32) per BLOCK_M x D, the K/V staging
    buffers and their fp32 copies per BLOCK_N x D, scores and probabilities per BLOCK_M x
    BLOCK_N; multibuffer double-buffers what the loop loads."""
    if multibuffer:
        return 8.2 * block_m * block_d + 30.0 * block_n * block_d + 7.9 * block_m * block_n
    return 6.2 * block_m * block_d + 18.0 * block_n * block_d + 7.9 * block_m * block_n


# under the 192 KB unified buffer by the fitted estimate's largest miss (~18 KB)
NPU_UB_BUDGET = _device.ASCEND_UB_BYTES - 20 * 1024


def _tiles(backend: str, config: dict, head_size: int, block_size: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) of a launch. A paged tile is one page or a slice of one. On Ascend the
    config's tiles are upper bounds: the larger one is halved until a step fits the unified
    buffer, so one search space serves every head size (the compile check confirms the fit)."""
    block_m, block_n = config["BLOCK_M"], config["BLOCK_N"]
    if block_size:
        block_n = min(block_n, block_size)
    if backend == "npu":
        block_d = max(16, next_pow2(head_size))
        multibuffer = config.get("multibuffer", True)  # on by default in triton-ascend
        while (_npu_step_bytes(block_m, block_n, block_d, multibuffer) > NPU_UB_BUDGET
               and max(block_m, block_n) > 16):
            if block_n >= block_m:
                block_n //= 2
            else:
                block_m //= 2
    return block_m, block_n


def _tma_descriptors(p: Problem, block_n: int, block_d: int):
    """(k_desc, v_desc): host tensor descriptors over k and v viewed as [rows, num_kv_heads *
    head_size] (rows = tokens, or page slots when paged), block [block_n, block_d], when the
    device has the bulk tensor copy engine and the layout allows it; else None (pointer loads).
    Needs a power-of-two head size (a box never spans past its head), heads adjacent in a row,
    pages adjacent in the cache, and the engine's 16-byte alignment of base and row stride."""
    if not _device.properties(p.device)["tma"] or block_d != p.head_size:
        return None
    from triton.tools.tensor_descriptor import TensorDescriptor

    width = p.num_kv_heads * p.head_size
    descs = []
    for t in (p.k, p.v):
        if p.paged:
            row_stride, head_stride, rows = t.stride(1), t.stride(2), t.shape[0] * t.shape[1]
            if t.stride(0) != t.shape[1] * row_stride:
                return None
        else:
            row_stride, head_stride, rows = t.stride(0), t.stride(1), t.shape[0]
        if (head_stride != p.head_size or row_stride < width or (row_stride * t.element_size()) % 16
                or t.data_ptr() % 16 or not 0 < rows < 2 ** 31):
            return None
        descs.append(TensorDescriptor(t, [rows, width], [row_stride, 1], [block_n, block_d]))
    return descs


def _kernel_args(p: Problem, config: dict):
    """(positional args, constexprs, options, grid) of one launch."""
    backend = p.device.type
    constexprs, options = autotune.split_config(config, backend)
    block_m, constexprs["BLOCK_N"] = _tiles(backend, config, p.head_size, p.block_size if p.paged else 0)
    constexprs["BLOCK_M"] = block_m
    tiles = -(-p.max_seqlen_q // block_m)
    gqa = p.num_heads // p.num_kv_heads
    per_task = config.get("HEADS_PER_TASK", 1 if backend == "cuda" else gqa)
    constexprs["HEADS_PER_TASK"] = math.gcd(int(per_task), gqa)
    n_tasks = p.batch * tiles * p.num_kv_heads * (gqa // constexprs["HEADS_PER_TASK"])
    grid = (_device.persistent_grid(p.device, n_tasks, config.get("grid_programs_per_core", 1), cube=True),)
    q, k, v, out = p.q, p.k, p.v, p.out
    lse = p.lse if p.lse is not None else out  # unread without RETURN_LSE
    cu_k = p.cu_seqlens_k if p.cu_seqlens_k is not None else p.cu_seqlens_q
    used = p.seqused_k if p.seqused_k is not None else p.cu_seqlens_q
    bt = p.block_table if p.block_table is not None else p.cu_seqlens_q
    if p.paged:
        kt, kh, kb = k.stride(1), k.stride(2), k.stride(0)
        vt, vh, vb = v.stride(1), v.stride(2), v.stride(0)
    else:
        kt, kh, kb = k.stride(0), k.stride(1), 0
        vt, vh, vb = v.stride(0), v.stride(1), 0
    block_d = max(16, next_pow2(p.head_size))
    descs = _tma_descriptors(p, constexprs["BLOCK_N"], block_d) if backend == "cuda" else None
    k_desc, v_desc = descs or (k, v)  # unread without USE_TMA
    args = (q, k, v, k_desc, v_desc, out, lse, p.cu_seqlens_q, cu_k, used, bt,
            p.softmax_scale, p.window_left, p.window_right, p.batch, tiles,
            q.shape[0], k.shape[0], bt.shape[1] if p.block_table is not None else 0,
            q.stride(0), q.stride(1), kt, kh, kb, vt, vh, vb, out.stride(0), out.stride(1),
            p.lse.stride(0) if p.lse is not None else 0,
            bt.stride(0) if p.block_table is not None else 0)
    constexprs.update(
        NUM_KV_HEADS=p.num_kv_heads, GQA=gqa, HEAD_SIZE=p.head_size,
        BLOCK_D=block_d, PAGED=p.paged, PAGE_SIZE=max(p.block_size, 1),
        HAS_SEQUSED=p.seqused_k is not None, SOFTCAP=p.softcap, RETURN_LSE=p.lse is not None,
        DOT_FP32=_device.dots_in_fp32(backend), USE_TMA=descs is not None, PERSISTENT=grid[0] < n_tasks)
    return args, constexprs, options, grid


def _launch(p: Problem, config: dict) -> None:
    if p.batch == 0 or p.max_seqlen_q == 0 or p.q.shape[0] == 0:
        return
    args, constexprs, options, grid = _kernel_args(p, config)
    kern.flash_attention_kernel[grid](*args, **constexprs, **options)


def _run(p: Problem) -> None:
    decision = dispatch.decide(SPEC, p)
    if decision.path == "triton":
        _launch(p, decision.config)
        return
    fn = ref.flash_attention
    if decision.backend == "npu":
        from ..fallback_atb import flash_attention as atb

        fn = atb.flash_attention
    _, lse = fn(p.q, p.k, p.v, p.cu_seqlens_q, p.cu_seqlens_k, p.seqused_k, p.block_table,
                p.softmax_scale, p.window_left, p.window_right, p.softcap, out=p.out,
                return_lse=p.lse is not None)
    if p.lse is not None:
        p.lse.copy_(lse)


@opaque_op("ascend_kernels::flash_attention", mutates_args=("out",))
def _flash_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        cu_seqlens_q: torch.Tensor, max_seqlen_q: int,
                        cu_seqlens_k: Optional[torch.Tensor], seqused_k: Optional[torch.Tensor],
                        block_table: Optional[torch.Tensor], softmax_scale: float,
                        window_left: int, window_right: int, softcap: float, out: torch.Tensor,
                        return_lse: bool) -> torch.Tensor:
    lse = torch.empty((q.shape[1], q.shape[0]) if return_lse else (0,), dtype=torch.float32,
                      device=q.device)
    _run(Problem(q, k, v, cu_seqlens_q, max_seqlen_q, cu_seqlens_k, seqused_k, block_table,
                 softmax_scale, window_left, window_right, softcap, out, return_lse,
                 lse if return_lse else None))
    return lse


@_flash_attention_op.register_fake
def _(q, k, v, cu_seqlens_q, max_seqlen_q, cu_seqlens_k, seqused_k, block_table, softmax_scale,
      window_left, window_right, softcap, out, return_lse):
    return q.new_empty((q.shape[1], q.shape[0]) if return_lse else (0,), dtype=torch.float32)


def _prepare(q, k, v, *, cu_seqlens_q, max_seqlen_q, cu_seqlens_k=None, max_seqlen_k=None,
             seqused_k=None, block_table=None, softmax_scale=None, causal=True, window_left=-1,
             window_right=-1, sliding_window=None, softcap=0.0, out=None,
             return_lse=False) -> Problem:
    p = _validate(q, k, v, cu_seqlens_q, max_seqlen_q, cu_seqlens_k, max_seqlen_k, seqused_k,
                  block_table, softmax_scale, causal, window_left, window_right, sliding_window,
                  softcap, out, return_lse)
    if p.return_lse:
        p.lse = torch.empty((p.num_heads, p.q.shape[0]), dtype=torch.float32, device=p.device)
    return p


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                    cu_seqlens_q: torch.Tensor, max_seqlen_q: int,
                    cu_seqlens_k: Optional[torch.Tensor] = None, max_seqlen_k: Optional[int] = None,
                    seqused_k: Optional[torch.Tensor] = None,
                    block_table: Optional[torch.Tensor] = None,
                    softmax_scale: Optional[float] = None, causal: bool = True,
                    window_left: int = -1, window_right: int = -1,
                    sliding_window: Optional[int] = None, softcap: float = 0.0,
                    out: Optional[torch.Tensor] = None, return_lse: bool = False):
    """Prefill attention over a varlen batch, with K/V varlen or in a paged cache.

    q:            [total_q, num_heads, head_size], fp16/bf16 (fp32 takes the fallback);
                  head_size <= 256 (64, 80, 96, 112, 128, 192, 256, ...).
    k, v:         varlen [total_k, num_kv_heads, head_size] with cu_seqlens_k, or a paged cache
                  [num_blocks, block_size, num_kv_heads, head_size] with block_table and seqused_k;
                  num_kv_heads divides num_heads (GQA).
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
    gives 0 and lse -inf.
    """
    p = _validate(q, k, v, cu_seqlens_q, max_seqlen_q, cu_seqlens_k, max_seqlen_k, seqused_k,
                  block_table, softmax_scale, causal, window_left, window_right, sliding_window,
                  softcap, out, return_lse)
    lse = _flash_attention_op(
        p.q, p.k, p.v, p.cu_seqlens_q, p.max_seqlen_q, p.cu_seqlens_k, p.seqused_k, p.block_table,
        p.softmax_scale, p.window_left, p.window_right, p.softcap, p.out, p.return_lse)
    return (p.out, lse) if p.return_lse else p.out


def _suite_model(name: str) -> dict:
    """Fields of a model named in bench/suites (_models.yaml or a suite's own `models:`)."""
    from pathlib import Path

    try:
        import yaml

        root = Path(__file__).resolve().parents[2] / "bench" / "suites"
        for f in sorted(root.glob("*.yaml")):
            doc = yaml.safe_load(f.read_text()) or {}
            models = doc if f.stem == "_models" else (doc.get("models") or {})
            if isinstance(models.get(name), dict):
                return dict(models[name])
    except Exception:  # noqa: BLE001 -- no suites here: the shape must be complete
        pass
    return {}


def _shape_fields(shape: dict) -> dict:
    """A bench-suite shape in this op's terms. Accepts the suite keys (q_heads, kv_heads,
    head_size, batch, seq_len, kv_len, paged, block_size, causal, sliding_window, softcap; model
    fields merged in, or looked up in bench/suites/_models.yaml when only `model` is given) and
    the short ones (heads, seqlen, context, window, lse)."""
    s = dict(shape)
    if "q_heads" not in s and "heads" not in s and s.get("model"):
        s = {**_suite_model(s["model"]), **s}
    h = int(s.get("q_heads", s.get("heads", 0)))
    sq = int(s.get("seq_len", s.get("seqlen", 0)))
    sk = int(s.get("kv_len") or (sq + int(s.get("context", 0))))
    paged = bool(s.get("paged", "block_size" in s and "q_heads" not in s))
    return {"batch": int(s["batch"]), "sq": sq, "sk": sk, "heads": h,
            "kv_heads": int(s.get("kv_heads", h)), "head_size": int(s["head_size"]),
            "block_size": int(s["block_size"]) if paged else 0,
            "causal": bool(s.get("causal", True)),
            "window": s.get("sliding_window", s.get("window")) or None,
            "softcap": float(s.get("softcap") or 0.0), "lse": bool(s.get("lse", False)),
            "dtype": s.get("dtype", "bfloat16")}


def _make_problem(shape: dict, device: torch.device, dtype: torch.dtype = torch.bfloat16) -> Problem:
    """Fresh random inputs for a bench/tune shape (see _shape_fields for the keys): batch
    sequences of sq queries against sk keys each (the queries are the last sq), varlen or in a
    paged cache with shuffled pages."""
    f = _shape_fields(shape)
    b, sq, sk, h, kvh, d = f["batch"], f["sq"], f["sk"], f["heads"], f["kv_heads"], f["head_size"]
    q = torch.randn(b * sq, h, d, device=device, dtype=dtype)
    cu_q = torch.arange(0, b + 1, device=device, dtype=torch.int32) * sq
    bs = f["block_size"]
    if bs:
        nb = -(-sk // bs)
        k = torch.randn(b * nb, bs, kvh, d, device=device, dtype=dtype)
        v = torch.randn(b * nb, bs, kvh, d, device=device, dtype=dtype)
        bt = torch.randperm(b * nb, device=device).to(torch.int32).reshape(b, nb)
        used = torch.full((b,), sk, device=device, dtype=torch.int32)
        cu_k = None
    else:
        k = torch.randn(b * sk, kvh, d, device=device, dtype=dtype)
        v = torch.randn(b * sk, kvh, d, device=device, dtype=dtype)
        cu_k = torch.arange(0, b + 1, device=device, dtype=torch.int32) * sk
        bt = used = None
    return _prepare(q, k, v, cu_seqlens_q=cu_q, max_seqlen_q=sq, cu_seqlens_k=cu_k, seqused_k=used,
                    block_table=bt, causal=f["causal"], sliding_window=f["window"],
                    softcap=f["softcap"], return_lse=f["lse"])


def _ascend_cases(shape: dict, config: dict) -> list:
    """One KernelCase of the kernel for this suite shape and Ascend config."""
    from .. import ascend_check

    f = _shape_fields(shape)
    dt = {"float16": "fp16", "bfloat16": "bf16"}.get(str(f["dtype"]).replace("torch.", ""), "bf16")
    h, kvh, d = f["heads"], f["kv_heads"], f["head_size"]
    bs = f["block_size"]
    paged = bool(bs)
    block_m, block_n = _tiles("npu", config, d, bs)
    sig = {"q_ptr": f"*{dt}", "k_ptr": f"*{dt}", "v_ptr": f"*{dt}", "k_desc": f"*{dt}",
           "v_desc": f"*{dt}", "out_ptr": f"*{dt}",
           "lse_ptr": "*fp32", "cu_seqlens_q_ptr": "*i32", "cu_seqlens_k_ptr": "*i32",
           "seqused_k_ptr": "*i32", "block_table_ptr": "*i32", "sm_scale": "fp32",
           "window_left": "i32", "window_right": "i32", "batch": "i32", "tiles_per_seq": "i32",
           "total_q": "i32", "kv_limit": "i32", "max_blocks": "i32"}
    for name in ("stride_qt", "stride_qh", "stride_kt", "stride_kh", "stride_kb", "stride_vt",
                 "stride_vh", "stride_vb", "stride_ot", "stride_oh", "stride_lse_h", "stride_bt_b"):
        sig[name] = "i32"
    constexprs = {"NUM_KV_HEADS": kvh, "GQA": h // kvh, "HEADS_PER_TASK": h // kvh, "HEAD_SIZE": d,
                  "BLOCK_D": max(16, next_pow2(d)), "BLOCK_M": block_m, "BLOCK_N": block_n,
                  "PAGE_SIZE": max(bs, 1), "PAGED": paged,
                  "HAS_SEQUSED": paged, "SOFTCAP": f["softcap"], "RETURN_LSE": f["lse"],
                  "DOT_FP32": _device.dots_in_fp32("npu"), "USE_TMA": False, "PERSISTENT": True}
    label = ",".join(f"{k}={v}" for k, v in shape.items() if not isinstance(v, (list, dict)))
    label += f",tile={block_m}x{block_n}"
    return [ascend_check.KernelCase(OP, kern.flash_attention_kernel, sig, constexprs, config, label)]


SPEC = dispatch.register(dispatch.OpSpec(
    name=OP, prepare=_prepare, capability=_capability, configs=CONFIGS,
    default_config=_default_config, tuning_key=_tuning_key, launch=_launch,
    kernels=(kern.flash_attention_kernel, kern._attend, kern._attend_range, kern._kv_tile_index),
    ascend_cases=_ascend_cases, make_problem=_make_problem))
