"""Search spaces per backend, timing, the on-disk cache, and the lookup on the hot path.

Lookup order for a call: the user's tuning cache, then the defaults shipped in
``ascend_kernels/tuned/`` for this device, then the op's heuristic. Nothing is timed on the hot
path unless ``ASCEND_KERNELS_AUTOTUNE=1`` (then a cache miss is tuned once and stored).

Cache files are JSON, one per (backend, device name, triton version), under
``~/.cache/ascend_kernels`` or ``$ASCEND_KERNELS_CACHE_DIR``. Each op's entries carry a hash of
its kernel source: entries tuned for another version of a kernel are stale and ignored. A
corrupt, foreign or stale file is ignored with one warning.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional

from . import device as _device
from .dispatch import OpSpec

FORMAT = 1
AUTOTUNE_ENV = "ASCEND_KERNELS_AUTOTUNE"
CACHE_ENV = "ASCEND_KERNELS_CACHE_DIR"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "tuned"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ascend_kernels")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def cache_file(backend: str, device_name: str) -> Path:
    return cache_dir() / f"{backend}__{_slug(device_name)}__triton-{_slug(_device.TRITON_VERSION)}.json"


def shipped_file(backend: str, device_name: str) -> Path:
    return SHIPPED_DIR / f"{backend}__{_slug(device_name)}.json"


def bucket(n: int) -> int:
    """The power of two at or above n (0 stays 0)."""
    n = int(n)
    return 0 if n <= 0 else 1 << (n - 1).bit_length()


def key_of(spec: OpSpec, problem: Any) -> str:
    fixed, data_dependent = spec.tuning_key(problem)
    parts = [f"{k}={v}" for k, v in sorted(fixed.items())]
    parts += [f"{k}~{bucket(v)}" for k, v in sorted(data_dependent.items())]
    return ",".join(parts)


_SOURCE_HASHES: dict = {}


def source_hash(spec: OpSpec) -> str:
    """Hash of the op's kernel sources and search spaces (computed once: it is on the hot path)."""
    if spec.name not in _SOURCE_HASHES:
        _SOURCE_HASHES[spec.name] = _compute_source_hash(spec)
    return _SOURCE_HASHES[spec.name]


