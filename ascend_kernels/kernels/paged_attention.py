"""Decode attention over a paged KV cache: one new query token per sequence.

Program = (sequence, kv head, split), persistent grid over those tasks. The M tile holds every
query head that shares the kv head (the GQA group, padded to a power of two: at least 16 rows
where tl.dot needs them (CUDA, the interpreters); on Ascend no more, the cube pads M itself), so
each KV page is read once per kv head. The loop walks the sequence's pages, bounded by its
length (loaded from seq_lens on the device): block-table entries past the length are never read,
and every block-table index is clamped into the row (a masked load may lower to an unmasked one).
The next step's page ids are loaded one step ahead, so the K/V loads never wait on them.

Quantized caches (int8; fp8 on CUDA): the tiles are converted to the dots' dtype (exact for
int8 and fp8 in fp16/bf16: the query's dtype, or fp16 on CUDA, where int8 converts by integer
ops, see _quant.cache_tile_as) and the per-tensor or per-kv-head scales, constant over a task,
are folded in: k_scale into the softmax scale, v_scale into the output. Same result as
dequantizing every tile, without a multiply per element in the loop.

PAGES_PER_STEP == 1 (the Ascend layout): one scalar page id per step and one [block_size,
head_size] K and V tile at one base address -- structured DMA, no gather. PAGES_PER_STEP > 1
(CUDA): a K tile of several pages built from a small vector of page ids (a gather; fine on a
GPU, fewer, larger steps for small block sizes).

Split-KV (flash decoding): NUM_SPLITS > 1 divides each sequence's visible pages among splits;
each writes an fp32 partial output and its log-sum-exp. MERGE_LAST (a config choice where the
backend has arrival counters: CUDA and the interpreters): the task's last split to finish merges
them all in the same launch, told apart by a per-task arrival counter that it resets to 0 for the
next call; otherwise paged_attention_merge_kernel merges them in a second launch. Both merge the
same way (_merge_splits).
pages_per_split > 0 fixes the split boundaries at absolute page multiples (batch invariant);
0 divides each sequence's visible pages evenly among NUM_SPLITS.
"""
from typing import Optional

import triton
import triton.language as tl

from ..launcher.checks import next_pow2
from ..launcher.device import grid_size
from ._quant import cache_tile_as, fp16_operand, load_scale
from ._softmax import LOG2E, apply_softcap, band_mask, finish_softmax, online_softmax_step


