"""Varlen / paged prefill attention (FlashAttention-2 style forward), one source for both K/V layouts.

Persistent grid over tasks (sequence, query tile, kv head, group of HEADS_PER_TASK of the kv
head's query heads), or one program per task when the grid holds them all (CUDA). A task's query
heads are packed into its M tile (as vLLM's triton_unified_attention): row r is query
r // HEADS_PAD of the tile and head r % HEADS_PAD of the group (HEADS_PAD = HEADS_PER_TASK
rounded up to 2^k; padding rows are masked), so each K/V tile is loaded once per task for the
whole group. Ascend packs the whole GQA group (its 20-24 cube cores have tasks enough); CUDA
defaults to one head per task (more tasks than SMs even at batch 1 with 8 query heads per kv
head); the config's HEADS_PER_TASK chooses. Per
task the KV loop is cut into three ranges from the causal/window band, computed on scalars before
the loop: masked tiles left of the band's fully visible part, unmasked tiles (no mask arithmetic at
all), masked tiles on the right edge (the diagonal and the sequence tail). Tiles wholly outside the
band are never visited.

Positions are bottom-right aligned (FlashAttention): query i of a sequence with sq queries and sk
keys is at key position i + sk - sq and sees keys j with
``i + sk - sq - window_left <= j <= i + sk - sq + window_right`` (negative = unbounded).

Paged K/V: a KV tile is one page (BLOCK_N == block_size), or a slice of one page (BLOCK_N <
block_size, for a smaller on-chip footprint), found through one block-table entry; its rows are
loaded as one strided block (structured on Ascend, no gathers). The next tile's page id is read
one step ahead. MULTI_PAGE (CUDA, pointer loads): a tile is BLOCK_N // block_size whole pages,
its rows gathered through a per-row page id (read one step ahead too), so the fixed cost of a
step is paid once per BLOCK_N keys.

Quantized K/V (QUANT != 0: int8, or fp8 on CUDA): a task reads one kv head, so its scale is one
number (per tensor, or per kv head with SCALE_PER_HEAD). Tiles are converted to the dot's dtype
(exact for int8 and fp8 values) and the scales are folded into the score scale (k) and the
output (v) instead of multiplying every element.

USE_TMA (CUDA Hopper+, chosen by the op): K/V tiles come through host tensor descriptors over
K/V viewed as [rows, NUM_KV_HEADS * HEAD_SIZE] (rows = tokens, or page slots when PAGED), i.e.
by the bulk tensor copy engine instead of per-thread pointer loads. Rows past the tensor read
as zeros; in masked tiles V rows past the sequence's end are zeroed after the load (they may be
another sequence's tokens or, in a page, never written).
"""
import math

import triton
import triton.language as tl

from ..backends.npu import UB_BYTES as NPU_UB_BYTES
from ..launcher.checks import next_pow2

from ._quant import load_scale
from ._softmax import (LOG2E, apply_softcap, band_mask, finish_softmax, online_softmax_step,
                       online_softmax_step_full)