def _compute_source_hash(spec: OpSpec) -> str:
    h = hashlib.sha256()
    for kernel in spec.kernels:
        fn = getattr(kernel, "fn", kernel)
        h.update(inspect.getsource(fn).encode())
    h.update(json.dumps(spec.configs, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def split_config(config: dict, backend: str) -> tuple[dict, dict]:
    """(constexpr kwargs, launch options) for a launch on `backend`.

    UPPERCASE keys are kernel constexprs; keys starting with ``grid_`` are read by the op to
    size its grid and never reach the kernel; num_warps/num_stages only mean something to
    CUDA; the other lowercase keys are Ascend compile options. The interpreter takes no options.
    """
    constexprs, options = {}, {}
    for k, v in config.items():
        if k[:1].isupper():
            constexprs[k] = v
        elif k.startswith("grid_"):
            continue
        elif backend == "cuda" and k in ("num_warps", "num_stages"):
            options[k] = v
        elif backend == "npu" and k not in ("num_warps", "num_stages"):
            options[k] = v
    return constexprs, options


class _Table:
    """The tuned entries of one (backend, device): {op: {key: config}} from both files."""

    def __init__(self, backend: str, device_name: str):
        self.backend, self.device_name = backend, device_name
        self.user_path = cache_file(backend, device_name)
        self.shipped = self._read(shipped_file(backend, device_name), check_triton=False)
        self.user = self._read(self.user_path, check_triton=True)

    def _read(self, path: Path, check_triton: bool) -> dict:
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
            header_ok = (data.get("format") == FORMAT and data.get("backend") == self.backend
                         and data.get("device") == self.device_name
                         and (not check_triton or data.get("triton") == _device.TRITON_VERSION))
            if not header_ok:
                warnings.warn(f"ascend_kernels: ignoring tuning cache {path}: it was written for "
                              f"another device, backend, triton version or format", stacklevel=4)
                return {}
            ops = data["ops"]
            if not isinstance(ops, dict):
                raise TypeError("'ops' is not an object")
            return ops
        except Exception as exc:  # corrupt file: never fatal
            warnings.warn(f"ascend_kernels: ignoring corrupt tuning cache {path}: {exc}", stacklevel=4)
            return {}

    def lookup(self, spec: OpSpec, key: str) -> tuple[Optional[dict], str]:
        for entries, source in ((self.user, "tuned cache"), (self.shipped, "shipped defaults")):
            op = entries.get(spec.name)
            if not op:
                continue
            if op.get("source") != source_hash(spec):
                if not op.get("_warned"):
                    warnings.warn(f"ascend_kernels: ignoring stale {source} for {spec.name}: the "
                                  f"kernel changed since it was tuned", stacklevel=4)
                    op["_warned"] = True
                continue
            config = op.get("entries", {}).get(key)
            if isinstance(config, dict):
                return config, source
        return None, ""

    def store(self, spec: OpSpec, key: str, config: dict, timing_ms: Optional[float] = None) -> None:
        op = self.user.setdefault(spec.name, {})
        if op.get("source") != source_hash(spec):
            op.clear()
            op["source"] = source_hash(spec)
        op.setdefault("entries", {})[key] = config
        if timing_ms is not None:
            op.setdefault("timings_ms", {})[key] = timing_ms

    def save(self, path: Optional[Path] = None) -> Path:
        path = path or self.user_path
        path.parent.mkdir(parents=True, exist_ok=True)
        ops = {name: {k: v for k, v in op.items() if not k.startswith("_")}
               for name, op in self.user.items()}
        data = {"format": FORMAT, "backend": self.backend, "device": self.device_name,
                "triton": _device.TRITON_VERSION, "ops": ops}
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file
        return path


_TABLES: dict = {}


def table(backend: str, device_name: str) -> _Table:
    k = (backend, device_name, os.environ.get(CACHE_ENV))
    if k not in _TABLES:
        _TABLES[k] = _Table(backend, device_name)
    return _TABLES[k]


def reset() -> None:
    """Forget loaded cache files and hashes (tests, or after `ascend-kernels tune` in-process)."""
    _TABLES.clear()
    _SOURCE_HASHES.clear()


def search_space(spec: OpSpec, backend: str) -> list:
    configs = list(spec.configs.get(backend, ()))
    if backend == "npu":
        from .. import ascend_check  # configs that failed the Ascend compile check are dropped

        configs = ascend_check.passing_configs(spec.name, configs)
    return configs


def get_config(spec: OpSpec, backend: str, problem: Any) -> tuple[dict, str]:
    """The config for this call and where it came from. The hot path: no timing by default."""
    tab = table(backend, _device.device_name(problem.device))
    key = key_of(spec, problem)
    config, source = tab.lookup(spec, key)
    if config is not None:
        return config, source
    if os.environ.get(AUTOTUNE_ENV) == "1" and backend != "cpu":  # timing the interpreter is noise
        best, _ = tune(spec, problem)
        return best, "tuned now (ASCEND_KERNELS_AUTOTUNE=1)"
    return spec.default_config(backend, problem), "heuristic"


def time_config(spec: OpSpec, problem: Any, config: dict) -> float:
    """Median milliseconds of one config: triton.testing.do_bench on a GPU/NPU, a wall clock
    on the CPU (the interpreter: only useful to exercise the tuner)."""
    if problem.device.type == "cpu":
        return wall_clock_ms(lambda: spec.launch(problem, config))
    import triton.testing

    return float(triton.testing.do_bench(lambda: spec.launch(problem, config), warmup=5, rep=25,
                                         return_mode="median"))


def wall_clock_ms(fn, repeats: int = 3) -> float:
    import statistics
    import time

    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def tune(spec: OpSpec, problem: Any, save: bool = True) -> tuple[dict, dict]:
    """Time every config of the backend's search space; store and return the best.

    Returns (best config, {config json: ms or error string}).
    """
    backend = problem.device.type
    tab = table(backend, _device.device_name(problem.device))
    timings: dict = {}
    best, best_ms = None, float("inf")
    for config in search_space(spec, backend):
        name = json.dumps(config, sort_keys=True)
        try:
            ms = time_config(spec, problem, config)
        except Exception as exc:  # a config that does not compile/fit is skipped, not fatal
            timings[name] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            continue
        timings[name] = ms
        if ms < best_ms:
            best, best_ms = config, ms
    if best is None:
        best = spec.default_config(backend, problem)
    else:
        tab.store(spec, key_of(spec, problem), best, best_ms)
        if save:
            tab.save()
    return best, timings