@triton.jit
def paged_attention_kernel(
    q_ptr,                       # [num_seqs, num_heads, head_size], head dim contiguous
    k_cache_ptr, v_cache_ptr,    # [num_blocks, block_size, num_kv_heads, head_size], head dim contiguous
    block_table_ptr,             # int32 [num_seqs, max_blocks]; entries past a sequence's pages unread
    seq_lens_ptr,                # int32 [num_seqs]
    alibi_ptr,                   # fp32 [num_heads] (read only when USE_ALIBI)
    k_scale_ptr, v_scale_ptr,    # fp32 [1] or [num_kv_heads] (read only when QUANT != 0)
    out_ptr,                     # NUM_SPLITS == 1: [num_seqs, num_heads, head_size] in the output dtype
                                 # NUM_SPLITS > 1: fp32 partials [num_seqs, num_heads, NUM_SPLITS, head_size]
    lse_ptr,                     # fp32 [num_seqs, num_heads, NUM_SPLITS] (written when NUM_SPLITS > 1)
    scale,                       # fp32 softmax scale (natural units)
    window,                      # i32 sliding window W (> 0: the last W keys), <= 0: none
    pages_per_split,             # i32 fixed split size in pages (> 0), or 0: even split
    num_tasks,                   # num_seqs * num_kv_heads * NUM_SPLITS
    num_kv_heads,
    num_blocks, max_blocks,      # cache pages, block-table columns: bad lengths/ids read nothing
    q_stride_s, q_stride_h,
    k_stride_b, k_stride_s, k_stride_h,
    v_stride_b, v_stride_s, v_stride_h,
    bt_stride_s,
    o_stride_s, o_stride_h,      # out (NUM_SPLITS == 1) or partials (split stride = HEAD_SIZE)
    final_ptr,                   # MERGE_LAST: the [num_seqs, num_heads, head_size] output
    f_stride_s, f_stride_h,
    arrivals_ptr,                # MERGE_LAST: int32 [num_seqs * num_kv_heads], 0 between calls
    GQA: tl.constexpr,           # query heads per kv head
    BLOCK_M: tl.constexpr,       # GQA padded to a power of two (>= 16 where tl.dot needs it)
    HEAD_SIZE: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,    # tokens per page
    BLOCK_N: tl.constexpr,       # BLOCK_SIZE padded to a power of two
    PAGES_PER_STEP: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
    BLOCK_S: tl.constexpr,       # MERGE_LAST: splits merged per step (power of two)
    SOFTCAP: tl.constexpr,       # > 0: softcap * tanh(s / softcap)
    USE_ALIBI: tl.constexpr,
    DOT_FP32: tl.constexpr,      # interpreter: bf16 tl.dot is wrong there, dot in fp32
    QUANT: tl.constexpr,         # _quant.QUANT_*: the caches' encoding
    SCALE_PER_HEAD: tl.constexpr,
    FP16_DOTS: tl.constexpr,     # CUDA, quantized caches: dots in fp16 (_quant.cache_tile_as)
    MERGE_LAST: tl.constexpr,    # NUM_SPLITS > 1: the last split of a task merges (one launch)
):
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < GQA
    mask_d = offs_d < HEAD_SIZE
    TILE_N: tl.constexpr = PAGES_PER_STEP * BLOCK_N
    offs_t = tl.arange(0, TILE_N)
    t_page = offs_t // BLOCK_N       # page of the step each row belongs to
    t_in = offs_t % BLOCK_N          # row inside its page
    t_real = t_in < BLOCK_SIZE
    offs_n = tl.arange(0, BLOCK_N)
    for task in range(pid, num_tasks, num_programs):
        split = task % NUM_SPLITS
        rest = task // NUM_SPLITS
        kv_head = rest % num_kv_heads
        seq = rest // num_kv_heads
        seq_len = tl.load(seq_lens_ptr + seq)
        # visible keys [kv_lo, seq_len): the window, if any, starts at seq_len - W
        kv_lo = seq_len * 0
        if window > 0:
            kv_lo = tl.maximum(seq_len - window, 0)
        page_lo = kv_lo // BLOCK_SIZE
        # never past the block table's row, whatever seq_lens says (nor below page_lo)
        page_hi = tl.maximum(tl.minimum((seq_len + BLOCK_SIZE - 1) // BLOCK_SIZE, max_blocks), page_lo)
        if NUM_SPLITS > 1:
            if pages_per_split > 0:
                s_lo = tl.maximum(page_lo, split * pages_per_split)
                s_hi = tl.minimum(page_hi, (split + 1) * pages_per_split)
            else:
                per = (page_hi - page_lo + NUM_SPLITS - 1) // NUM_SPLITS
                s_lo = page_lo + split * per
                s_hi = tl.minimum(page_hi, s_lo + per)
            page_lo = s_lo
            page_hi = s_hi
        q_pos = seq_len - 1
        # window as tensors (a plain int operand of `|` breaks triton-ascend's interpreter)
        win_left = q_pos * 0 + (window - 1)
        win_right = q_pos * 0

        seq64 = tl.cast(seq, tl.int64)
        heads = kv_head * GQA + offs_m
        q_ptrs = q_ptr + seq64 * q_stride_s + heads[:, None] * q_stride_h + offs_d[None, :]
        q = tl.load(q_ptrs, mask=mask_m[:, None] & mask_d[None, :], other=0.0)
        # quantized caches: k_scale folds into the scores' scale, v_scale into the output
        qk_scale = scale * load_scale(k_scale_ptr, kv_head, True, QUANT, SCALE_PER_HEAD)
        if DOT_FP32:
            q = q.to(tl.float32)
        elif FP16_DOTS:
            q, q_div = fp16_operand(q)
            qk_scale *= q_div
        v_scale = load_scale(v_scale_ptr, kv_head, True, QUANT, SCALE_PER_HEAD)
        if USE_ALIBI:
            slopes = tl.load(alibi_ptr + heads, mask=mask_m, other=0.0)
        kv_head64 = tl.cast(kv_head, tl.int64)
        k_base = k_cache_ptr + kv_head64 * k_stride_h
        v_base = v_cache_ptr + kv_head64 * v_stride_h
        bt_row = block_table_ptr + seq64 * bt_stride_s
        # block-table indices are clamped to the task's last page (< max_blocks): never past the row
        last = tl.maximum(page_hi - 1, 0)
        if PAGES_PER_STEP == 1:
            next_ids = tl.load(bt_row + tl.minimum(page_lo, last))
        else:
            next_ids = tl.load(bt_row + tl.minimum(page_lo + t_page, last))

        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        for step in range(page_lo, page_hi, PAGES_PER_STEP):
            if PAGES_PER_STEP == 1:
                # one page: a scalar page id, one base address (structured on Ascend)
                # (plain arange rows: `%`/`//` on the row index defeats the adapter's
                # structured-access analysis and scalarises the loads)
                page32 = next_ids
                next_ids = tl.load(bt_row + tl.minimum(step + 1, last))  # prefetch
                page = tl.cast(page32, tl.int64)
                k_pos = step * BLOCK_SIZE + offs_n
                # an out-of-range page id reads nothing: its keys count as past the end
                k_end = tl.where((page32 >= 0) & (page32 < num_blocks), seq_len, 0)
                row_ok = (offs_n < BLOCK_SIZE) & (k_pos < k_end)
                k_ptrs = k_base + page * k_stride_b + offs_n[:, None] * k_stride_s + offs_d[None, :]
                v_ptrs = v_base + page * v_stride_b + offs_n[:, None] * v_stride_s + offs_d[None, :]
            else:
                pidx = step + t_page
                p_ok = pidx < page_hi
                pages32 = next_ids
                next_ids = tl.load(bt_row + tl.minimum(pidx + PAGES_PER_STEP, last))  # prefetch
                pages = tl.cast(pages32, tl.int64)
                k_pos = pidx * BLOCK_SIZE + t_in
                row_ok = p_ok & t_real & (k_pos < seq_len) & (pages32 >= 0) & (pages32 < num_blocks)
                k_ptrs = k_base + pages[:, None] * k_stride_b + t_in[:, None] * k_stride_s + offs_d[None, :]
                v_ptrs = v_base + pages[:, None] * v_stride_b + t_in[:, None] * v_stride_s + offs_d[None, :]
            kv_mask = row_ok[:, None] & mask_d[None, :]
            # as the dots' dtype: int8/fp8 tiles are converted (exactly), fp32 under DOT_FP32
            k = cache_tile_as(tl.load(k_ptrs, mask=kv_mask, other=0.0), q.dtype, QUANT, FP16_DOTS)
            v = cache_tile_as(tl.load(v_ptrs, mask=kv_mask, other=0.0), q.dtype, QUANT, FP16_DOTS)
            s = tl.dot(q, tl.trans(k))
            if SOFTCAP > 0:
                s = apply_softcap(s * qk_scale, SOFTCAP)
                if USE_ALIBI:
                    s += slopes[:, None] * (k_pos - q_pos).to(tl.float32)[None, :]
                s = s * LOG2E
            elif USE_ALIBI:
                s = s * qk_scale + slopes[:, None] * (k_pos - q_pos).to(tl.float32)[None, :]
                s = s * LOG2E
            else:
                s = s * (qk_scale * LOG2E)
            visible = band_mask(q_pos, k_pos[None, :], win_left, win_right) & row_ok[None, :]
            s = tl.where(visible, s, float("-inf"))
            m_i, l_i, p, alpha = online_softmax_step(m_i, l_i, s)
            acc = acc * alpha[:, None]
            acc += tl.dot(p.to(v.dtype), v)
        out, lse = finish_softmax(acc, m_i, l_i)
        out = out * v_scale
        if NUM_SPLITS == 1:
            o_ptrs = out_ptr + seq64 * o_stride_s + heads[:, None] * o_stride_h + offs_d[None, :]
            tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])
        else:
            o_ptrs = (out_ptr + seq64 * o_stride_s + heads[:, None] * o_stride_h
                      + split * HEAD_SIZE + offs_d[None, :])
            tl.store(o_ptrs, out, mask=mask_m[:, None] & mask_d[None, :])
            lse_ptrs = lse_ptr + seq64 * (num_kv_heads * GQA * NUM_SPLITS) + heads * NUM_SPLITS + split
            tl.store(lse_ptrs, lse, mask=mask_m)
            if MERGE_LAST:
                # every thread's partial stores come before the arrival (barrier, then release);
                # the acquire lets the last arrival read all of the task's partials
                tl.debug_barrier()
                arrived = tl.atomic_add(arrivals_ptr + rest, 1, sem="acq_rel")
                if arrived == NUM_SPLITS - 1:
                    for g in range(GQA):
                        row = rest * GQA + g  # = seq * num_heads + head
                        _merge_splits(out_ptr + tl.cast(row, tl.int64) * (NUM_SPLITS * HEAD_SIZE),
                                      lse_ptr + tl.cast(row, tl.int64) * NUM_SPLITS,
                                      final_ptr + seq64 * f_stride_s + (kv_head * GQA + g) * f_stride_h,
                                      NUM_SPLITS, BLOCK_S, HEAD_SIZE, BLOCK_D, ".cg")
                    tl.store(arrivals_ptr + rest, 0)


