"""How well the host's unified-buffer estimate of a flash_attention launch on Ascend
(`kernels/flash_attention.npu_ub_bytes`, which `tiles` shrinks the config's tiles by) bounds the
Ascend compile check's figure for the lowered kernel, over a grid of shapes and tiles.

    .venv-ascend/bin/python bench/cpu/ascend_ub_fit.py [--out FILE]

Needs triton-ascend's triton-adapter-opt (the compile check's toolchain); runs on the CPU in
about 10 minutes on 2 cores. Every case is lowered with the config's tiles as they are (the
budget lifted), so tiles over the unified buffer are measured too. The report lists the figure
against the estimate per case, the cases the estimate would refuse although they fit (the cost
of a bound that is linear in the tiles), and any case the estimate does not bound (none may).
"""
import argparse
import itertools
import os
import sys
import tempfile
import time

from ascend_kernels.ascend_check.cases import op_cases
from ascend_kernels.ascend_check.run import check_cases
from ascend_kernels.kernels import flash_attention as fa_kern

VARIANTS = {
    "causal": {}, "non-causal": {"causal": False}, "lse": {"lse": True}, "window": {"window": 16},
    "softcap": {"softcap": 30.0}, "softcap+window": {"softcap": 30.0, "window": 16},
    "paged 16": {"block_size": 16, "context": 40}, "paged 64": {"block_size": 64, "context": 100},
    "paged 16 int8": {"block_size": 16, "context": 40, "cache_dtype": "int8"},
}
HEAD_SIZES = (16, 64, 96, 128, 256)
GQA = (1, 4)
TILES = ((16, 32), (32, 32), (64, 32), (32, 64), (64, 64), (16, 128), (128, 16))


def cases() -> list:
    """(variant, head size, gqa, case) for the grid; tiles far over the buffer are left out."""
    out = []
    for (name, extra), head, gqa in itertools.product(VARIANTS.items(), HEAD_SIZES, GQA):
        shape = dict(batch=1, seqlen=40, heads=gqa if gqa > 1 else 2, kv_heads=1 if gqa > 1 else 2,
                     head_size=head, dtype="bfloat16", **extra)
        for m, n in TILES:
            if head * m > 128 * 64 and m * n > 64 * 32:
                continue
            config = {"BLOCK_M": m, "BLOCK_N": n, "multibuffer": True, "IO_BLOCKS": True,
                      "grid_programs_per_core": 1}
            out += [(name, head, gqa, c) for c in op_cases("flash_attention", shape, config)]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    os.environ.setdefault("ASCEND_KERNELS_CACHE_DIR", tempfile.mkdtemp())
    fa_kern.NPU_UB_BYTES = 1 << 40  # lower every config's tiles as they are
    t0 = time.perf_counter()
    grid = cases()
    results = check_cases([c for *_, c in grid], use_cache=False, progress=False)
    limit = 192 * 1024
    rows, unbounded, refused = [], 0, 0
    for (name, head, gqa, case), r in zip(grid, results):
        c = case.constexprs
        est = fa_kern.npu_ub_bytes(c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_D"], c["SOFTCAP"] > 0, c["QUANT"] != 0)
        if not r.lowered:
            rows.append(f"| {name} | {head} | {gqa} | {c['BLOCK_M']} x {c['BLOCK_N']} | not lowered: {r.error[:80]} | | |")
            continue
        got = r.ub_used
        unbounded += got > est
        refused += got <= limit < est
        flag = "NOT BOUNDED" if got > est else ("refused, fits" if got <= limit < est else "")
        rows.append(f"| {name} | {head} | {gqa} | {c['BLOCK_M']} x {c['BLOCK_N']} | {got / 1024:.1f} | "
                    f"{est / 1024:.1f} ({est / got:.2f}x) | {flag} |")
    lowered = sum(r.lowered for r in results)
    ratios = [fa_kern.npu_ub_bytes(c.constexprs["BLOCK_M"], c.constexprs["BLOCK_N"], c.constexprs["BLOCK_D"],
                                   c.constexprs["SOFTCAP"] > 0, c.constexprs["QUANT"] != 0) / r.ub_used
              for (*_, c), r in zip(grid, results) if r.lowered and r.ub_used]
    text = "\n".join([
        "# The host's unified-buffer estimate of flash_attention on Ascend against the compile check",
        "",
        f"Command: `.venv-ascend/bin/python bench/cpu/ascend_ub_fit.py --out {args.out or 'FILE'}` "
        f"(triton-ascend 3.2.0, triton-adapter-opt, target Ascend910B3; {time.perf_counter() - t0:.0f} s).",
        "",
        f"{len(results)} cases, {lowered} lowered. The estimate bounds the check's figure in "
        f"{lowered - unbounded} of {lowered} (over-estimate: mean {sum(ratios) / len(ratios):.2f}x, "
        f"max {max(ratios):.2f}x). Cases that fit the 192 KB but that the estimate refuses (the op "
        f"halves their tiles): {refused}.",
        "",
        "| variant | head size | GQA | tiles (M x N) | check KB | estimate KB | |",
        "|---|---:|---:|---|---:|---:|---|",
        *rows, ""])
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 1 if unbounded else 0


if __name__ == "__main__":
    sys.exit(main())
