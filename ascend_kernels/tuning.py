"""The tuner behind `ascend-kernels tune`: time each op's search space on this device for the
shapes of a bench suite, store the best configs in the user's tuning cache, and export them as
the shipped defaults (`ascend_kernels/tuned/`).

On Ascend the search space is first pruned by the Ascend compile check's verdicts (see
launcher/autotune.py). Timing is `triton.testing.do_bench` on a GPU/NPU; on CPU nothing is
timed (interpreter timings say nothing about a GPU or an NPU): the run lists each tuning key
and the config it would use. `tune_advice` is what `tune` and `env` say about it.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import torch

from .bench import problems, providers as prov
from .bench.runner import _fmt, _free, _ms, _progress, _short, ops_arg, pick_device, suite_arg
from .launcher import autotune, device as _device, op as _op


def add_tune_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--op", nargs="+", choices=prov.OPS, metavar="OP", help="ops to tune (default: all)")
    p.add_argument("--suite", default=None, help="the shapes to tune for (default: quick on CPU, full elsewhere)")
    p.add_argument("--export", action="store_true",
                   help="also write the shipped defaults for this device into ascend_kernels/tuned/")
    p.add_argument("--export-only", action="store_true",
                   help="time nothing: write the shipped defaults from what the tuning cache holds "
                        "(after runs split by op, or one cut short)")
    p.add_argument("--device", help="cuda, npu, ... (default: the accelerator if any)")
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], help="override the suite's dtype")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--jobs", type=int, default=None,
                   help="processes that compile the configs ahead of the timing loop (default: the "
                        "CPU count less two on a GPU/NPU; 1: the timing loop compiles)")


def tune_advice(backend: str) -> tuple[bool, str]:
    """(whether `ascend-kernels tune` times anything for this backend here, what to tell the user)."""
    if backend == "cpu":
        return False, ("nothing to tune on CPU: Triton interpreter timings say nothing about a GPU or an "
                       "NPU. Run `ascend-kernels tune` on a machine with an NVIDIA GPU (upstream triton) or "
                       "an Ascend NPU (triton-ascend); it stores the best configs in the tuning cache, and "
                       "`--export` writes them as the shipped defaults")
    ok, why = _device.triton_runs_on(backend)
    if not ok:
        return False, f"nothing to tune: {why}"
    return True, (f"`ascend-kernels tune` times each op's search space on this {backend} device for a "
                  f"suite's shapes and stores the best configs in the tuning cache")


def _compile_slice(task: tuple) -> int:
    """Worker of `tune --jobs`: compile a slice of the search space for one suite shape into
    Triton's on-disk cache, launching nothing (the device stays the timing loop's); returns how
    many configs compiled."""
    op, shape, device, dtype, first, count = task
    spec = _op.get(op)
    t = prov.op_module(op).tune_shape(shape)
    problem = problems.make(op, t, device, getattr(torch, t["dtype"]) if "dtype" in t else getattr(torch, dtype))
    if autotune.tuned_before(spec, problem.device.type, problem) is not None:
        return 0
    done = 0
    for config in autotune.search_space(spec, problem.device.type)[first:first + count]:
        try:
            for launch in spec.launches(problem, config, problem.device.type):
                launch.compile()
            done += 1
        except Exception:  # the timing loop reports it
            pass
    return done


def _compile_ahead(pool, work: list, device: torch.device, dtype: torch.dtype, jobs: int) -> list:
    """Hand every suite shape's search space, in slices, to the compile workers, in the order the
    timing loop takes the shapes; one AsyncResult per shape. Compiling, not timing, is most of a
    tuning run: the workers compile shape i + 1 onwards while shape i is timed."""
    pending = []
    for op, spec, _mod, shape in work:
        n = len(autotune.search_space(spec, device.type))
        step = max(1, -(-n // jobs))
        tasks = [(op, shape, str(device), str(dtype).replace("torch.", ""), i, step) for i in range(0, n, step)]
        pending.append(pool.map_async(_compile_slice, tasks))
    return pending


def tune_suite(suite: dict, ops: Optional[list], device: torch.device, dtype: torch.dtype,
               progress: bool = True, jobs: int = 1) -> list:
    """Tune every distinct tuning key of the suite; returns rows (op, key, best, ms, default ms)."""
    backend = device.type
    rows = []
    work = []
    for op in ops or list(suite["ops"]):
        if op not in suite["ops"]:
            continue
        spec = _op.get(op)
        mod = prov.op_module(op)
        work += [(op, spec, mod, s) for s in suite["ops"][op]]
    ok, why = _device.triton_runs_on(backend)
    pool = multiprocessing.get_context("spawn").Pool(jobs) if ok and backend != "cpu" and jobs > 1 else None
    compiled = _compile_ahead(pool, work, device, dtype, jobs) if pool is not None else None
    bar = _progress(len(work), progress)
    seen = set()
    try:
        for i, (op, spec, mod, shape) in enumerate(work):
            bar.set_description(f"tune {op}")
            bar.update(1)
            if compiled is not None:
                compiled[i].wait()  # this shape's configs are compiled
            try:
                t = mod.tune_shape(shape)
                problem = problems.make(op, t, device, getattr(torch, t["dtype"]) if "dtype" in t else dtype)
                key = autotune.key_of(spec, problem)
            except Exception as exc:
                rows.append({"op": op, "key": mod.label(shape), "note": f"make_problem: {_short(exc)}"})
                continue
            if (op, key) in seen:
                continue
            seen.add((op, key))
            cap_ok, cap_why = spec.capability(backend, problem) if ok else (False, why)
            if not cap_ok:
                rows.append({"op": op, "key": key, "note": f"not tunable: {cap_why}"})
                continue
            default = autotune.heuristic_config(spec, backend, problem)
            if backend == "cpu":
                rows.append({"op": op, "key": key, "best": default,
                             "note": "CPU: the config a call uses; nothing to time"})
                continue
            done = autotune.tuned_before(spec, backend, problem)
            if done is not None:  # resume: a key tuned by an earlier (interrupted) run
                rows.append({"op": op, "key": key, "best": done, "default": default,
                             "note": "tuned before: kept from the cache"})
                continue
            try:
                default_ms = autotune.time_config(spec, problem, default)
            except Exception as exc:
                default_ms = None
                rows.append({"op": op, "key": key, "note": f"default config failed: {_short(exc)}"})
            best, timings = autotune.tune(spec, problem, save=True)
            best_ms = timings.get(json.dumps(best, sort_keys=True))
            n_ok = sum(isinstance(v, float) for v in timings.values())
            rows.append({"op": op, "key": key, "best": best,
                         "best_ms": best_ms if isinstance(best_ms, float) else None,
                         "default": default, "default_ms": default_ms,
                         "note": f"{n_ok}/{len(timings)} configs ran"})
            del problem
            _free(device)
    finally:
        bar.close()
        if pool is not None:
            # kill the workers first: Pool.terminate alone can wait on a worker stuck in a
            # compile (a tune stopped by its time limit hung there once on the H200)
            for child in multiprocessing.active_children():
                child.kill()
            pool.terminate()
    return rows


def export_shipped(device: torch.device) -> Optional[Path]:
    """Write this device's tuned entries (current kernel sources only) as the shipped defaults,
    merged key by key into the ones already shipped for it (runs split by op or cut short add
    up; a key tuned again replaces its entry)."""
    backend, name = device.type, _device.device_name(device)
    autotune.reset()
    tab = autotune.table(backend, name)
    path = autotune.shipped_file(backend, name)
    shipped = json.loads(path.read_text()).get("ops", {}) if path.exists() else {}
    ops, tuned = {}, False
    for entries, is_user in ((shipped, False), (tab.user, True)):
        for op, entry in entries.items():
            try:
                spec = _op.get(op)
            except ValueError:
                continue
            if entry.get("source") != autotune.source_hash(spec, backend):
                continue  # tuned for another kernel source or search space
            merged = ops.setdefault(op, {})
            for k, v in entry.items():  # key by key: a later run's keys replace or add
                if isinstance(v, dict):
                    merged[k] = {**merged.get(k, {}), **v}
                elif not k.startswith("_"):
                    merged[k] = v
            tuned |= is_user
    if not tuned:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    # the architecture lets another device of it (an H100 for an H200's file) read the file
    data = {"format": autotune.FORMAT, "backend": backend, "device": name,
            "arch": _device.properties(device).get("arch"), "triton": _device.TRITON_VERSION, "ops": ops}
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path


def run_tune(args) -> int:
    # a run stopped by SIGTERM (a time limit) unwinds: the compile workers stop, the tuning
    # cache keeps every key finished so far
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    device = pick_device(args.device)
    if args.export_only:
        path = export_shipped(device)
        print(f"exported shipped defaults: {path}" if path else "nothing tuned to export")
        return 0
    suite = suite_arg(args.suite, device)
    ops = ops_arg(suite, args.op)
    dtype = getattr(torch, args.dtype) if args.dtype else getattr(torch, suite.get("dtype") or "bfloat16")
    print(f"# tune on {_device.device_name(device)} ({device.type}), suite {suite['name']}, "
          f"{str(dtype).replace('torch.', '')}")
    times, advice = tune_advice(device.type)
    if not times:
        print(f"\n{advice}. Below: each tuning key of the suite and the config a call uses now.\n")
    jobs = args.jobs if args.jobs is not None else max(1, (os.cpu_count() or 1) - 2)
    rows = tune_suite(suite, ops, device, dtype, progress=not args.no_progress, jobs=jobs)
    print("| op | key | best config | best ms | default ms | speedup over default | note |")
    print("|---|---|---|---:|---:|---:|---|")
    for r in rows:
        sp = (r["default_ms"] / r["best_ms"]) if r.get("best_ms") and r.get("default_ms") else None
        print(f"| {r['op']} | {r['key']} | {json.dumps(r['best'], sort_keys=True) if r.get('best') else '—'} | "
              f"{_ms(r.get('best_ms'))} | {_ms(r.get('default_ms'))} | "
              f"{_fmt(sp, '.2f')}{'x' if sp else ''} | {r.get('note', '')} |")
    if times:
        print(f"\ncache: {autotune.cache_file(device.type, _device.device_name(device))}")
    if args.export:
        path = export_shipped(device)
        print(f"exported shipped defaults: {path}" if path else "nothing tuned to export")
    return 0