@triton.jit
def _merge_splits(part_row, lse_row, o_ptr, NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr,
                  HEAD_SIZE: tl.constexpr, BLOCK_D: tl.constexpr, CACHE: tl.constexpr):
    """Merge one (sequence, head)'s splits (fp32 partials [NUM_SPLITS, HEAD_SIZE] at part_row,
    their lse at lse_row) by log-sum-exp into o_ptr, BLOCK_S splits at a time in a fixed order;
    empty splits (lse -inf, partial 0) add exact zeros; an all-empty row gives 0. CACHE: the
    loads' cache modifier (".cg" reads other programs' fresh writes past L1)."""
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_SIZE
    m = tl.full([1], float("-inf"), tl.float32)
    total = tl.zeros([1], tl.float32)
    acc = tl.zeros([BLOCK_D], tl.float32)
    for s0 in range(0, NUM_SPLITS, BLOCK_S):
        mask_s = (s0 + offs_s) < NUM_SPLITS
        lse = tl.load(lse_row + s0 + offs_s, mask=mask_s, other=float("-inf"), cache_modifier=CACHE)
        m_new = tl.maximum(m, tl.max(lse, 0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m - m_safe)
        w = tl.exp(lse - m_safe)
        part = tl.load(part_row + (s0 + offs_s)[:, None] * HEAD_SIZE + offs_d[None, :],
                       mask=mask_s[:, None] & mask_d[None, :], other=0.0, cache_modifier=CACHE)
        acc = acc * alpha + tl.sum(part * w[:, None], 0)
        total = total * alpha + tl.sum(w, 0)
        m = m_new
    o = acc / tl.where(total == 0.0, 1.0, total)
    tl.store(o_ptr + offs_d, o.to(o_ptr.dtype.element_ty), mask=mask_d)


@triton.jit
def paged_attention_merge_kernel(
    part_ptr,                    # fp32 [num_seqs, num_heads, NUM_SPLITS, head_size], contiguous
    lse_ptr,                     # fp32 [num_seqs, num_heads, NUM_SPLITS], contiguous
    out_ptr,                     # [num_seqs, num_heads, head_size], head dim contiguous
    num_rows,                    # num_seqs * num_heads
    num_heads,
    o_stride_s, o_stride_h,
    NUM_SPLITS: tl.constexpr,
    BLOCK_S: tl.constexpr,       # splits merged per step (power of two)
    HEAD_SIZE: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """The splits of each (sequence, head) merged in a second launch (without MERGE_LAST)."""
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    for row in range(pid, num_rows, num_programs):
        row64 = tl.cast(row, tl.int64)
        seq = row // num_heads
        head = row % num_heads
        _merge_splits(part_ptr + row64 * (NUM_SPLITS * HEAD_SIZE), lse_ptr + row64 * NUM_SPLITS,
                      out_ptr + tl.cast(seq, tl.int64) * o_stride_s + head * o_stride_h,
                      NUM_SPLITS, BLOCK_S, HEAD_SIZE, BLOCK_D, "")


# Launch geometry (host side): the split count, pages per step, grids and constexprs of both
# kernels, from shapes and the config only (never from data), so that one CUDA graph replays
# for any seq_lens and block table.

AUTO_MAX_SPLITS = 64        # the automatic choice stays under this
# the automatic choice gives each split at least this many tokens (H200, 4 x 1024 tokens, 32/8
# heads: 2 splits of 512 took 23.0 us, 8 of 128 17.6 us in graph replay)
MIN_SPLIT_TOKENS = 128
MERGE_BLOCK_S = 32          # splits merged per step of the merge kernel
# CUDA shared memory beside the staged K/V tiles (scores, q, barriers): 12 KB measured on the
# H100 (a step of K/V tiles in n stages takes (n - 1) steps' bytes plus this), with room to spare
SMEM_RESERVE = 16 * 1024


def fit_shared_memory(dims: dict, config: dict, smem: int, cache_bytes: int) -> dict:
    """CUDA: fewer stages, then fewer pages per step, until the staged K/V tiles (cache elements
    of `cache_bytes`) fit the `smem` bytes one program may use (the op's capability check sends
    away pages too large for one step in 2 stages)."""
    if not smem or "num_stages" not in config:
        return config
    cfg = dict(config)
    # bytes of one loop step's K and V tiles: pages per step x page x head size
    step = next_pow2(dims["block_size"]) * max(16, next_pow2(dims["head_size"])) * cache_bytes
    while (cfg["num_stages"] - 1) * 2 * pages_per_step(dims, cfg, "cuda") * step + SMEM_RESERVE > smem:
        if cfg["num_stages"] > 2:
            cfg["num_stages"] -= 1
        elif cfg.get("grid_step_tokens", 0) > dims["block_size"]:
            cfg["grid_step_tokens"] //= 2
        else:
            break
    return cfg


def auto_splits(tasks: int, max_context: int, cores: int, target: int) -> int:
    """Splits per (sequence, kv head) from shapes only: enough programs for `target` per core
    when the batch alone fills fewer than 90% of them, then rounded up (at most 2x) until the
    equal-length tasks fill their last wave over the cores to >= 90% (H100: b=4 x 32k, 8 kv
    heads: 9 splits = 288 tasks ran at 74% of copy bandwidth, 16 splits = 512 tasks at 90%;
    H200: 256 tasks of 8/1 heads x 2048 tokens, 2 per core wanted: 65.5 us unsplit, 72.7 us
    in 2 splits)."""
    if tasks <= 0 or tasks >= 0.9 * cores * target:
        return 1
    cap = max(1, min(AUTO_MAX_SPLITS, max_context // MIN_SPLIT_TOKENS))
    base = min(-(-cores * target // tasks), cap)

    def fill(s: int) -> float:
        n = tasks * s
        return n / (-(-n // cores) * cores)

    candidates = range(base, max(base, min(2 * base, cap)) + 1)
    good = [s for s in candidates if fill(s) >= 0.9]
    return good[0] if good else max(candidates, key=fill)


def pages_per_step(dims: dict, config: dict, backend: str) -> int:
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
    tasks, pages_per_split = s * kvh, split_size // bs  # 0: no fixed split size
    if split_size:
        num_splits = max(1, -(-max_blocks // pages_per_split))
    elif "grid_num_splits" in config:  # tests: force a split count
        num_splits = max(1, int(config["grid_num_splits"]))
    else:
        num_splits = auto_splits(tasks, max_blocks * bs, cores, config.get("grid_split_target", 1))
    n_tasks, ppc = tasks * num_splits, config.get("grid_programs_per_core", 1)
    return {
        "num_splits": num_splits, "pages_per_split": pages_per_split, "num_tasks": n_tasks,
        "grid": grid_size(cores, n_tasks, ppc),
        "merge_grid": grid_size(vector_cores or cores, s * h, ppc),
        # Ascend's tl.dot takes any M (the cube pads to 16 itself): padding rows there would only
        # add softmax vector work; upstream Triton and both interpreters need M >= 16
        "constexprs": {"GQA": gqa, "BLOCK_M": next_pow2(gqa) if backend == "npu" else max(16, next_pow2(gqa)),
                       "HEAD_SIZE": hd, "BLOCK_D": max(16, next_pow2(hd)), "BLOCK_SIZE": bs,
                       "BLOCK_N": next_pow2(bs), "PAGES_PER_STEP": pages_per_step(dims, config, backend),
                       "NUM_SPLITS": num_splits},
        "merge_constexprs": {"NUM_SPLITS": num_splits,
                             "BLOCK_S": min(MERGE_BLOCK_S, next_pow2(num_splits)),
                             "HEAD_SIZE": hd, "BLOCK_D": max(16, next_pow2(hd))},
    }
