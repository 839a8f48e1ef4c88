"""The bench runner behind `ascend-kernels bench`.

    ascend-kernels bench [--op OP ...] [--suite NAME] [--providers P ...] [--results DIR]

For each case of the suite: fresh random inputs, the float32 oracle, then every provider:
build it, run it once, check its output against the oracle (a wrong provider is flagged and
not timed), then time it (`triton.testing.do_bench` on GPU/NPU, a wall clock on CPU) and
measure its eager host time per call (`host_us_per_call`). Rows carry the median and p20/p80,
the host time, the throughput, the fraction of the roofline measured at the start of the run
(copy bandwidth, matmul rate) and the speedups over the fallback and the best peer. The
results (bench.md, bench.csv, bench.json, one PNG per op, command.txt) go to a folder:
`--results DIR`, by default ./ascend_kernels_results/<timestamp>-<device>/.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import ascend_kernels  # noqa: F401  (before triton: the interpreter switch is read at import)
import torch

from . import providers as prov

SUITES_DIR = Path(__file__).resolve().parent / "suites"
MODELS_FILE = SUITES_DIR / "_models.yaml"
DEFAULT_TIMING = {"cuda": (10.0, 50.0), "npu": (10.0, 50.0), "cpu": (1.0, 20.0)}  # warmup, rep ms
RESULTS_ROOT = Path("ascend_kernels_results")


class UsageError(Exception):
    """A wrong command-line value: the CLI prints it with the usage and exits with status 2."""


# ---- suites ---------------------------------------------------------------------------------

E2E_SUITE = "e2e"  # not a YAML suite: the end-to-end model benchmark of bench/e2e.py


def suite_names() -> list:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def load_models() -> dict:
    import yaml

    return yaml.safe_load(MODELS_FILE.read_text()) or {}


def _expand(entry: dict) -> list:
    keys = list(entry)
    values = [v if isinstance(v, list) else [v] for v in entry.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def load_suite(name: str) -> dict:
    """{name, dtype, warmup_ms, rep_ms, ops: {op: [shape dicts]}}; `name` is a suite name or a
    path to a YAML file. Model fields are merged into each shape (the entry's own keys win)."""
    import yaml

    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        path = SUITES_DIR / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"unknown suite {name!r}; choose from: {', '.join(suite_names() + [E2E_SUITE])} (or a .yaml path)")
    data = yaml.safe_load(path.read_text()) or {}
    models = load_models()
    models.update(data.get("models") or {})
    ops: dict = {}
    for op, entries in (data.get("ops") or {}).items():
        if op not in prov.OPS:
            raise ValueError(f"suite {path.name}: unknown op {op!r}")
        shapes = []
        for entry in entries:
            for case in _expand(entry):
                model = case.get("model")
                if model is not None and model not in models:
                    raise ValueError(f"suite {path.name}: unknown model {model!r}")
                shapes.append({**(models.get(model) or {}), **case})
        ops[op] = shapes
    return {"name": data.get("name", path.stem), "path": str(path), "dtype": data.get("dtype"),
            "warmup_ms": data.get("warmup_ms"), "rep_ms": data.get("rep_ms"),
            "description": data.get("description", ""), "ops": ops}


# ---- device, timing, roofline ---------------------------------------------------------------

def available_devices() -> list:
    """The --device values this machine takes: cpu, and cuda / npu (with indices) when present."""
    from ascend_kernels.launcher import device as _device

    _device.default_device()  # imports torch_npu where it is installed (registers torch.npu)
    out = ["cpu"]
    for kind in ("cuda", "npu"):
        mod = getattr(torch, kind, None)
        if mod is not None and mod.is_available():
            out += [kind] + [f"{kind}:{i}" for i in range(mod.device_count())]
    return out


def pick_device(name: Optional[str] = None) -> torch.device:
    """The named device (a UsageError naming the valid ones if it is absent here), else the
    accelerator if any, else the CPU."""
    if not name:
        from ascend_kernels.launcher import device as _device

        return _device.default_device()
    valid = available_devices()
    if name not in valid:
        raise UsageError(f"--device {name!r} is not available on this machine; choose from: {', '.join(valid)}")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "npu":
        torch.npu.synchronize(device)


SLOW_MS = 200.0  # a call slower than this is timed a few times by events, not by do_bench


