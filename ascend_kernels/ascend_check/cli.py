"""`ascend-kernels check`: its options and what it prints or writes."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .cache import cache_path
from .core import DEFAULT_TIMEOUT_S
from .report import render_report, summary
from .toolchain import adapter_available

DESCRIPTION = """\
Lower every kernel x every config of its Ascend search space x the bench suites' shapes through
triton-ascend's ttir and ttadapter stages (triton-adapter-opt; no CANN, no NPU) and read the
Linalg/HIVM IR: structured vs scalarised memory accesses, op counts per loop with the hot loops
(trip count growing with the problem), the unified-buffer peak against 192 KB, cube/vector mix
mode. Results are cached in {cache}, keyed by kernel source, constexprs, options and toolchain;
configs that fail are pruned from the launcher's Ascend search space. The report goes to stdout
unless --out is given. Exit status 1 when an op's heuristic (default) Ascend config fails a case
(the launcher would run it), or with --strict when any case fails; 2 without triton-ascend."""


def add_check_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The `check` options on an existing (sub)parser; pair with set_defaults(func=run_check)."""
    p.description = DESCRIPTION.format(cache=cache_path())
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--op", action="append", nargs="+", default=None, metavar="OP",
                   help="op(s) to check (default: all)")
    p.add_argument("--suite", default=None, help="bench suite whose shapes to use (default: all)")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="write the markdown report here (default: print it to stdout)")
    p.add_argument("--dump-ir", default=None, metavar="DIR",
                   help="lower every case again (no cache) and write its TTIR and Linalg IR "
                        "under DIR (index.txt maps files to cases)")
    p.add_argument("--jobs", type=int, default=None,
                   help="child processes lowering in parallel (default: CPUs, at most 8)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per case")
    p.add_argument("--no-cache", action="store_true", help="ignore and do not write the cache")
    p.add_argument("--quiet", action="store_true", help="no per-case progress on stderr")
    p.add_argument("--strict", action="store_true",
                   help="exit status 1 when any case fails, not only a default config's (for CI)")
    return p


def run_check(args) -> int:
    from .cases import check_ops, failing_defaults
    ok, why = adapter_available()
    if not ok:
        print(f"ascend-kernels check: {why}", file=sys.stderr)
        return 2
    ops = [o for group in (args.op or []) for o in group] or None
    t0 = time.perf_counter()
    results = check_ops(ops, suite=args.suite, progress=not args.quiet, timeout=args.timeout,
                        use_cache=not args.no_cache, dump_dir=args.dump_ir, workers=args.jobs)
    elapsed = time.perf_counter() - t0
    report = render_report(results, elapsed, "ascend-kernels " + " ".join(sys.argv[1:]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report)
        print(summary(results, elapsed) + f"\nreport: {args.out}")
    else:
        print(report)
        print(summary(results, elapsed), file=sys.stderr)
    if args.dump_ir:
        print(f"IR: {args.dump_ir}", file=sys.stderr)
    bad = failing_defaults(results)
    if bad:
        print(f"ascend-kernels check: the heuristic Ascend config of {', '.join(bad)} fails (see the "
              f"report); other failing configs are pruned from the search space", file=sys.stderr)
    return 1 if bad or (args.strict and any(not r.passed for r in results)) else 0
