"""Top-k / top-p / temperature sampling without sorting the vocabulary.

Values. Every logit is read as float32 and sanitised: NaN -> -inf, +inf -> the largest finite
float32, -0.0 -> +0.0. Ordering and ties are decided on these sanitised raw logits (temperature
is a positive scale, so it changes no order); the probability weight of a token is
w_i = exp((x_i - max) * inv_t), inv_t = 1 / temperature.

Keys. A sanitised float maps to a monotone int32 key (bits, with the low 31 bits flipped for
negative floats), so "the k-th largest value" is a search on int32 keys. A 17-ary search (16
candidate keys per round, evaluated together as a [16, CHUNK] compare per chunk) narrows the
32-bit key range to one key in at most 8 rounds: a bounded number of passes whatever the data.

Rule (ties included): a token survives top-k iff fewer than k tokens have a strictly larger
value, and survives top-p iff the mass of the top-k survivors with a strictly larger value is
below top_p * (mass of all top-k survivors). Equivalently, the kept set is {x >= t} for a
threshold value t, and every token equal to t is kept: more than k tokens survive when the
k-th largest value is tied, and top-p keeps or drops a group of equal values as a whole.
The largest token always survives.

Three paths per row (one persistent program per row in `sampling_kernel`):
* pool (top-k with k <= P_MAX rows): `group_max_kernel` first writes the max of every group of
  GS consecutive logits (one read of the logits, spread over the whole grid), and the group's
  weight sum sum exp((x - group max) * inv_t); with SAMPLE_LAST (one launch instead of two) the
  sampling kernel's tasks write them, and the task that finishes a row's groups last samples
  the row. The k-th largest group max c is a lower bound of
  the k-th largest logit (k groups hold a value >= c), so the survivors are among the groups
  whose max is >= c. Those groups are gathered (whole groups: structured loads of GS contiguous
  logits) and their values >= c compacted into a pool of at most P_MAX entries; ranks and
  masses above each pool entry come from pairwise compares on the pool (exact, no rounds). If
  the groups or the pool overflow, the row takes the select path.
* select (sampled rows with top-p and/or top-k that the pool did not take: top-p alone, k >
  P_MAX): max and total weight from the group statistics; the threshold is bracketed from a
  proven lower bound (the k-th largest group max for top-k; for top-p, the tokens below
  max + log(q (1 - p) Z / count) / inv_t weigh at most q (1 - p) Z together), then SNC-candidate
  rounds with counts and masses (the first spread evenly in value, later ones in key) narrow the
  bracket to at most P_MAX tokens, which are gathered into the pool; the exact threshold comes
  from pairwise sums on the pool plus the count/mass above the bracket. Typically 2-3 passes
  over the row plus the draw. If the rounds run out, the general path.
* general (every other row, and greedy rows): pass 1 max and argmax; top-k: at most 8 count
  rounds; Z_k: one pass; top-p: at most 8 mass rounds; the draw: one pass.
All paths apply the same rule, so they keep the same set (up to float32 rounding of the mass
sums at an exact boundary) and draw the same token for the same seed.

The draw is an exponential race: token = argmax_i w_i / E_i over kept tokens, E_i = -log(u_i),
u_i = tl.rand(seed_row, i) (Philox keyed by the row's seed, counter = vocab index), so a row's
token depends only on its logits, parameters and seed. Exact ties of the race go to the lowest
index. temperature == 0 is greedy: the first index of the maximum. A row whose logits are all
-inf/NaN returns token 0 (and zero probabilities).
"""
import triton
import triton.language as tl

FLT_MAX = tl.constexpr(3.4028234663852886e38)
KEY_NEG_INF = tl.constexpr(-2139095041)  # key of -inf: 0xFF800000 ^ 0x7FFFFFFF as int32
KEY_MAX = tl.constexpr(2147483647)       # the largest int32 key (search bound)
BIG_INDEX = tl.constexpr(2147483647)


@triton.jit
def _key_of(x):
    """The monotone int32 key of a float32: its bits, the low 31 flipped for negative floats
    (-0.0 as +0.0), so keys order like the values."""
    bits = tl.where(x == 0.0, 0.0, x).to(tl.int32, bitcast=True)
    return tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


@triton.jit
def _value_of(key):
    """The float32 whose _key_of is `key` (int32)."""
    return tl.where(key < 0, key ^ 0x7FFFFFFF, key).to(tl.float32, bitcast=True)


@triton.jit
def _sanitize_key(x):
    """float32 -> (sanitised value, monotone int32 key): NaN as -inf, +inf as FLT_MAX,
    -0.0 as +0.0."""
    x = tl.where(x != x, float("-inf"), x)
    x = tl.minimum(x, FLT_MAX)
    x = tl.where(x == 0.0, 0.0, x)
    return x, _key_of(x)


@triton.jit
def _row_param(ptr, row, value, FROM_TENSOR: tl.constexpr):
    """A row's parameter: ptr[row] when it came as a [batch] tensor, else the scalar value."""
    if FROM_TENSOR:
        value = tl.load(ptr + row)
    return value