def time_fn(fn, device: torch.device, warmup_ms: float, rep_ms: float, graph: bool = False) -> tuple:
    """(median, p20, p80) milliseconds.

    GPU/NPU: triton.testing.do_bench (its NPU build on Ascend), or do_bench_cudagraph with
    graph=True (CUDA; replays of a captured graph, no host launch overhead). A call that took
    over SLOW_MS twice in a row (e.g. a PyTorch reference looping over rows; a first slow call
    can be a compile) is timed 1-5 times with device events instead, so one slow provider does
    not eat the run's time budget.
    """
    if device.type in ("cuda", "npu"):
        import triton.testing

        mod = getattr(torch, device.type)

        def one():
            start, end = mod.Event(enable_timing=True), mod.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)

        times = [one()]  # also a warm-up; the check call before compiled most things
        if times[0] > SLOW_MS:  # compiled a variant the check call did not need? once more
            times = [one()]
        if times[0] > SLOW_MS:
            times += [one() for _ in range(max(0, min(4, int(2000 // times[0]))))]
            times.sort()
            return times[len(times) // 2], times[0], times[-1]
        if graph and device.type == "cuda":
            res = triton.testing.do_bench_cudagraph(fn, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        else:
            res = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        return tuple(float(r) for r in res)
    # CPU: no device events; a wall clock over a few runs (the check run was the warm-up)
    # slow calls (the interpreter can take seconds) are timed fewer times: at least once, at
    # least 3 times when one run is under a third of the repetition time
    times = []
    t_end = time.perf_counter() + rep_ms / 1e3
    while True:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= 50 or (time.perf_counter() >= t_end
                                and (len(times) >= 3 or times[0] > rep_ms / 3)):
            break
    times.sort()

    def q(f):
        return times[min(len(times) - 1, int(round(f * (len(times) - 1))))]
    return q(0.5), q(0.2), q(0.8)


def host_us_per_call(fn, device: torch.device, median_ms: float, budget_ms: float, calls: int = 100) -> float:
    """Eager wall-clock microseconds per call: back-to-back calls, one synchronize at the end.

    What an eager serving step pays per call: the host's cost of a call (validation, launch)
    where that is longer than the kernel, else the kernel time. Fewer calls (at least one)
    when `calls` of `median_ms` each would take over `budget_ms`.
    """
    n = max(1, min(calls, int(budget_ms / max(median_ms, 1e-3))))
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    synchronize(device)
    return (time.perf_counter() - t0) / n * 1e6


def measure_roofline(device: torch.device, warmup_ms: float, rep_ms: float) -> dict:
    """Copy bandwidth (bytes read + written / time) and the matmul rate, measured now."""
    big = device.type != "cpu"
    n = (1 << 28) if big else (1 << 24)  # bytes per buffer: 256 MiB (16 MiB on CPU)
    src = torch.randint(0, 255, (n,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = time_fn(lambda: dst.copy_(src), device, warmup_ms, max(rep_ms, 50.0))[0]
    copy_gbps = 2 * n / (ms * 1e-3) / 1e9
    del src, dst
    m = 8192 if big else 1024
    dt = torch.bfloat16 if big else torch.float32
    a = torch.randn(m, m, device=device, dtype=torch.float32).to(dt)
    b = torch.randn(m, m, device=device, dtype=torch.float32).to(dt)
    ms = time_fn(lambda: a @ b, device, warmup_ms, max(rep_ms, 50.0))[0]
    tflops = 2 * m ** 3 / (ms * 1e-3) / 1e12
    del a, b
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"copy_GBps": round(copy_gbps, 1), "matmul_TFLOPs": round(tflops, 2),
            "matmul": f"{m}x{m}x{m} {str(dt).replace('torch.', '')}"}


def _driver(device: torch.device) -> str:
    try:
        if device.type == "cuda":
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
        if device.type == "npu":
            for f in ("/usr/local/Ascend/driver/version.info",):
                if os.path.exists(f):
                    for line in Path(f).read_text().splitlines():
                        if line.startswith("Version="):
                            return line.split("=", 1)[1]
    except Exception:
        pass
    return "n/a"


def header_info(device: torch.device) -> dict:
    from ascend_kernels.launcher import device as _device

    v = _device.versions()
    info = {"device": _device.device_name(device), "backend": device.type, "driver": _driver(device),
            "torch": v["torch"], "triton": f"{v['triton']} ({v['triton_flavour']})",
            "torch_npu": v.get("torch_npu") or "n/a"}
    if v.get("cuda"):
        info["cuda"] = v["cuda"]
    if device.type == "cpu":
        info["interpreter"] = _device.interpreter_reason()
    return info


# ---- the run --------------------------------------------------------------------------------

def _row(op, shape, label, p, status, detail="", **kw) -> dict:
    row = {"op": op, "case": label, "provider": p.name, "kind": p.kind, "status": status,
           "detail": detail, "median_ms": None, "p20_ms": None, "p80_ms": None, "throughput": None,
           "unit": None, "tflops": None, "gbps": None, "roofline": None, "speedup_vs_fallback": None,
           "speedup_vs_best_peer": None, "best_peer": None, "setup_s": None, "host_us": None,
           "shape": json.dumps(shape, sort_keys=True)}
    row.update(kw)
    return row


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160] if text else ''}"


def _free(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_suite(suite: dict, ops: Optional[list] = None, provider_names: Optional[list] = None,
              device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None,
              warmup_ms: Optional[float] = None, rep_ms: Optional[float] = None,
              progress: bool = True, extra_providers: Optional[dict] = None, seed: int = 0,
              roofline: Optional[dict] = None, stream=None, graph: bool = False) -> dict:
    """Run `suite` and return {"header": {...}, "rows": [...]}.

    extra_providers: {op: [Provider]} appended to the op's own (tests use it).
    stream: a file (text mode) that gets each row as a JSON line as soon as it is measured.
    graph: time CUDA graph replays (do_bench_cudagraph) where the provider captures; rows whose
    provider does not capture are timed eagerly and say so.
    """
    device = device or pick_device(None)
    dw, dr = DEFAULT_TIMING.get(device.type, (10.0, 50.0))
    warmup_ms = warmup_ms if warmup_ms is not None else (suite.get("warmup_ms") or dw)
    rep_ms = rep_ms if rep_ms is not None else (suite.get("rep_ms") or dr)
    dtype = dtype or getattr(torch, suite.get("dtype") or "bfloat16")
    ops = [op for op in (ops or list(suite["ops"])) if op in suite["ops"]]
    t_start = time.time()
    header = header_info(device)
    header.update(suite=suite["name"], dtype=str(dtype).replace("torch.", ""), warmup_ms=warmup_ms,
                  rep_ms=rep_ms, timer=("wall clock" if device.type == "cpu" else
                                        "triton.testing.do_bench_cudagraph (eager where capture fails)"
                                        if graph and device.type == "cuda" else "triton.testing.do_bench"),
                  host_time="eager wall clock per call over back-to-back calls, one synchronize at the end")
    header.update(roofline or measure_roofline(device, warmup_ms, rep_ms))
    bw, rate = header["copy_GBps"] * 1e9, header["matmul_TFLOPs"] * 1e12

    plan = []  # (op, module, providers present, absent rows)
    rows: list = []
    for op in ops:
        mod = prov.op_module(op)
        present = []
        for p in mod.providers() + list((extra_providers or {}).get(op, [])):
            if provider_names and p.name not in provider_names:
                continue
            why = p.absent_reason(device)
            if why:
                rows.append(_row(op, {}, "*", p, "absent", why))
            else:
                present.append(p)
        plan.append((op, mod, present))
    total = sum(len(suite["ops"][op]) * len(present) for op, _, present in plan)
    bar = _progress(total, progress)
    try:
        for op, mod, present in plan:
            for ci, shape in enumerate(suite["ops"][op]):
                label = mod.label(shape)
                case_rows = _run_case(op, mod, shape, label, present, device, dtype, warmup_ms,
                                      rep_ms, bw, rate, seed + ci, bar, graph)
                rows.extend(case_rows)
                if stream is not None:
                    for r in case_rows:
                        stream.write(json.dumps(r, default=str) + "\n")
                    stream.flush()
    finally:
        bar.close()
    header["wall_s"] = round(time.time() - t_start, 1)
    return {"header": header, "rows": rows}


def _run_case(op, mod, shape, label, present, device, dtype, warmup_ms, rep_ms, bw, rate, seed, bar,
              graph=False):
    rows = []
    torch.manual_seed(seed)
    flops, nbytes = mod.cost(shape, dtype)
    try:
        inputs = mod.make_inputs(shape, device, dtype)
        expected = mod.oracle(inputs)
        synchronize(device)
    except Exception as exc:  # the case itself does not fit (e.g. out of memory)
        for p in present:
            rows.append(_row(op, shape, label, p, "error", f"case setup: {_short(exc)}"))
            bar.update(1)
        _free(device)
        return rows
    for p in present:
        bar.set_description(f"{op}: {p.name}")
        rows.append(_run_provider(op, mod, shape, label, p, inputs, expected, device, warmup_ms,
                                  rep_ms, flops, nbytes, bw, rate, graph))
        bar.update(1)
    del inputs, expected
    _free(device)
    _speedups(rows)
    return rows


def _run_provider(op, mod, shape, label, p, inputs, expected, device, warmup_ms, rep_ms, flops,
                  nbytes, bw, rate, graph=False) -> dict:
    t0 = time.perf_counter()
    fn = None
    try:
        with p.environment():
            fn = p.build(inputs, shape)
            out = fn()
            synchronize(device)
            setup_s = round(time.perf_counter() - t0, 3)
            ok, detail = mod.check(out, expected, inputs)
            del out
            if not ok:
                return _row(op, shape, label, p, "WRONG", detail, setup_s=setup_s)
            try:
                med, p20, p80 = time_fn(fn, device, warmup_ms, rep_ms, graph)
            except Exception as exc:
                if not graph:
                    raise
                synchronize(device)  # capture failed (host sync, allocation...): time it eagerly
                detail += f"; eager timing (graph capture failed: {_short(exc)[:80]})"
                med, p20, p80 = time_fn(fn, device, warmup_ms, rep_ms, False)
            host_us = host_us_per_call(fn, device, med, rep_ms)
    except prov.Unsupported as exc:
        return _row(op, shape, label, p, "n/a", str(exc))
    except Exception as exc:
        if "triton" == p.kind and "ASCEND_KERNELS_BACKEND=triton" in str(exc):
            return _row(op, shape, label, p, "n/a", str(exc).split(": ", 1)[-1][:200])
        return _row(op, shape, label, p, "error", _short(exc))
    finally:
        del fn
        _free(device)
    sec = med * 1e-3
    floor = max(flops / rate if rate else 0.0, nbytes / bw if bw else 0.0)
    unit = mod.UNIT
    tflops, gbps = flops / sec / 1e12, nbytes / sec / 1e9
    return _row(op, shape, label, p, "ok", detail, median_ms=med, p20_ms=p20, p80_ms=p80,
                unit=unit, throughput=tflops if unit == "TFLOP/s" else gbps, tflops=tflops,
                gbps=gbps, roofline=floor / sec if sec > 0 else None, setup_s=setup_s, host_us=host_us)


def _speedups(rows: list) -> None:
    ok = [r for r in rows if r["status"] == "ok"]
    fb = next((r for r in ok if r["kind"] == "fallback"), None)
    peers = [r for r in ok if r["kind"] == "peer"]
    best = min(peers, key=lambda r: r["median_ms"]) if peers else None
    for r in ok:
        if fb:
            r["speedup_vs_fallback"] = fb["median_ms"] / r["median_ms"]
        if best:
            r["speedup_vs_best_peer"] = best["median_ms"] / r["median_ms"]
            r["best_peer"] = best["provider"]


class _NoBar:
    def update(self, n=1):
        pass

    def set_description(self, s):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, file=sys.stderr, unit="run", dynamic_ncols=True, leave=False)


# ---- output ---------------------------------------------------------------------------------

def _fmt(x, spec=".3g", none="—"):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return none
    return format(x, spec)


def _ms(x):
    if x is None:
        return "—"
    return f"{x:.4f}" if x < 1 else f"{x:.3f}" if x < 100 else f"{x:.1f}"


def _status(r):
    if r["status"] == "ok":
        return "ok"
    detail = r["detail"].replace("|", "/")
    return f"**{r['status']}**: {detail}" if r["status"] == "WRONG" else f"{r['status']}: {detail}"


def header_lines(header: dict) -> list:
    keys = ["device", "backend", "driver", "torch", "triton", "torch_npu", "cuda", "suite", "dtype",
            "timer", "host_time", "copy_GBps", "matmul_TFLOPs", "matmul", "wall_s", "command", "interpreter"]
    return [f"- {k}: {header[k]}" for k in keys if k in header]


def summary_table(result: dict) -> list:
    """One line per case: triton vs fallback vs the best peer."""
    lines = ["| op | case | triton ms | triton host µs/call | fallback ms | best peer | peer ms | vs fallback | "
             "vs best peer | % roofline |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    by_case: dict = {}
    for r in result["rows"]:
        if r["case"] != "*":
            by_case.setdefault((r["op"], r["case"]), []).append(r)
    for (op, case), rs in by_case.items():
        tri = next((r for r in rs if r["kind"] == "triton"), None)
        fb = next((r for r in rs if r["kind"] == "fallback" and r["status"] == "ok"), None)
        peers = [r for r in rs if r["kind"] == "peer" and r["status"] == "ok"]
        best = min(peers, key=lambda r: r["median_ms"]) if peers else None
        tri_ms = _ms(tri["median_ms"]) if tri and tri["status"] == "ok" else (tri["status"] if tri else "—")
        lines.append(
            f"| {op} | {case} | {tri_ms} | {_fmt(tri and tri['host_us'], '.1f')} | "
            f"{_ms(fb['median_ms']) if fb else '—'} | "
            f"{best['provider'] if best else '—'} | {_ms(best['median_ms']) if best else '—'} | "
            f"{_fmt(tri and tri['speedup_vs_fallback'], '.2f')}{'x' if tri and tri['speedup_vs_fallback'] else ''} | "
            f"{_fmt(tri and tri['speedup_vs_best_peer'], '.2f')}{'x' if tri and tri['speedup_vs_best_peer'] else ''} | "
            f"{_fmt(tri['roofline'] * 100 if tri and tri['roofline'] else None, '.0f')} |")
    return lines


def markdown(result: dict) -> str:
    rows = result["rows"]
    out = ["# ascend_kernels bench", ""] + header_lines(result["header"]) + ["", "## Summary", ""]
    out += summary_table(result)
    for op in dict.fromkeys(r["op"] for r in rows):
        ops_rows = [r for r in rows if r["op"] == op]
        unit = prov.op_module(op).UNIT
        out += ["", f"## {op}", "",
                f"| case | provider | check | median ms | p20–p80 ms | host µs/call | {unit} | % roofline | "
                f"vs fallback | vs best peer |",
                "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in ops_rows:
            if r["case"] == "*":
                continue
            spread = f"{_ms(r['p20_ms'])}–{_ms(r['p80_ms'])}" if r["p20_ms"] is not None else "—"
            out.append(
                f"| {r['case']} | {r['provider']} | {_status(r)} | {_ms(r['median_ms'])} | {spread} | "
                f"{_fmt(r['host_us'], '.1f')} | "
                f"{_fmt(r['throughput'], '.1f' if unit == 'GB/s' else '.2f')} | "
                f"{_fmt(r['roofline'] * 100 if r['roofline'] is not None else None, '.0f')} | "
                f"{_fmt(r['speedup_vs_fallback'], '.2f')} | {_fmt(r['speedup_vs_best_peer'], '.2f')} |")
        absent = [r for r in ops_rows if r["status"] == "absent"]
        if absent:
            out += ["", "Absent: " + "; ".join(f"`{r['provider']}` ({r['detail']})" for r in absent)]
    return "\n".join(out) + "\n"


CSV_FIELDS = ["op", "case", "provider", "kind", "status", "detail", "median_ms", "p20_ms", "p80_ms",
              "throughput", "unit", "tflops", "gbps", "roofline", "speedup_vs_fallback",
              "speedup_vs_best_peer", "best_peer", "setup_s", "host_us", "shape"]


def write_csv(result: dict, path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        f.write("".join(f"# {k}: {v}\n" for k, v in result["header"].items()))
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in result["rows"]:
            w.writerow({k: r.get(k) for k in CSV_FIELDS})


def write_json(result: dict, path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1, default=str))


def plot(result: dict, directory) -> list:
    """One PNG per op: providers as lines over the cases. Needs matplotlib (imported here)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib is not installed, no plots (pip install matplotlib)", file=sys.stderr)
        return []
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    rows = result["rows"]
    for op in dict.fromkeys(r["op"] for r in rows):
        ops_rows = [r for r in rows if r["op"] == op and r["case"] != "*"]
        cases = list(dict.fromkeys(r["case"] for r in ops_rows))
        if not cases:
            continue
        unit = prov.op_module(op).UNIT
        fig, ax = plt.subplots(figsize=(max(7, 0.7 * len(cases) + 3), 5.5))
        for name in dict.fromkeys(r["provider"] for r in ops_rows):
            ys = []
            for c in cases:
                r = next((r for r in ops_rows if r["case"] == c and r["provider"] == name), None)
                ys.append(r["throughput"] if r and r["status"] == "ok" else float("nan"))
            if all(math.isnan(y) for y in ys):
                continue
            style = {"triton": dict(lw=2.5, marker="o"), "fallback": dict(lw=1.5, marker="s", ls="--")}
            ax.plot(range(len(cases)), ys, label=name, **style.get(
                next(r["kind"] for r in ops_rows if r["provider"] == name), dict(lw=1, marker=".")))
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels(cases, rotation=40, ha="right", fontsize=7)
        ax.set_ylabel(unit)
        ax.set_yscale("log")
        h = result["header"]
        ax.set_title(f"{op} on {h.get('device')} ({h.get('dtype')}), higher is better", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = directory / f"{op}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# ---- CLI: bench -----------------------------------------------------------------------------

def default_suite(device: Optional[torch.device] = None) -> str:
    return "quick" if (device or pick_device()).type == "cpu" else "full"


def suite_arg(name: Optional[str], device: torch.device) -> dict:
    """The --suite value loaded (default: quick on CPU, full elsewhere); a UsageError naming the
    suites if it is neither a suite nor a readable suite file."""
    try:
        return load_suite(name or default_suite(device))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def ops_arg(suite: dict, ops: Optional[list]) -> list:
    """The --op values, all of the suite's by default; a UsageError for ops the suite lacks."""
    missing = [op for op in ops or [] if op not in suite["ops"]]
    if missing:
        raise UsageError(f"suite {suite['name']} has no case for {', '.join(missing)}; "
                         f"its ops: {', '.join(suite['ops'])}")
    return list(ops or suite["ops"])


def providers_arg(ops: list, names: Optional[list]) -> Optional[list]:
    """The --providers values; a UsageError naming the valid providers of `ops` for unknown ones."""
    if not names:
        return None
    valid = prov.provider_names(ops)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise UsageError(f"unknown provider {', '.join(map(repr, unknown))} for {', '.join(ops)}; "
                         f"choose from: {', '.join(valid)}")
    return names


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--op", nargs="+", choices=prov.OPS, metavar="OP",
                   help=f"ops to bench (default: all of the suite's): {', '.join(prov.OPS)}")
    p.add_argument("--suite", default=None,
                   help=f"suite name or YAML path (default: quick on CPU, full elsewhere); suites: "
                        f"{', '.join(suite_names())}")
    p.add_argument("--providers", nargs="+", metavar="P",
                   help="only these providers (triton, fallback, sdpa-flash, flex, index_copy_, ...; "
                        "--list names them)")
    p.add_argument("--results", metavar="DIR",
                   help="write DIR/bench.md, bench.csv, bench.json, one PNG per op (with matplotlib) and "
                        "command.txt (default: ./ascend_kernels_results/<timestamp>-<device>/)")
    p.add_argument("--device", help="cuda, cuda:1, npu, cpu (default: the accelerator if any)")
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], help="override the suite's dtype")
    p.add_argument("--warmup-ms", type=float, help="do_bench warm-up (ms)")
    p.add_argument("--rep-ms", type=float, help="do_bench repetition time (ms)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="CUDA: time graph replays (do_bench_cudagraph), no host launch overhead")
    p.add_argument("--stream", metavar="FILE", help="append each row to FILE as a JSON line as it is measured")
    p.add_argument("--list", action="store_true", help="list the suite's cases and the providers, run nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _command_line(argv: Optional[list]) -> str:
    if argv is None:
        return "n/a (run_bench called from Python)"
    return " ".join(["ascend-kernels"] + [shlex.quote(a) for a in argv])


def default_results_dir(device: torch.device) -> Path:
    """./ascend_kernels_results/<timestamp>-<device>/ (a new folder per run)."""
    from ascend_kernels.launcher import device as _device

    name = "cpu" if device.type == "cpu" else re.sub(r"[^a-z0-9.]+", "-", _device.device_name(device).lower())
    base = RESULTS_ROOT / f"{time.strftime('%Y%m%d-%H%M%S')}-{name.strip('-')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def write_results(result: dict, directory) -> list:
    """bench.md, bench.csv, bench.json, command.txt and one PNG per op (with matplotlib)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "bench.md").write_text(markdown(result))
    write_csv(result, d / "bench.csv")
    write_json(result, d / "bench.json")
    (d / "command.txt").write_text(result["header"].get("command", "") + "\n")
    return [d / "bench.md", d / "bench.csv", d / "bench.json", d / "command.txt"] + plot(result, d)


def _interpreter_reexec(args, device: torch.device, providers: Optional[list]) -> None:
    """On CPU with the interpreter off, the triton provider cannot run its kernels: run the same
    command again in a fresh process with ASCEND_KERNELS_INTERPRET=1 (read at import)."""
    from ascend_kernels.launcher import device as _device

    env = _device.INTERPRET_ENV
    argv = getattr(args, "argv", None)  # set by the CLI's main
    if (argv is None or device.type != "cpu" or _device.INTERPRETER_ON or os.environ.get(env) == "1"
            or (providers and "triton" not in providers)):
        return
    print(f"bench: on CPU the triton provider runs its kernels through the Triton interpreter: "
          f"running again with {env}=1", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "ascend_kernels.cli", *argv], {**os.environ, env: "1"})


def _list(suite: dict, ops: list, device: torch.device) -> None:
    for op in ops:
        mod = prov.op_module(op)
        print(f"{op}: {len(suite['ops'][op])} cases")
        for s in suite["ops"][op]:
            print(f"  {mod.label(s)}")
        for p in mod.providers():
            why = p.absent_reason(device)
            print(f"  provider {p.name:14s} {p.kind:8s} {'absent: ' + why if why else 'present'}")


def _run_e2e(args, device: torch.device) -> int:
    """`--suite e2e`: the end-to-end decode benchmark of a transformers model (bench/e2e.py)."""
    from . import e2e

    _interpreter_reexec(args, device, None)
    results = Path(args.results) if args.results else default_results_dir(device)
    rows = e2e.run_e2e(str(device), e2e.default_cases(str(device)), progress=not args.no_progress)
    header = header_info(device)
    header["command"] = _command_line(getattr(args, "argv", None))
    text = "\n".join(header_lines(header)) + "\n\n" + e2e.format_table(rows)
    print(text)
    results.mkdir(parents=True, exist_ok=True)
    (results / "bench.md").write_text(text)
    (results / "bench.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1, default=str))
    (results / "command.txt").write_text(header["command"] + "\n")
    e2e.plot(rows, str(results / "e2e.png"), title=f"decode ms per step, {header['device']}")
    print(f"bench: results in {results}/", file=sys.stderr)
    return 1 if any(r.get("error") for r in rows) else 0


def run_bench(args) -> int:
    device = pick_device(args.device)
    if args.suite == E2E_SUITE:
        return _run_e2e(args, device)
    suite = suite_arg(args.suite, device)
    ops = ops_arg(suite, args.op)
    providers = providers_arg(ops, args.providers)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    if args.list:
        _list(suite, ops, device)
        return 0
    _interpreter_reexec(args, device, providers)
    results = Path(args.results) if args.results else default_results_dir(device)
    stream = open(args.stream, "a") if args.stream else None
    try:
        result = run_suite(suite, ops=ops, provider_names=providers, device=device, dtype=dtype,
                           warmup_ms=args.warmup_ms, rep_ms=args.rep_ms, progress=not args.no_progress,
                           stream=stream, graph=args.cuda_graph)
    finally:
        if stream is not None:
            stream.close()
    result["header"]["command"] = _command_line(getattr(args, "argv", None))
    print(markdown(result), end="")
    written = write_results(result, results)
    print(f"bench: results in {results}/ ({', '.join(p.name for p in written)})", file=sys.stderr)
    return 0 if not any(r["status"] == "WRONG" and r["kind"] == "triton" for r in result["rows"]) else 1