@triton.jit
def _kv_tile_index(n, hi, seq, k_start, block_table_ptr, stride_bt_b, num_blocks,
                   PAGE_SIZE: tl.constexpr, PAGED: tl.constexpr):
    """int64 index of the tile starting at key n: its page (PAGED) or its first token (varlen);
    times the page / token stride it is the tile's offset from the head's base (plus the row
    in the page when a tile is part of a page). A tile at or past hi (the range's end) reads
    no block-table entry and gives 0, and so does an out-of-range page id (a bad block table
    then gives wrong numbers, never an access outside the cache). n may be a vector of keys
    (MULTI_PAGE: the page of each row)."""
    if PAGED:
        page = tl.load(block_table_ptr + seq * stride_bt_b + n // PAGE_SIZE, mask=n < hi, other=0)
        page = tl.where((page >= 0) & (page < num_blocks), page, 0)
        return tl.cast(page, tl.int64)
    else:
        return tl.cast(k_start + n, tl.int64)


@triton.jit
def _attend(acc, m_i, l_i, q, k_base, v_base, k_offs, v_offs, k_desc, v_desc, tma_row, tma_col,
            n, sk, q_pos, qk_scale, sm_scale, window_left, window_right, mask_d,
            offs_n, MASKED: tl.constexpr, HEAD_SIZE: tl.constexpr, BLOCK_D: tl.constexpr,
            SOFTCAP: tl.constexpr, DOT_FP32: tl.constexpr, USE_TMA: tl.constexpr,
            QUANT: tl.constexpr):
    """One KV tile: scores, (mask), online softmax, P @ V. MASKED tiles mask keys past sk and
    outside the band; unmasked tiles are wholly inside both."""
    k_pos = n + offs_n
    if USE_TMA:  # tile rows [tma_row, + BLOCK_N), columns of this kv head
        k = k_desc.load([tma_row, tma_col])
        v = v_desc.load([tma_row, tma_col])
    elif MASKED:
        ld_mask = (k_pos < sk)[:, None]
        if BLOCK_D != HEAD_SIZE:
            ld_mask = ld_mask & mask_d[None, :]
        k = tl.load(k_base + k_offs, mask=ld_mask, other=0.0)
        v = tl.load(v_base + v_offs, mask=ld_mask, other=0.0)
    elif BLOCK_D != HEAD_SIZE:
        k = tl.load(k_base + k_offs, mask=mask_d[None, :], other=0.0)
        v = tl.load(v_base + v_offs, mask=mask_d[None, :], other=0.0)
    else:
        k = tl.load(k_base + k_offs)
        v = tl.load(v_base + v_offs)
    if QUANT != 0:  # int8 / fp8 -> q's dtype, exactly; the scales are applied outside
        k = k.to(q.dtype)
        v = v.to(q.dtype)
    if USE_TMA:
        if MASKED:  # rows past sk: another sequence's tokens or never-written page slots
            v = tl.where((k_pos < sk)[:, None], v, 0.0)
    if DOT_FP32:
        s = tl.dot(q, tl.trans(k.to(tl.float32)))
    else:
        s = tl.dot(q, tl.trans(k))
    if MASKED:
        if SOFTCAP > 0:
            s = apply_softcap(s * sm_scale, SOFTCAP) * LOG2E
        else:
            s = s * qk_scale
        visible = band_mask(q_pos[:, None], k_pos[None, :], window_left, window_right)
        visible = visible & (k_pos < sk)[None, :]
        s = tl.where(visible, s, float("-inf"))
        m_new, l_new, p, alpha = online_softmax_step(m_i, l_i, s)
    else:
        if SOFTCAP > 0:
            s = apply_softcap(s * sm_scale, SOFTCAP)
            m_new, l_new, p, alpha = online_softmax_step_full(m_i, l_i, s, LOG2E)
        else:
            m_new, l_new, p, alpha = online_softmax_step_full(m_i, l_i, s, qk_scale)
    acc = acc * alpha[:, None]
    if DOT_FP32:
        acc = tl.dot(p, v.to(tl.float32), acc)
    else:
        acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, m_new, l_new


@triton.jit
def _attend_range(acc, m_i, l_i, q, k_head, v_head, k_offs, v_offs, k_desc, v_desc, tma_col,
                  lo, hi, seq, k_start, sk,
                  block_table_ptr, stride_bt_b, num_blocks, k_unit, v_unit, stride_kt, stride_vt,
                  q_pos, qk_scale, sm_scale, window_left, window_right, mask_d, offs_n,
                  MASKED: tl.constexpr, PAGED: tl.constexpr, PAGE_SIZE: tl.constexpr,
                  HEAD_SIZE: tl.constexpr,
                  BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, SOFTCAP: tl.constexpr,
                  DOT_FP32: tl.constexpr, USE_TMA: tl.constexpr, QUANT: tl.constexpr,
                  MULTI_PAGE: tl.constexpr):
    """KV tiles starting at lo, lo + BLOCK_N, ... below hi (lo a multiple of BLOCK_N)."""
    if MULTI_PAGE:  # per-row pages, read one step ahead; rows are whole pages (lo % PAGE_SIZE == 0)
        offs_d = tl.arange(0, BLOCK_D)
        in_page = offs_n % PAGE_SIZE
        pages = _kv_tile_index(lo + offs_n, sk, seq, 0, block_table_ptr, stride_bt_b, num_blocks,
                               PAGE_SIZE, True)
        for n in range(lo, hi, BLOCK_N):
            nxt = _kv_tile_index(n + BLOCK_N + offs_n, sk, seq, 0, block_table_ptr, stride_bt_b,
                                 num_blocks, PAGE_SIZE, True)
            k_rows = pages * k_unit + in_page * stride_kt
            v_rows = pages * v_unit + in_page * stride_vt
            acc, m_i, l_i = _attend(acc, m_i, l_i, q, k_head, v_head, k_rows[:, None] + offs_d[None, :],
                                    v_rows[:, None] + offs_d[None, :], k_desc, v_desc, 0, tma_col, n,
                                    sk, q_pos, qk_scale, sm_scale, window_left, window_right, mask_d,
                                    offs_n, MASKED, HEAD_SIZE, BLOCK_D, SOFTCAP, DOT_FP32, False,
                                    QUANT)
            pages = nxt
    else:
        # PAGED: the next tile's page id is read one step ahead, so no K/V address waits on the
        # block-table load inside the step
        idx = _kv_tile_index(lo, hi, seq, k_start, block_table_ptr, stride_bt_b, num_blocks,
                             PAGE_SIZE, PAGED)
        for n in range(lo, hi, BLOCK_N):
            nxt = _kv_tile_index(n + BLOCK_N, hi, seq, k_start, block_table_ptr, stride_bt_b,
                                 num_blocks, PAGE_SIZE, PAGED)
            k_tile = k_head + idx * k_unit
            v_tile = v_head + idx * v_unit
            tma_row = idx  # the tile's first row in the descriptors' [rows, heads * head_size] view
            if PAGED:
                tma_row = idx * PAGE_SIZE
                if BLOCK_N < PAGE_SIZE:  # the tile is rows [n % PAGE_SIZE, + BLOCK_N) of its page
                    k_tile += (n % PAGE_SIZE) * stride_kt
                    v_tile += (n % PAGE_SIZE) * stride_vt
                    tma_row += n % PAGE_SIZE
            acc, m_i, l_i = _attend(acc, m_i, l_i, q, k_tile, v_tile, k_offs, v_offs, k_desc, v_desc,
                                    tl.cast(tma_row, tl.int32), tma_col, n, sk, q_pos, qk_scale,
                                    sm_scale, window_left, window_right, mask_d, offs_n, MASKED,
                                    HEAD_SIZE, BLOCK_D, SOFTCAP, DOT_FP32, USE_TMA, QUANT)
            idx = nxt
    return acc, m_i, l_i


@triton.jit
def flash_attention_kernel(
    q_ptr,              # [total_q, num_heads, head_size], head dim contiguous
    k_ptr, v_ptr,       # varlen: [total_k, num_kv_heads, head_size]; PAGED: [num_blocks, block_size,
                        #   num_kv_heads, head_size]; head dim contiguous
    k_desc, v_desc,     # USE_TMA: host tensor descriptors over k / v as [rows, num_kv_heads * head_size],
                        #   block [BLOCK_N, BLOCK_D]; otherwise unread
    out_ptr,            # [total_q, num_heads, head_size], head dim contiguous
    lse_ptr,            # [num_heads, total_q] fp32 (written when RETURN_LSE)
    cu_seqlens_q_ptr,   # [batch + 1] int32
    cu_seqlens_k_ptr,   # [batch + 1] int32 (varlen; unread when PAGED)
    seqused_k_ptr,      # [batch] int32 (PAGED, or varlen with HAS_SEQUSED)
    block_table_ptr,    # [batch, max_blocks] int32 (PAGED)
    k_scale_ptr, v_scale_ptr,  # fp32 [1], or [num_kv_heads] with SCALE_PER_HEAD (read when QUANT != 0)
    sm_scale,           # fp32 softmax scale (natural units)
    window_left, window_right,  # keys before / after the (bottom-right aligned) diagonal; -1 = all
    batch, tiles_per_seq,       # tiles_per_seq = cdiv(max_seqlen_q, BLOCK_M // HEADS_PAD)
    total_q, kv_limit, max_blocks,  # q tokens; k tokens (varlen) or cache pages (PAGED); block-table
                                    # columns: wrong cu_seqlens / seqused_k / page ids stay inside them
    stride_qt, stride_qh,
    stride_kt, stride_kh, stride_kb,   # kt: token (varlen) or row-in-page (paged); kb: page (paged)
    stride_vt, stride_vh, stride_vb,
    stride_ot, stride_oh,
    stride_lse_h,
    stride_bt_b,
    NUM_KV_HEADS: tl.constexpr, GQA: tl.constexpr,   # num_heads = NUM_KV_HEADS * GQA
    HEADS_PER_TASK: tl.constexpr,                    # query heads of a task (divides GQA)
    HEADS_PAD: tl.constexpr,                         # HEADS_PER_TASK rounded up to 2^k (<= BLOCK_M)
    IO_BLOCKS: tl.constexpr,  # Q/out/lse as [BLOCK_Q, HEADS_PAD] blocks (Ascend: per-row index
                              #   math in addresses is scalarised there), else per M-tile row
    HEAD_SIZE: tl.constexpr, BLOCK_D: tl.constexpr,  # BLOCK_D = head_size rounded up to 2^k
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,    # M tile rows = queries x HEADS_PAD; PAGED: BLOCK_N
                                                     #   divides PAGE_SIZE
    PAGE_SIZE: tl.constexpr,                         # block_size (PAGED; unused for varlen)
    PAGED: tl.constexpr, HAS_SEQUSED: tl.constexpr,
    SOFTCAP: tl.constexpr, RETURN_LSE: tl.constexpr,
    DOT_FP32: tl.constexpr,  # interpreter: bf16 dots are wrong there, so dot in fp32
    USE_TMA: tl.constexpr,   # K/V tiles through k_desc / v_desc (CUDA Hopper+)
    PERSISTENT: tl.constexpr,  # fewer programs than tasks (else program i runs task i)
    QUANT: tl.constexpr,       # k/v dtype: 0 = q's, 1 = int8, 2 = fp8 (_quant.QUANT_*)
    SCALE_PER_HEAD: tl.constexpr,
    MULTI_PAGE: tl.constexpr,  # PAGED, not USE_TMA: a KV tile is BLOCK_N // PAGE_SIZE pages
):
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    BLOCK_Q: tl.constexpr = BLOCK_M // HEADS_PAD  # queries of a tile
    offs_m = tl.arange(0, BLOCK_M)
    row_q = offs_m // HEADS_PAD  # an M-tile row's query in the tile
    row_g = offs_m % HEADS_PAD   # and its head in the task's group
    offs_q = tl.arange(0, BLOCK_Q)
    offs_g = tl.arange(0, HEADS_PAD)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_SIZE
    # K/V tile element offsets from a tile's base (int32: one tile is small)
    k_offs = offs_n[:, None] * stride_kt + offs_d[None, :]
    v_offs = offs_n[:, None] * stride_vt + offs_d[None, :]
    # a tile's offset = its index (page or first token, _kv_tile_index) times this stride
    if PAGED:
        k_unit = stride_kb
        v_unit = stride_vb
    else:
        k_unit = stride_kt
        v_unit = stride_vt
    head_groups = GQA // HEADS_PER_TASK  # tasks per (sequence, query tile, kv head)
    n_tasks = batch * tiles_per_seq * NUM_KV_HEADS * head_groups
    if PERSISTENT:
        task_end = n_tasks
        task_step = num_programs
    else:  # one program per task: a one-step loop, so nothing is kept live across tasks
        task_end = pid + 1
        task_step = 1
    for task in range(pid, task_end, task_step):
        # tile fastest (programs running together share one head's K/V in cache), last tiles
        # first (under a causal mask they are the longest)
        tile = tiles_per_seq - 1 - task % tiles_per_seq
        rest = task // tiles_per_seq
        g_lo = (rest % head_groups) * HEADS_PER_TASK
        rest = rest // head_groups
        kvh = rest % NUM_KV_HEADS
        seq = rest // NUM_KV_HEADS
        # lengths clamped to the tensors: for valid inputs these are no-ops
        q_start = tl.minimum(tl.maximum(tl.load(cu_seqlens_q_ptr + seq), 0), total_q)
        sq = tl.minimum(tl.maximum(tl.load(cu_seqlens_q_ptr + seq + 1), q_start), total_q) - q_start
        q_lo = tile * BLOCK_Q
        if q_lo < sq:
            if PAGED:
                k_start = 0
                sk = tl.minimum(tl.load(seqused_k_ptr + seq), max_blocks * PAGE_SIZE)
            else:
                k_start = tl.minimum(tl.maximum(tl.load(cu_seqlens_k_ptr + seq), 0), kv_limit)
                if HAS_SEQUSED:
                    sk = tl.load(seqused_k_ptr + seq)
                else:
                    sk = tl.load(cu_seqlens_k_ptr + seq + 1) - k_start
                sk = tl.minimum(sk, kv_limit - k_start)
            sk = tl.maximum(sk, 0)
            diag = sk - sq
            q_hi = tl.minimum(q_lo + BLOCK_Q, sq) - 1  # last real query of the tile
            # keys any row of the tile sees: [kv_lo, kv_hi)
            kv_lo = 0
            if window_left >= 0:
                kv_lo = tl.maximum(q_lo + diag - window_left, 0)
            kv_hi = sk
            if window_right >= 0:
                kv_hi = tl.minimum(q_hi + diag + window_right + 1, sk)
            start = (kv_lo // BLOCK_N) * BLOCK_N
            # tiles every row sees whole: [full_lo, full_hi), multiples of BLOCK_N
            full_lo = start
            if window_left >= 0:
                x = tl.maximum(q_hi + diag - window_left, 0)
                full_lo = tl.maximum(((x + BLOCK_N - 1) // BLOCK_N) * BLOCK_N, start)
            y = sk
            if window_right >= 0:
                y = tl.minimum(q_lo + diag + window_right + 1, sk)
            full_hi = (tl.maximum(y, 0) // BLOCK_N) * BLOCK_N
            end_a = tl.minimum(tl.maximum(full_lo, start), kv_hi)   # masked  [start, end_a)
            end_b = tl.minimum(tl.maximum(full_hi, end_a), kv_hi)   # full    [end_a, end_b)
            # masked [end_b, kv_hi)
            q_pos = q_lo + row_q + diag
            # Q / out / lse rows: token and query head of each
            if IO_BLOCKS:  # [BLOCK_Q, 1] x [1, HEADS_PAD]: strided blocks, reshaped to the M tile
                tok = tl.cast(q_start + q_lo + offs_q, tl.int64)[:, None]
                h = kvh * GQA + g_lo + offs_g[None, :]
                row_ok = ((q_lo + offs_q) < sq)[:, None] & (offs_g < HEADS_PER_TASK)[None, :]
            else:  # [BLOCK_M]: per row
                tok = tl.cast(q_start + q_lo + row_q, tl.int64)
                h = kvh * GQA + g_lo + row_g
                row_ok = ((q_lo + row_q) < sq) & (row_g < HEADS_PER_TASK)
            io_mask = tl.expand_dims(row_ok, -1) & mask_d
            q_rows = q_ptr + tl.expand_dims(tok * stride_qt, -1) + tl.expand_dims(h * stride_qh, -1)
            q = tl.load(q_rows + offs_d, mask=io_mask, other=0.0)
            if IO_BLOCKS:
                q = tl.reshape(q, [BLOCK_M, BLOCK_D])
            if DOT_FP32:
                q = q.to(tl.float32)
            k_head = k_ptr + tl.cast(kvh, tl.int64) * stride_kh
            v_head = v_ptr + tl.cast(kvh, tl.int64) * stride_vh
            tma_col = kvh * HEAD_SIZE
            task_sm_scale = sm_scale
            if QUANT != 0:  # q.k = q.k_stored * k_scale
                task_sm_scale = sm_scale * load_scale(k_scale_ptr, kvh, kvh < NUM_KV_HEADS,
                                                      QUANT, SCALE_PER_HEAD)
            qk_scale = task_sm_scale * LOG2E
            m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
            l_i = tl.zeros([BLOCK_M], tl.float32)
            acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
            # masked [start, end_a), unmasked [end_a, end_b), masked [end_b, kv_hi)
            for r in tl.static_range(3):
                if r == 0:
                    lo = start
                    hi = end_a
                elif r == 1:
                    lo = end_a
                    hi = end_b
                else:
                    lo = end_b
                    hi = kv_hi
                acc, m_i, l_i = _attend_range(
                    acc, m_i, l_i, q, k_head, v_head, k_offs, v_offs, k_desc, v_desc, tma_col,
                    lo, hi, seq, k_start, sk, block_table_ptr, stride_bt_b, kv_limit, k_unit,
                    v_unit, stride_kt, stride_vt, q_pos, qk_scale, task_sm_scale, window_left,
                    window_right, mask_d, offs_n, r != 1, PAGED, PAGE_SIZE, HEAD_SIZE,
                    BLOCK_D, BLOCK_N, SOFTCAP, DOT_FP32, USE_TMA, QUANT, MULTI_PAGE)
            if QUANT != 0:  # p.v = p.v_stored * v_scale
                acc = acc * load_scale(v_scale_ptr, kvh, kvh < NUM_KV_HEADS, QUANT, SCALE_PER_HEAD)
            out, lse = finish_softmax(acc, m_i, l_i)
            if IO_BLOCKS:
                out = tl.reshape(out, [BLOCK_Q, HEADS_PAD, BLOCK_D])
                lse = tl.reshape(lse, [BLOCK_Q, HEADS_PAD])
            o_rows = out_ptr + tl.expand_dims(tok * stride_ot, -1) + tl.expand_dims(h * stride_oh, -1)
            tl.store(o_rows + offs_d, out.to(out_ptr.dtype.element_ty), mask=io_mask)
            if RETURN_LSE:
                tl.store(lse_ptr + tl.cast(h, tl.int64) * stride_lse_h + tok, lse, mask=row_ok)


# Launch geometry (host side): the tiles of a launch, the heads a task packs, and the CUDA
# tensor descriptors over K/V.

def npu_ub_bytes(block_m: int, block_n: int, block_d: int, softcap: bool, quantized: bool) -> int:
    """An upper bound of the Ascend compile check's unified-buffer figure for a launch's tiles,
    fitted on 612 lowered cases (head sizes 16-256, GQA 1 and 4, varlen and paged, int8,
    softcap, window, lse; bench/results/ascend_check_ub_fit.md): the larger of the score phase
    (6 B per M x D element: the accumulator; 38 B per M x N: scores, probabilities, masks) and the
    output phase (18 B per M x D, 26 per M x N), plus softcap's tanh temporaries (16 B per M x N)
    and an int8 tile's converted copy (4 B per N x D). Q/K/V tiles that only feed the matmuls
    stay in L1, so multibuffer does not change it."""
    md, mn = block_m * block_d, block_m * block_n
    return (max(6 * md + 38 * mn, 18 * md + 26 * mn) + (16 * mn if softcap else 0)
            + (4 * block_n * block_d if quantized else 0))


def tiles(backend: str, config: dict, head_size: int, block_size: int, softcap: bool = False,
          quantized: bool = False) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) of a launch. A paged tile is one page or a slice of one. On Ascend the
    config's tiles are upper bounds: the larger one is halved until the launch fits the unified
    buffer, so one search space serves every head size (the compile check confirms the fit)."""
    block_m, block_n = config["BLOCK_M"], config["BLOCK_N"]
    if block_size:
        block_n = min(block_n, block_size)
    if backend == "npu":
        block_d = max(16, next_pow2(head_size))
        while (npu_ub_bytes(block_m, block_n, block_d, softcap, quantized) > NPU_UB_BYTES
               and max(block_m, block_n) > 16):
            if block_n >= block_m:
                block_n //= 2
            else:
                block_m //= 2
    return block_m, block_n


def heads_per_task(config: dict, gqa: int, block_m: int) -> int:
    """Query heads packed into a task's M tile: the largest divisor of the GQA group that is at
    most the config's HEADS_PER_TASK (default: the whole group) and whose power-of-two padding
    fits the tile's rows."""
    limit = int(config.get("HEADS_PER_TASK", gqa))
    return max(d for d in range(1, gqa + 1) if gqa % d == 0 and d <= limit and next_pow2(d) <= block_m)


def kv_strides(t, paged: bool) -> tuple[int, int, int]:
    """(token, head, page) strides of k or v: a paged cache's tokens are its page slots."""
    return (t.stride(1), t.stride(2), t.stride(0)) if paged else (t.stride(0), t.stride(1), 0)


def tma_descriptors(k, v, paged: bool, block_n: int, block_d: int):
    """(k_desc, v_desc): host tensor descriptors over k and v viewed as [rows, num_kv_heads *
    head_size] (rows = tokens, or page slots when paged), block [block_n, block_d], when the
    layout allows it; else None (pointer loads). Needs a power-of-two head size (a box never
    spans past its head), heads adjacent in a row, pages adjacent in the cache, and the copy
    engine's 16-byte alignment of base and row stride."""
    head_size, num_kv_heads = k.shape[-1], k.shape[-2]
    if block_d != head_size:
        return None
    from triton.tools.tensor_descriptor import TensorDescriptor

    width = num_kv_heads * head_size
    descs = []
    for t in (k, v):
        row_stride, head_stride, page_stride = kv_strides(t, paged)
        rows = math.prod(t.shape[:-2])
        if (head_stride != head_size or row_stride < width or (row_stride * t.element_size()) % 16
                or (paged and page_stride != t.shape[1] * row_stride)
                or t.data_ptr() % 16 or not 0 < rows < 2 ** 31):
            return None
        descs.append(TensorDescriptor(t, [rows, width], [row_stride, 1], [block_n, block_d]))
    return descs
