"""jit helpers shared by the attention kernels: softcap, the causal/window band, online softmax.

Scores are kept in base 2: callers multiply q.k by softmax_scale * log2(e) (after softcap,
which works on natural-scale scores) and use exp2, which is what the hardware does fast.
"""
import triton
import triton.language as tl

LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)


@triton.jit
def apply_softcap(s, SOFTCAP: tl.constexpr):
    """softcap * tanh(s / softcap) for SOFTCAP > 0, else s. tanh through exp: portable Triton
    has no tanh, and 1 - 2 / (exp(2x) + 1) saturates cleanly to +-1 at both ends."""
    if SOFTCAP > 0:
        s = SOFTCAP * (1.0 - 2.0 / (tl.exp(2.0 * s / SOFTCAP) + 1.0))
    return s


@triton.jit
def band_mask(q_pos, k_pos, window_left, window_right):
    """Keys a query may see: q_pos - window_left <= k_pos <= q_pos + window_right, where a
    negative window is unbounded on that side. q_pos [M, 1] and k_pos [1, N] are positions in
    one frame (bottom-right aligned by the caller)."""
    left_ok = (window_left < 0) | (k_pos >= q_pos - window_left)
    right_ok = (window_right < 0) | (k_pos <= q_pos + window_right)
    return left_ok & right_ok


@triton.jit
def online_softmax_step(m_i, l_i, s):
    """One step of the streaming softmax over a tile of base-2 scores s [M, N] (masked = -inf).

    Returns (m_new, l_new, p, alpha): the new running max and sum, the tile's probabilities
    relative to m_new, and the factor that rescales the old accumulator. Rows with no visible
    key so far keep m = -inf and get p = 0, alpha = 1 (never NaN).
    """
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp2(s - m_safe[:, None])
    alpha = tl.exp2(m_i - m_safe)
    l_new = l_i * alpha + tl.sum(p, 1)
    return m_new, l_new, p, alpha


@triton.jit
def finish_softmax(acc, m_i, l_i):
    """(acc / l, lse in natural log) with fully masked rows giving 0 and -inf."""
    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(tl.where(empty, 1.0, l_i))) / LOG2E)
    return out, lse


@triton.jit
def online_softmax_step_full(m_i, l_i, s, scale):
    """online_softmax_step for a tile in which every row sees every key (no -inf anywhere):
    s [M, N] unscaled scores, scale > 0 turns them into base-2 scores. The scaling and the max
    subtraction fuse into one FMA per score, and no -inf guard is needed since the tile max is
    finite (m_i may still be -inf from earlier tiles: alpha is then 0)."""
    m_new = tl.maximum(m_i, tl.max(s, 1) * scale)
    p = tl.exp2(s * scale - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)
    l_new = l_i * alpha + tl.sum(p, 1)
    return m_new, l_new, p, alpha
