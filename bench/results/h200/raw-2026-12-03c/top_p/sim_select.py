import numpy as np
def key_of(x):
    x = np.where(x == 0, 0.0, x).astype(np.float32)
    b = x.view(np.int32)
    return np.where(b < 0, b ^ 0x7FFFFFFF, b).astype(np.int32)
def value_of(k):
    k = np.asarray(k, np.int32)
    return np.where(k < 0, k ^ 0x7FFFFFFF, k).astype(np.int32).view(np.float32)
def cands(lo, hi, NC):
    w = int(hi) + 1 - int(lo); q = w // (NC + 1); r = w - q * (NC + 1)
    j = np.arange(1, NC + 1)
    return (lo + q * j + r * j // (NC + 1)).astype(np.int64)
def run(n=128256, p=0.95, SNC=16, P_MAX=512, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * 3).astype(np.float32)
    key = key_of(x).astype(np.int64)
    m = x.max(); w = np.exp((x - m).astype(np.float32)).astype(np.float64)
    zk = w.sum(); target = p * zk
    c_lo = n
    v0 = m + np.log(0.25 * (1 - p) * zk / c_lo)
    lo = int(key_of(np.float32(v0))); hi = int(key_of(m)); lo_v = v0; hi_v = m
    c_hi = 0
    r = 0; passes = 0
    while c_lo - c_hi > P_MAX and hi > lo:
        if r == 0:
            f = np.arange(SNC) / SNC
            cand = key_of((lo_v * (1 - f) + hi_v * f).astype(np.float32)).astype(np.int64)
        else:
            cand = cands(lo, hi, SNC)
        cnt = np.array([(key >= c).sum() for c in cand]); mass = np.array([w[key >= c].sum() for c in cand])
        ok = mass >= target
        new_lo = max([c for c, o in zip(cand, ok) if o] + [lo]); new_hi = min([hi] + [c - 1 for c, o in zip(cand, ok) if not o])
        c_lo = cnt[cand == new_lo].max() if (ok & (cand == new_lo)).any() else c_lo
        at_hi = (~ok) & (cand - 1 == new_hi)
        c_hi = cnt[at_hi].max() if at_hi.any() else c_hi
        lo, hi = new_lo, new_hi; r += 1
        print(f"round {r}: bracket [{value_of(lo)}, {value_of(hi)}] tokens in bracket {c_lo - c_hi} (true {((key>=lo)&(key<=hi)).sum()})")
    t = np.sort(x)[::-1]; cs = np.cumsum(np.exp(t - m)); nk = np.searchsorted(cs - np.exp(t-m), target)
    print("nucleus", nk, "threshold", t[nk-1], "v0", v0, "rounds", r)
import sys
run(n=int(sys.argv[1]) if len(sys.argv) > 1 else 128256)
run(SNC=16, P_MAX=512, seed=1)
