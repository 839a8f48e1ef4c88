"""Running cases: each lowering happens in a child process (``python -c "import triton; ..."``
with ``TRITON_INTERPRET`` unset, so the kernels are real JITFunctions even on a CPU-only host
where ``ascend_kernels`` turns the interpreter on). Several children run in parallel; the parent
kills a child's process group when a case passes its timeout, records the case as timed out and
starts a fresh child for the rest of that child's share. Results are cached (cache.py)."""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

from . import cache, ir
from .core import DEFAULT_TIMEOUT_S, CaseResult, KernelCase, config_key, pyfn
from .toolchain import adapter_available, compile_case, one_line

STARTUP_TIMEOUT_S = 120.0  # imports of torch + triton + the op modules in the child
_MARK = "@@ASCEND_CHECK@@"


# --------------------------------------------------------------------------- child side

def _resolve(job: dict):
    try:
        mod = importlib.import_module(job["module"])
    except Exception:  # noqa: BLE001
        mod = None
    if mod is None or not hasattr(mod, job["qualname"].split(".")[0]):
        name = f"_ascend_check_{abs(hash(job['file']))}"
        mod = sys.modules.get(name)
        if mod is None:
            spec = importlib.util.spec_from_file_location(name, job["file"])
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
    fn = mod
    for part in job["qualname"].split("."):
        fn = getattr(fn, part)
    return fn


def run_job(job: dict) -> dict:
    """Lower one case and analyse it; every failure is a result."""
    t0 = time.perf_counter()
    res: dict = {"lowered": False, "error": ""}
    try:
        ttir, text = compile_case(_resolve(job), job["signature"], job["constexprs"],
                                  job["options"])
        res["lowered"] = True
        if job.get("dump"):
            Path(job["dump"] + ".ttir.mlir").write_text(ttir)
            Path(job["dump"] + ".linalg.mlir").write_text(text)
        try:
            res.update(ir.analyse(text))
            if res.get("unconverted"):
                res["lowered"] = False
                res["error"] = ("the adapter left ops bishengir cannot compile: "
                                + ", ".join(res["unconverted"]))
        except Exception as exc:  # noqa: BLE001 -- a bug here must not read as a lowering failure
            res["error"] = "IR analysis failed: " + one_line(exc)
    except BaseException as exc:  # noqa: BLE001
        res["error"] = one_line(exc)
    res["seconds"] = round(time.perf_counter() - t0, 3)
    return res


def worker() -> None:
    """The child's loop: jobs as JSON on stdin, one marked result line per job on stdout."""
    jobs = json.loads(sys.stdin.read())
    sys.path[:0] = [p for p in jobs.get("sys_path", []) if p not in sys.path]
    for job in jobs["jobs"]:
        res = run_job(job)
        sys.stdout.write(_MARK + json.dumps({"idx": job["idx"], **res}, default=str) + "\n")
        sys.stdout.flush()


# --------------------------------------------------------------------------- parent side

def _job_of(idx: int, case: KernelCase, dump: Optional[str] = None) -> dict:
    fn = pyfn(case.kernel)
    return {"idx": idx, "module": fn.__module__, "qualname": fn.__qualname__,
            "file": fn.__code__.co_filename, "signature": case.signature,
            "constexprs": case.constexprs, "options": case.options, "dump": dump}


# triton first: ascend_kernels (imported with this package) then leaves the interpreter off
_CHILD = "import triton\nfrom ascend_kernels.ascend_check import run\nrun.worker()\n"


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _run_share(pending: list, timeout: float, env: dict, done) -> None:
    """Run `pending` in one child after another: a timeout or a crash fails the case at hand and
    a fresh child takes the rest."""
    while pending:
        proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, start_new_session=True)
        lines: queue.Queue = queue.Queue()
        errbuf: list = []

        def pump_out(stream=proc.stdout, sink=lines):
            for ln in stream:
                sink.put(ln)
            sink.put(None)

        def pump_err(stream=proc.stderr, sink=errbuf):
            for ln in stream:
                sink.append(ln)
                del sink[:-50]

        threading.Thread(target=pump_out, daemon=True).start()
        threading.Thread(target=pump_err, daemon=True).start()
        proc.stdin.write(json.dumps({"jobs": pending, "sys_path": sys.path}))
        proc.stdin.close()
        first = True
        while pending:
            deadline = time.monotonic() + timeout + (STARTUP_TIMEOUT_S if first else 0)
            got = None
            while got is None and (left := deadline - time.monotonic()) > 0:
                try:
                    ln = lines.get(timeout=left)
                except queue.Empty:
                    break
                if ln is None:  # child exited
                    break
                if ln.startswith(_MARK):
                    got = json.loads(ln[len(_MARK):])
            job = pending.pop(0)
            if got is None:
                alive = proc.poll() is None
                _kill(proc)
                tail = "".join(errbuf)[-300:].strip().splitlines()
                why = (f"timed out after {timeout:g} s" if alive else
                       f"check process died (rc {proc.returncode}): {tail[-1] if tail else ''}")
                done(job, {"lowered": False, "error": why[:240], "seconds": timeout})
                break  # a fresh child for the rest
            first = False
            assert job["idx"] == got["idx"], (job["idx"], got["idx"])
            done(job, got)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _kill(proc)