@triton.jit
def _temperature(t):
    """(greedy, 1 / temperature) of a row: 0 is greedy; a negative or NaN temperature (a bad
    per-row tensor value, unchecked on the hot path) counts as 1.0."""
    t = tl.where(t >= 0.0, t, 1.0)
    return (t == 0.0).to(tl.int32), 1.0 / tl.where(t == 0.0, 1.0, t)


@triton.jit
def _candidates(lo, hi, NC: tl.constexpr):
    """The NC keys lo + floor(w j / (NC + 1)), j = 1..NC, of the bracket [lo, hi] of int32 keys
    (w = hi + 1 - lo keys, up to 2^32 - 1), as int32 vector math (Ascend scalarises int64 vector
    ops): with w = q (NC + 1) + r (int64 scalars), lo + q j = (lo + q NC/2) + q (j - NC/2), and
    every term lies within int32."""
    w = hi.to(tl.int64) + 1 - lo
    q = w // (NC + 1)
    r = (w - q * (NC + 1)).to(tl.int32)
    mid = (lo + q * (NC // 2)).to(tl.int32)
    j = tl.arange(0, NC) + 1
    return mid + q.to(tl.int32) * (j - NC // 2) + r * j // (NC + 1)


@triton.jit
def _search(row_ptr, n, lo, hi, target_cnt, target_mass, m, inv_t, WITH_MASS: tl.constexpr,
            CHUNK: tl.constexpr, NC: tl.constexpr, ROUNDS: tl.constexpr):
    """The largest key t in [lo, hi] with F(t) >= target, F(t) = count (or, WITH_MASS, the
    weight) of the row's tokens with key >= t.

    Needs F(lo) >= target. Keys, lo and hi are int32 (hi inclusive, so the whole key range
    needs no int64). Each round evaluates NC candidate keys spread over [lo, hi] in one pass
    over the row ([NC, CHUNK] compares) and keeps the bracket: the width shrinks by NC + 1, so
    8 rounds of 16 candidates resolve any 32-bit range; the rounds stop early once one key is
    left.
    """
    for _ in range(ROUNDS):
        if hi > lo:
            cand = _candidates(lo, hi, NC)
            cnt = tl.zeros([NC], dtype=tl.int32)
            mass = tl.zeros([NC], dtype=tl.float32)
            for start in range(0, n, CHUNK):
                offs = start + tl.arange(0, CHUNK)
                x, key = _sanitize_key(
                    tl.load(row_ptr + offs, mask=offs < n, other=float("-inf")).to(tl.float32))
                ge = (key[None, :] >= cand[:, None]) & (offs < n)[None, :]
                if WITH_MASS:
                    w = tl.exp((x - m) * inv_t)
                    mass += tl.sum(tl.where(ge, w[None, :], 0.0), axis=1)
                else:
                    cnt += tl.sum(ge.to(tl.int32), axis=1)
            if WITH_MASS:
                ok = mass >= target_mass
            else:
                ok = cnt >= target_cnt
            new_lo = tl.max(tl.where(ok, cand, lo), axis=0)
            hi = tl.min(tl.where(ok, hi, cand - 1), axis=0)
            lo = new_lo
    return lo


@triton.jit
def _mass_ge(row_ptr, n, t_key, m, inv_t, CHUNK: tl.constexpr):
    """Sum of the weights exp((x - m) * inv_t) of the tokens with key >= t_key."""
    acc = tl.zeros([CHUNK], dtype=tl.float32)
    for start in range(0, n, CHUNK):
        offs = start + tl.arange(0, CHUNK)
        x, key = _sanitize_key(tl.load(row_ptr + offs, mask=offs < n, other=float("-inf")).to(tl.float32))
        acc += tl.where((key >= t_key) & (offs < n), tl.exp((x - m) * inv_t), 0.0)
    return tl.sum(acc, axis=0)


@triton.jit
def _draw(row_ptr, n, t_key, m, inv_t, seed, CHUNK: tl.constexpr):
    """Exponential race over the tokens with key >= t_key (and a positive weight): argmax of
    w / E, E = -log(u), u = Philox(seed, vocab index); exact ties to the lowest index; 0 if none."""
    s_best = tl.full([CHUNK], -2.0, dtype=tl.float32)
    s_idx = tl.full([CHUNK], BIG_INDEX, dtype=tl.int32)
    for start in range(0, n, CHUNK):
        offs = start + tl.arange(0, CHUNK)
        x, key = _sanitize_key(tl.load(row_ptr + offs, mask=offs < n, other=float("-inf")).to(tl.float32))
        w = tl.exp((x - m) * inv_t)
        u = tl.maximum(tl.rand(seed, offs), 4.656612873077393e-10)
        s = tl.where((key >= t_key) & (offs < n) & (w > 0.0), w / -tl.log(u), -1.0)
        better = s > s_best
        s_idx = tl.where(better, offs, s_idx)
        s_best = tl.where(better, s, s_best)
    top = tl.max(s_best, axis=0)
    token = tl.min(tl.where(s_best == top, s_idx, BIG_INDEX), axis=0)
    return tl.where(top > 0.0, token, 0)


@triton.jit
def _general_row(row_ptr, n, k, k_on, p, p_on, inv_t, greedy, seed,
                 CHUNK: tl.constexpr, NC: tl.constexpr, ROUNDS: tl.constexpr):
    """Bounded-pass path for any row. Returns (token, max, threshold key, kept mass)."""
    # pass 1: max and first index of the max
    best = tl.full([CHUNK], float("-inf"), dtype=tl.float32)
    best_i = tl.full([CHUNK], BIG_INDEX, dtype=tl.int32)
    for start in range(0, n, CHUNK):
        offs = start + tl.arange(0, CHUNK)
        x, _ = _sanitize_key(tl.load(row_ptr + offs, mask=offs < n, other=float("-inf")).to(tl.float32))
        better = x > best  # strict: earlier chunks win ties per lane
        best_i = tl.where(better, offs, best_i)
        best = tl.where(better, x, best)
    m = tl.max(best, axis=0)
    arg = tl.min(tl.where(best == m, best_i, BIG_INDEX), axis=0)
    arg = tl.where(arg == BIG_INDEX, 0, arg)
    token = arg
    m = tl.where(m == 0.0, 0.0, m)
    t_key = _key_of(m)
    z = tl.full([], 1.0, dtype=tl.float32)
    if (m > float("-inf")) & (greedy == 0):
        lo = tl.full([], KEY_NEG_INF, dtype=tl.int32)
        if k_on:
            lo = _search(row_ptr, n, lo, t_key, k, 0.0, m, inv_t, False, CHUNK, NC, ROUNDS)
        if p_on:
            zk = _mass_ge(row_ptr, n, lo, m, inv_t, CHUNK)
            lo = _search(row_ptr, n, lo, t_key, k, p * zk, m, inv_t, True, CHUNK, NC, ROUNDS)
        t_key = lo
        z = _mass_ge(row_ptr, n, t_key, m, inv_t, CHUNK)
        token = _draw(row_ptr, n, t_key, m, inv_t, seed, CHUNK)
    return token, m, t_key, z


@triton.jit
def _pool_above(pk_row, px_row, n_pool, kj, m, inv_t, P_MAX: tl.constexpr, PB: tl.constexpr):
    """For each pool entry j (keys kj): how many pool entries have a strictly larger key, and
    the sum of their weights exp((x - m) * inv_t); pairwise compares in blocks of PB."""
    count = tl.zeros([P_MAX], dtype=tl.int32)
    mass = tl.zeros([P_MAX], dtype=tl.float32)
    for i0 in range(0, n_pool, PB):
        ii = i0 + tl.arange(0, PB)
        vi = ii < n_pool
        ki = tl.load(pk_row + ii, mask=vi, other=KEY_NEG_INF)
        xi = tl.load(px_row + ii, mask=vi, other=float("-inf"))
        wi = tl.where(vi, tl.exp((xi - m) * inv_t), 0.0)
        gt = (ki[:, None] > kj[None, :]) & vi[:, None]
        count += tl.sum(gt.to(tl.int32), axis=0)
        mass += tl.sum(tl.where(gt, wi[:, None], 0.0), axis=0)
    return count, mass


@triton.jit
def _pool_row(row_ptr, n, gmax_row, num_groups, list_row, pk_row, px_row, pi_row,
              k, p, p_on, inv_t, seed,
              CHUNK: tl.constexpr, NC: tl.constexpr, ROUNDS: tl.constexpr, GS: tl.constexpr,
              NGB: tl.constexpr, P_MAX: tl.constexpr, PB: tl.constexpr):
    """Pool path for a top-k row (k <= num_groups, k <= P_MAX). Returns
    (ok, token, max, threshold key, kept mass); ok == False: the pool overflowed."""
    # c: the key of the k-th largest group max (a lower bound of the k-th largest logit)
    lo = tl.full([], KEY_NEG_INF, dtype=tl.int32)
    hi = tl.full([], KEY_MAX, dtype=tl.int32)
    c = _search(gmax_row, num_groups, lo, hi, k, 0.0, 0.0, 1.0, False, CHUNK, NC, ROUNDS)
    # the groups whose max is >= c, listed in order
    n_sel = tl.zeros([], dtype=tl.int32)
    for start in range(0, num_groups, CHUNK):
        offs = start + tl.arange(0, CHUNK)
        g = tl.load(gmax_row + offs, mask=offs < num_groups, other=float("-inf"))
        sel = (_key_of(g) >= c) & (offs < num_groups)  # group maxima are sanitised already
        sel_i = sel.to(tl.int32)
        pos = n_sel + tl.cumsum(sel_i, axis=0) - 1
        tl.store(list_row + pos, offs, mask=sel & (pos < P_MAX))
        n_sel += tl.sum(sel_i, axis=0)
    ok = (n_sel <= P_MAX).to(tl.int32)
    token = tl.zeros([], dtype=tl.int32)
    m = tl.full([], float("-inf"), dtype=tl.float32)
    t_key = tl.zeros([], dtype=tl.int32)
    z = tl.full([], 1.0, dtype=tl.float32)
    n_pool = tl.zeros([], dtype=tl.int32)
    if ok != 0:
        tl.debug_barrier()
        # gather the selected groups (GS contiguous logits each); compact the values >= c
        for s0 in range(0, n_sel, NGB):
            gi = s0 + tl.arange(0, NGB)
            gv = gi < n_sel
            gid = tl.load(list_row + gi, mask=gv, other=0)
            offs2 = gid[:, None] * GS + tl.arange(0, GS)[None, :]
            valid = gv[:, None] & (offs2 < n)
            x, kx = _sanitize_key(tl.load(row_ptr + offs2, mask=valid, other=float("-inf")).to(tl.float32))
            sel = valid & (kx >= c)
            sel_i = sel.to(tl.int32)
            per_group = tl.sum(sel_i, axis=1)
            before = tl.cumsum(per_group, axis=0) - per_group
            pos = n_pool + before[:, None] + tl.cumsum(sel_i, axis=1) - 1
            smask = sel & (pos < P_MAX)
            tl.store(pk_row + pos, kx, mask=smask)
            tl.store(px_row + pos, x, mask=smask)
            tl.store(pi_row + pos, offs2, mask=smask)
            n_pool += tl.sum(per_group, axis=0)
        ok = (n_pool <= P_MAX).to(tl.int32)
    if ok != 0:
        tl.debug_barrier()
        jj = tl.arange(0, P_MAX)
        vj = jj < n_pool
        kj = tl.load(pk_row + jj, mask=vj, other=KEY_NEG_INF)
        xj = tl.load(px_row + jj, mask=vj, other=float("-inf"))
        ij = tl.load(pi_row + jj, mask=vj, other=BIG_INDEX)
        m = tl.max(xj, axis=0)  # the row max: its group is always selected
        m_safe = tl.where(m > float("-inf"), m, 0.0)
        wj = tl.where(vj, tl.exp((xj - m_safe) * inv_t), 0.0)
        # rank (how many entries are strictly larger) and the mass strictly above each entry
        rank, above = _pool_above(pk_row, px_row, n_pool, kj, m_safe, inv_t, P_MAX, PB)
        kept = vj & (rank < k) & (wj > 0.0)  # wj == 0 everywhere when the row is all -inf
        if p_on:
            zk = tl.sum(tl.where(kept, wj, 0.0), axis=0)
            kept = kept & (above < p * zk)
        z = tl.sum(tl.where(kept, wj, 0.0), axis=0)
        t_key = tl.min(tl.where(kept, kj, BIG_INDEX), axis=0)
        u = tl.maximum(tl.rand(seed, ij), 4.656612873077393e-10)
        s = tl.where(kept, wj / -tl.log(u), -1.0)
        top = tl.max(s, axis=0)
        token = tl.min(tl.where(s == top, ij, BIG_INDEX), axis=0)
        token = tl.where(top > 0.0, token, 0)
    return ok, token, m, t_key, z


@triton.jit
def _select(row_ptr, n, lo, hi, c_lo, c_hi, f_hi, lo_v, hi_v, value0, count_mode, k, target,
            m, inv_t, pk_row, px_row, pi_row,
            CHUNK: tl.constexpr, SC: tl.constexpr, SNC: tl.constexpr, SROUNDS: tl.constexpr,
            P_MAX: tl.constexpr, PB: tl.constexpr):
    """The largest key t in [lo, hi] with F(t) >= target, F(t) = count (count_mode) or weight
    (else, target = the mass) of the tokens with key >= t. Returns (ok, t, count(key >= t) (an
    upper bound when not evaluated), mass(key >= t) or -1 when not known).

    Needs F(lo) >= target > F(hi + 1) (int32 keys, hi inclusive). c_lo >= count(key >= lo) (an
    upper bound is enough), c_hi = count(key > hi), f_hi = mass(key > hi). Rounds (one pass over
    the row each, SNC candidates, counts AND masses) narrow [lo, hi] until it holds at most
    P_MAX tokens (or one key); the first round (value0 == 1) spreads the candidates evenly in
    VALUE over [lo_v, hi_v) (lo_v = the value of key lo, candidate 0 = lo itself, so its count
    becomes exact), later rounds evenly in key. Then one pass gathers the tokens of [lo, hi]
    into the pool and the threshold comes from exact pairwise sums: a pool token survives iff
    F(hi + 1) + the count/mass of the pool tokens strictly above it is below the target (the
    kernel's rule).
    ok == 0: the rounds ran out with more than P_MAX tokens in the bracket."""
    jj = tl.arange(0, SNC)
    for r in range(SROUNDS):
        if (c_lo - c_hi > P_MAX) & (hi > lo):
            if value0 > r:  # the first round when value0 == 1 (r is a Python int when interpreted)
                f = jj.to(tl.float32) / SNC
                cand = _key_of(lo_v * (1.0 - f) + hi_v * f)
            else:
                cand = _candidates(lo, hi, SNC)
            acc_c = tl.zeros([SNC, SC], dtype=tl.int32)
            acc_m = tl.zeros([SNC, SC], dtype=tl.float32)
            for start in range(0, n, SC):
                offs = start + tl.arange(0, SC)
                x, key = _sanitize_key(
                    tl.load(row_ptr + offs, mask=offs < n, other=float("-inf")).to(tl.float32))
                w = tl.exp((x - m) * inv_t)
                ge = (key[None, :] >= cand[:, None]) & (offs < n)[None, :]
                acc_c += ge.to(tl.int32)
                acc_m += tl.where(ge, w[None, :], 0.0)
            cnt = tl.sum(acc_c, axis=1)
            mass = tl.sum(acc_m, axis=1)
            ok = tl.where(count_mode != 0, cnt >= k, mass >= target)
            new_lo = tl.max(tl.where(ok, cand, lo), axis=0)
            new_hi = tl.min(tl.where(ok, hi, cand - 1), axis=0)
            at_lo = ok & (cand == new_lo)
            at_hi = tl.where(count_mode != 0, cnt < k, mass < target) & (cand - 1 == new_hi)
            cs = tl.max(tl.where(at_lo, cnt, -1), axis=0)
            ch = tl.max(tl.where(at_hi, cnt, -1), axis=0)
            fh = tl.max(tl.where(at_hi, mass, -1.0), axis=0)
            c_lo = tl.where(cs >= 0, cs, c_lo)
            c_hi = tl.where(ch >= 0, ch, c_hi)
            f_hi = tl.where(ch >= 0, fh, f_hi)
            lo = new_lo
            hi = new_hi
    ok = tl.zeros([], dtype=tl.int32)
    t = lo
    cnt_t = c_lo
    mass_t = tl.full([], -1.0, dtype=tl.float32)
    if hi <= lo:
        ok = ok + 1
    elif c_lo - c_hi <= P_MAX:
        n_pool = tl.zeros([], dtype=tl.int32)
        for start in range(0, n, CHUNK):
            offs = start + tl.arange(0, CHUNK)
            x, key = _sanitize_key(tl.load(row_ptr + offs, mask=offs < n, other=float("-inf")).to(tl.float32))
            sel = (key >= lo) & (key <= hi) & (offs < n)
            sel_i = sel.to(tl.int32)
            pos = n_pool + tl.cumsum(sel_i, axis=0) - 1
            smask = sel & (pos < P_MAX)
            tl.store(pk_row + pos, key, mask=smask)
            tl.store(px_row + pos, x, mask=smask)
            tl.store(pi_row + pos, offs, mask=smask)
            n_pool += tl.sum(sel_i, axis=0)
        if n_pool <= P_MAX:
            tl.debug_barrier()
            jp = tl.arange(0, P_MAX)
            vj = jp < n_pool
            kj = tl.load(pk_row + jp, mask=vj, other=KEY_NEG_INF)
            xj = tl.load(px_row + jp, mask=vj, other=float("-inf"))
            wj = tl.where(vj, tl.exp((xj - m) * inv_t), 0.0)
            above_c, above_m = _pool_above(pk_row, px_row, n_pool, kj, m, inv_t, P_MAX, PB)
            kept = vj & tl.where(count_mode != 0, c_hi + above_c < k, f_hi + above_m < target)
            n_kept = tl.sum(kept.to(tl.int32), axis=0)
            if n_kept > 0:
                ok = ok + 1
                t = tl.min(tl.where(kept, kj, BIG_INDEX), axis=0)
                cnt_t = c_hi + n_kept
                mass_t = f_hi + tl.sum(tl.where(kept, wj, 0.0), axis=0)
    return ok, t, cnt_t, mass_t


@triton.jit
def _select_row(row_ptr, n, gmax_row, gsum_row, num_groups, pk_row, px_row, pi_row,
                k, k_on, p, p_on, inv_t, seed,
                CHUNK: tl.constexpr, NC: tl.constexpr, ROUNDS: tl.constexpr, SC: tl.constexpr,
                SNC: tl.constexpr, SROUNDS: tl.constexpr, P_MAX: tl.constexpr,
                PB: tl.constexpr):
    """Select path for a sampled row with top-p and/or top-k (any k): the max and the total
    weight come from the group statistics (no pass over the row); top-k: `_select` by count
    from the k-th largest group max (a lower bound of the k-th largest logit); top-p: `_select`
    by mass from a lower bound of the threshold: with c tokens left, the tokens below
    v0 = max + log(q (1 - p) Z_k / c) / inv_t weigh at most q (1 - p) Z_k together (q = 1/4:
    room for rounding), so F(v0) >= p Z_k. Then the draw. Returns (ok, token, max, threshold
    key, kept mass); ok == 0: use the general path."""
    mv = tl.full([CHUNK], float("-inf"), dtype=tl.float32)
    for start in range(0, num_groups, CHUNK):
        offs = start + tl.arange(0, CHUNK)
        mv = tl.maximum(mv, tl.load(gmax_row + offs, mask=offs < num_groups, other=float("-inf")))
    m = tl.max(mv, axis=0)
    ok = (m > float("-inf")).to(tl.int32)
    token = tl.zeros([], dtype=tl.int32)
    t_key = tl.zeros([], dtype=tl.int32)
    z = tl.full([], 1.0, dtype=tl.float32)
    if ok != 0:
        zv = tl.zeros([CHUNK], dtype=tl.float32)
        for start in range(0, num_groups, CHUNK):
            offs = start + tl.arange(0, CHUNK)
            g = tl.load(gmax_row + offs, mask=offs < num_groups, other=float("-inf"))
            s = tl.load(gsum_row + offs, mask=offs < num_groups, other=0.0)
            zv += tl.where(g > float("-inf"), s * tl.exp((g - m) * inv_t), 0.0)
        zk = tl.sum(zv, axis=0)
        hi = _key_of(m)
        lo = tl.full([], KEY_NEG_INF, dtype=tl.int32)
        c_lo = n
        zero_i = tl.zeros([], dtype=tl.int32)
        zero_f = tl.zeros([], dtype=tl.float32)
        if k_on:
            lo_v = tl.full([], float("-inf"), dtype=tl.float32)
            if k <= num_groups:
                lo = _search(gmax_row, num_groups, lo, tl.full([], KEY_MAX, dtype=tl.int32),
                             k, 0.0, 0.0, 1.0, False, CHUNK, NC, ROUNDS)
                lo_v = _value_of(lo)
            ok, tk, c_lo, mk = _select(row_ptr, n, lo, hi, c_lo, zero_i, zero_f, lo_v, m,
                                       (lo_v > float("-inf")).to(tl.int32), 1, k, 0.0, m, inv_t,
                                       pk_row, px_row, pi_row, CHUNK, SC, SNC, SROUNDS, P_MAX, PB)
            if ok != 0:
                if mk < 0.0:
                    mk = _mass_ge(row_ptr, n, tk, m, inv_t, CHUNK)
                zk = mk
            lo = tk
            t_key = tk
        else:
            t_key = lo
        z = zk
        if (ok != 0) & p_on:
            target = p * zk
            lo_v = _value_of(lo)
            if p < 0.999:
                v0 = m + tl.log(0.25 * (1.0 - p) * zk / c_lo.to(tl.float32)) / inv_t
                if (v0 > lo_v) & (v0 < m):
                    lo = _key_of(v0)
                    lo_v = v0
            ok, t_key, _, mt = _select(row_ptr, n, lo, hi, c_lo, zero_i, zero_f, lo_v, m,
                                       (lo_v > float("-inf")).to(tl.int32), 0, 0, target, m,
                                       inv_t, pk_row, px_row, pi_row,
                                       CHUNK, SC, SNC, SROUNDS, P_MAX, PB)
            if ok != 0:
                if mt < 0.0:
                    mt = _mass_ge(row_ptr, n, t_key, m, inv_t, CHUNK)
                z = mt
        if ok != 0:
            token = _draw(row_ptr, n, t_key, m, inv_t, seed, CHUNK)
    return ok, token, m, t_key, z


@triton.jit
def _group_stats(row_ptr, g, vocab, num_groups, gmax_row, gsum_row, inv_t, GS: tl.constexpr,
                 WITH_SUM: tl.constexpr):
    """The sanitised max of each group g (a vector of group ids) of GS consecutive logits into
    gmax_row[g], and with WITH_SUM its weight sum sum exp((x - group max) * inv_t) into gsum_row[g]."""
    offs = g[:, None] * GS + tl.arange(0, GS)[None, :]
    x, _ = _sanitize_key(tl.load(row_ptr + offs, mask=offs < vocab, other=float("-inf")).to(tl.float32))
    gm = tl.max(x, axis=1)
    tl.store(gmax_row + g, gm, mask=g < num_groups)
    if WITH_SUM:
        gm_safe = tl.where(gm > float("-inf"), gm, 0.0)
        tl.store(gsum_row + g, tl.sum(tl.exp((x - gm_safe[:, None]) * inv_t), axis=1), mask=g < num_groups)


@triton.jit
def group_max_kernel(
    logits_ptr,      # [batch, vocab] fp32/fp16/bf16, vocab contiguous
    gmax_ptr,        # [batch, num_groups] fp32 out (row stride gmax_stride): sanitised max
                     # of logits[row, g*GS:(g+1)*GS]
    gsum_ptr,        # [batch, num_groups] fp32 out (row stride gmax_stride, written when
                     # WITH_SUM): sum of exp((x - group max) / temperature) over the group
    temp_ptr,        # [batch] fp32 (read when WITH_SUM and T_TENSOR)
    temp_val,        # scalar temperature (WITH_SUM, not T_TENSOR)
    batch, vocab, num_groups,
    stride_row,      # logits.stride(0)
    gmax_stride,     # gmax / gsum row stride (elements)
    GS: tl.constexpr,    # group size (power of two)
    GPB: tl.constexpr,   # groups per task (power of two)
    T_TENSOR: tl.constexpr,
    WITH_SUM: tl.constexpr,
):
    pid = tl.program_id(0)
    blocks = tl.cdiv(num_groups, GPB)
    for task in range(pid, batch * blocks, tl.num_programs(0)):
        row = task // blocks
        row64 = tl.cast(row, tl.int64)
        _, inv_t = _temperature(tl.cast(_row_param(temp_ptr, row, temp_val, T_TENSOR), tl.float32))
        _group_stats(logits_ptr + row64 * stride_row, (task % blocks) * GPB + tl.arange(0, GPB), vocab,
                     num_groups, gmax_ptr + row64 * gmax_stride, gsum_ptr + row64 * gmax_stride, inv_t,
                     GS, WITH_SUM)


@triton.jit
def _sample_row(row, logits_ptr, tokens_ptr, probs_ptr, gmax_ptr, gsum_ptr, list_ptr, pool_key_ptr,
                pool_x_ptr, pool_idx_ptr, top_k_ptr, top_p_ptr, temp_ptr, seeds_ptr,
                top_k_val, top_p_val, temp_val, vocab, num_groups, stride_row, ws_stride,
                HAS_K: tl.constexpr, K_TENSOR: tl.constexpr, HAS_P: tl.constexpr,
                P_TENSOR: tl.constexpr, T_TENSOR: tl.constexpr, RETURN_PROBS: tl.constexpr,
                USE_POOL: tl.constexpr, CHUNK: tl.constexpr, NC: tl.constexpr,
                ROUNDS: tl.constexpr, GS: tl.constexpr, NGB: tl.constexpr, P_MAX: tl.constexpr,
                PB: tl.constexpr, SC: tl.constexpr, SNC: tl.constexpr, SROUNDS: tl.constexpr):
    """Sample one row (its group statistics written, when USE_POOL): the token, and with
    RETURN_PROBS the row's probabilities."""
    row64 = tl.cast(row, tl.int64)
    row_ptr = logits_ptr + row64 * stride_row
    k = 0
    if HAS_K:
        # clamped before the int32 cast: an int64 k past int32 must not wrap (>= vocab: off)
        k = tl.cast(tl.minimum(_row_param(top_k_ptr, row, top_k_val, K_TENSOR), vocab), tl.int32)
    p = 1.0
    if HAS_P:
        p = tl.cast(_row_param(top_p_ptr, row, top_p_val, P_TENSOR), tl.float32)
    t = tl.cast(_row_param(temp_ptr, row, temp_val, T_TENSOR), tl.float32)
    seed = tl.load(seeds_ptr + row)
    greedy, inv_t = _temperature(t)
    k_on = (k > 0) & (k < vocab)
    p_on = (p > 0.0) & (p < 1.0)  # outside (0, 1] or NaN: off
    done = tl.zeros([], dtype=tl.int32)
    token = tl.zeros([], dtype=tl.int32)
    m = tl.full([], float("-inf"), dtype=tl.float32)
    t_key = tl.zeros([], dtype=tl.int32)
    z = tl.full([], 1.0, dtype=tl.float32)
    if USE_POOL:
        if k_on & (k <= num_groups) & (k <= P_MAX) & (greedy == 0):
            done, token, m, t_key, z = _pool_row(
                row_ptr, vocab, gmax_ptr + row64 * ws_stride, num_groups,
                list_ptr + row64 * ws_stride, pool_key_ptr + row64 * ws_stride,
                pool_x_ptr + row64 * ws_stride, pool_idx_ptr + row64 * ws_stride,
                k, p, p_on, inv_t, seed, CHUNK, NC, ROUNDS, GS, NGB, P_MAX, PB)
        if (done == 0) & (greedy == 0) & (k_on | p_on):
            done, token, m, t_key, z = _select_row(
                row_ptr, vocab, gmax_ptr + row64 * ws_stride, gsum_ptr + row64 * ws_stride,
                num_groups, pool_key_ptr + row64 * ws_stride,
                pool_x_ptr + row64 * ws_stride, pool_idx_ptr + row64 * ws_stride,
                k, k_on, p, p_on, inv_t, seed, CHUNK, NC, ROUNDS, SC, SNC, SROUNDS, P_MAX, PB)
    if done == 0:
        token, m, t_key, z = _general_row(row_ptr, vocab, k, k_on, p, p_on, inv_t, greedy,
                                          seed, CHUNK, NC, ROUNDS)
    tl.store(tokens_ptr + row, token.to(tl.int64))
    if RETURN_PROBS:
        out_ptr = probs_ptr + row64 * vocab
        alive = m > float("-inf")
        m_safe = tl.where(alive, m, 0.0)
        inv_z = 1.0 / tl.where(z > 0.0, z, 1.0)
        t_eff = tl.where(alive, t_key, BIG_INDEX)  # above every sanitised key when dead
        for start in range(0, vocab, CHUNK):
            offs = start + tl.arange(0, CHUNK)
            x, key = _sanitize_key(tl.load(row_ptr + offs, mask=offs < vocab,
                                           other=float("-inf")).to(tl.float32))
            pr = tl.where(key >= t_eff, tl.exp((x - m_safe) * inv_t) * inv_z, 0.0)
            if greedy != 0:
                pr = tl.where(offs == tl.where(alive, token, -1), 1.0, 0.0)
            tl.store(out_ptr + offs, pr, mask=offs < vocab)


@triton.jit
def sampling_kernel(
    logits_ptr,      # [batch, vocab] fp32/fp16/bf16, vocab contiguous
    tokens_ptr,      # [batch] int64 out
    probs_ptr,       # [batch, vocab] fp32 out (written when RETURN_PROBS), contiguous
    # scratch, all with row stride ws_stride (read/written when USE_POOL):
    gmax_ptr,        # [batch, num_groups] fp32: group maxima (group_max_kernel's, or SAMPLE_LAST's own)
    gsum_ptr,        # [batch, num_groups] fp32: group weight sums (likewise)
    list_ptr,        # [batch, P_MAX] int32: selected group ids
    pool_key_ptr,    # [batch, P_MAX] int32: pool keys
    pool_x_ptr,      # [batch, P_MAX] fp32: pool values
    pool_idx_ptr,    # [batch, P_MAX] int32: pool vocab indices
    top_k_ptr,       # [batch] int32/int64 (read when K_TENSOR)
    top_p_ptr,       # [batch] fp32 (read when P_TENSOR)
    temp_ptr,        # [batch] fp32 (read when T_TENSOR)
    seeds_ptr,       # [batch] int64
    arrivals_ptr,    # SAMPLE_LAST: int32 [batch], 0 between calls
    top_k_val, top_p_val, temp_val,   # scalars used when the *_TENSOR flag is off
    batch, vocab, num_groups,
    stride_row,      # logits.stride(0)
    ws_stride,       # row stride of the scratch tensors (elements)
    HAS_K: tl.constexpr, K_TENSOR: tl.constexpr,
    HAS_P: tl.constexpr, P_TENSOR: tl.constexpr,
    T_TENSOR: tl.constexpr,
    RETURN_PROBS: tl.constexpr,
    USE_POOL: tl.constexpr,
    # USE_POOL in one launch: tasks of GPB groups write the group statistics (as
    # group_max_kernel does), and the task of a row that finishes last samples the row
    SAMPLE_LAST: tl.constexpr,
    CHUNK: tl.constexpr, NC: tl.constexpr, ROUNDS: tl.constexpr,
    GS: tl.constexpr, GPB: tl.constexpr, NGB: tl.constexpr, P_MAX: tl.constexpr, PB: tl.constexpr,
    SC: tl.constexpr, SNC: tl.constexpr, SROUNDS: tl.constexpr,
):
    pid = tl.program_id(0)
    if SAMPLE_LAST:
        # block-major tasks: every row's last block comes in the last wave, so a row is sampled
        # by a program with (almost) no group tasks left. Row-major, a program that samples a
        # row holds up its later tasks, becomes the last arrival of their rows too and samples
        # those as well, one after another (H200, B64 x 128256: 483 us row-major, 160 block-major)
        blocks = tl.cdiv(num_groups, GPB)
        for task in range(pid, batch * blocks, tl.num_programs(0)):
            row = task % batch
            row64 = tl.cast(row, tl.int64)
            _, inv_t = _temperature(tl.cast(_row_param(temp_ptr, row, temp_val, T_TENSOR), tl.float32))
            _group_stats(logits_ptr + row64 * stride_row, (task // batch) * GPB + tl.arange(0, GPB),
                         vocab, num_groups, gmax_ptr + row64 * ws_stride, gsum_ptr + row64 * ws_stride,
                         inv_t, GS, True)
            # every thread's stores come before the arrival (barrier, then release); the acquire
            # lets the row's last task read all of its groups' statistics (no line of them can
            # sit in this core's L1: the row's statistics are read only after its last arrival)
            tl.debug_barrier()
            if tl.atomic_add(arrivals_ptr + row, 1, sem="acq_rel") == blocks - 1:
                _sample_row(row, logits_ptr, tokens_ptr, probs_ptr, gmax_ptr, gsum_ptr, list_ptr,
                            pool_key_ptr, pool_x_ptr, pool_idx_ptr, top_k_ptr, top_p_ptr, temp_ptr,
                            seeds_ptr, top_k_val, top_p_val, temp_val, vocab, num_groups, stride_row,
                            ws_stride, HAS_K, K_TENSOR, HAS_P, P_TENSOR, T_TENSOR, RETURN_PROBS,
                            USE_POOL, CHUNK, NC, ROUNDS, GS, NGB, P_MAX, PB, SC, SNC, SROUNDS)
                tl.store(arrivals_ptr + row, 0)
    else:
        for row in range(pid, batch, tl.num_programs(0)):
            _sample_row(row, logits_ptr, tokens_ptr, probs_ptr, gmax_ptr, gsum_ptr, list_ptr,
                        pool_key_ptr, pool_x_ptr, pool_idx_ptr, top_k_ptr, top_p_ptr, temp_ptr,
                        seeds_ptr, top_k_val, top_p_val, temp_val, vocab, num_groups, stride_row,
                        ws_stride, HAS_K, K_TENSOR, HAS_P, P_TENSOR, T_TENSOR, RETURN_PROBS,
                        USE_POOL, CHUNK, NC, ROUNDS, GS, NGB, P_MAX, PB, SC, SNC, SROUNDS)