def _run_jobs(jobs: list, timeout: float, progress, workers: int) -> dict:
    """Run jobs in `workers` children in parallel; {idx: result dict}."""
    results: dict = {}
    lock = threading.Lock()
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] +
                                        [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)

    def done(job, res):
        with lock:
            results[job["idx"]] = res
            if progress:
                progress(job, res)

    shares = [jobs[i::workers] for i in range(max(1, min(workers, len(jobs))))]
    threads = [threading.Thread(target=_run_share, args=(s, timeout, env, done)) for s in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _finish(case: KernelCase, res: dict, key: str, cached: bool) -> CaseResult:
    r = CaseResult(op=case.op, kernel=case.kernel_name, label=case.label, config=case.config,
                   lowered=bool(res.get("lowered")), key=key, cached=cached,
                   multibuffer=bool(case.options.get("multibuffer", True)), note=case.note)
    for f in ("error", "structured", "scalar", "scalarised", "scalarised_where", "loops", "hot",
              "mix_mode", "ub_bytes", "ub_bytes_multibuffer", "dynamic_buffers", "seconds"):
        if f in res:
            setattr(r, f, res[f])
    return r


def default_workers() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1))


def check_cases(cases: list, timeout: float = DEFAULT_TIMEOUT_S, use_cache: bool = True,
                progress: bool = False, dump_dir: Optional[str] = None,
                workers: Optional[int] = None) -> list:
    """Check many cases; cached results are reused (not with `dump_dir`, where every case is
    lowered again and its TTIR and Linalg IR are written under that folder)."""
    ok, why = adapter_available()
    keys = [cache.case_key(c) for c in cases]
    data = cache.read_cache() if use_cache and not dump_dir else {"cases": {}}
    out: list = [None] * len(cases)
    jobs, todo = [], {}
    for i, (case, key) in enumerate(zip(cases, keys)):
        hit = data["cases"].get(key)
        if hit is not None:
            out[i] = _finish(case, hit, key, cached=True)
        elif not ok:
            out[i] = _finish(case, {"lowered": False, "error": why}, key, cached=False)
        elif key in todo:  # same kernel+constexprs from another shape/config
            todo[key].append(i)
        else:
            todo[key] = [i]
            dump = os.path.join(dump_dir, f"{case.op}.{case.kernel_name}.{key[:16]}") if dump_dir else None
            jobs.append(_job_of(i, case, dump))
    if dump_dir:
        os.makedirs(dump_dir, exist_ok=True)
        with open(os.path.join(dump_dir, "index.txt"), "w") as f:
            f.writelines(f"{case.op}.{case.kernel_name}.{key[:16]}\t{case.label}\t"
                         f"{config_key(case.config)}\n" for case, key in zip(cases, keys))
    if not jobs:
        return out
    count = [0]

    def report(job, res):
        count[0] += 1
        c = cases[job["idx"]]
        print(f"[{count[0]}/{len(jobs)}] {c.op} {c.kernel_name} {c.label} {config_key(c.config)}: "
              f"{'ok' if res.get('lowered') else 'FAIL'} ({res.get('seconds', 0):.2f} s)",
              file=sys.stderr, flush=True)

    got = _run_jobs(jobs, timeout, report if progress else None, workers or default_workers())
    for key, idxs in todo.items():
        for i in idxs:
            out[i] = _finish(cases[i], got[idxs[0]], key, cached=False)

    def store(data):
        for key, idxs in todo.items():
            if not str(got[idxs[0]].get("error", "")).startswith(("timed out", "check process died")):
                data["cases"][key] = got[idxs[0]]

    if use_cache:
        cache.update_cache(store)
    return out


def check_case(case: KernelCase, timeout: float = DEFAULT_TIMEOUT_S,
               use_cache: bool = True) -> CaseResult:
    return check_cases([case], timeout=timeout, use_cache=use_cache)[0]


def lowered_ir(case: KernelCase, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """The adapter's output for one case (not cached)."""
    with tempfile.TemporaryDirectory() as tmp:
        res = _run_jobs([_job_of(0, case, os.path.join(tmp, "case"))], timeout, None, 1)[0]
        if not res.get("lowered"):
            raise RuntimeError(res.get("error"))
        return Path(tmp, "case.linalg.mlir").read_text()
