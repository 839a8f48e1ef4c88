"""The tuned configs on disk, the lookup on the hot path, and timing one op's search space.

Lookup order for a call: the user's tuning cache, then the defaults shipped in
``ascend_kernels/tuned/`` for this device (or, when none ship for it, for another device of
the same architecture, e.g. an H100 reads the H200's), then the
backend's heuristic (``backends/<backend>/configs.yaml``). Nothing is timed on the hot path
unless ``ASCEND_KERNELS_AUTOTUNE=1`` (then a cache miss is tuned once and stored). The lookup
runs once per call signature: the op's launch plan keeps its result.

Cache files are JSON, one per (backend, device name, triton version), under
``~/.cache/ascend_kernels`` or ``$ASCEND_KERNELS_CACHE_DIR``. Each op's entries carry a hash of
its kernel sources and search space: entries tuned for another version are stale and ignored
with one warning. A corrupt or foreign file is ignored with one warning.

On Ascend the search space is first pruned by the Ascend compile check's verdicts
(``ascend-kernels check`` writes them into the same cache directory): a config that does not
lower, or does not fit the unified buffer, is never timed.
"""
from __future__ import annotations

import functools
import json
import os
import re
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Optional

from . import device as _device
from . import configs as _configs, sources

FORMAT = 1
AUTOTUNE_ENV = "ASCEND_KERNELS_AUTOTUNE"
TUNED_ENV = "ASCEND_KERNELS_TUNED"  # 0: ignore tuned configs, run the heuristic (the bench's baseline)
CACHE_ENV = "ASCEND_KERNELS_CACHE_DIR"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "tuned"
CHECK_VERDICTS = "ascend_check.json"  # written by ascend_kernels.ascend_check


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


def key_of(defn: Any, problem: Any) -> str:
    fixed, data_dependent = defn.tuning_key(problem)
    parts = [f"{k}={v}" for k, v in sorted(fixed.items())]
    parts += [f"{k}~{bucket(v)}" for k, v in sorted(data_dependent.items())]
    return ",".join(parts)


_SOURCE_HASHES: dict = {}


def source_hash(defn: Any, backend: str) -> str:
    """Hash of the op's kernels and its search space on `backend` (computed once per process):
    what a tuning result depends on. The heuristic rules are not in it: they choose no tuned
    config, so a rule can change without making the tuned entries stale."""
    k = (defn.name, backend)
    if k not in _SOURCE_HASHES:
        _SOURCE_HASHES[k] = sources.source_hash(sources.module_kernels(defn.kernel_module),
                                                _configs.entry(defn.name, backend)["space"])
    return _SOURCE_HASHES[k]


class _Table:
    """The tuned entries of one (backend, device): {op: {key: config}} from both files."""

    def __init__(self, backend: str, device_name: str, arch: Optional[str] = None):
        self.backend, self.device_name = backend, device_name
        self.user_path = cache_file(backend, device_name)
        self.shipped_path = shipped_file(backend, device_name)
        if not self.shipped_path.exists() and arch:
            self.shipped_path = _same_arch(backend, arch) or self.shipped_path
        self.shipped = self._read(self.shipped_path, check_triton=False, any_device=True)
        self.user = self._read(self.user_path, check_triton=True)

    def _read(self, path: Path, check_triton: bool, any_device: bool = False) -> dict:
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
            header_ok = (data.get("format") == FORMAT and data.get("backend") == self.backend
                         and (any_device or data.get("device") == self.device_name)
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

    def lookup(self, defn: Any, key: str) -> tuple[Optional[dict], str]:
        for entries, source in ((self.user, "tuned cache"), (self.shipped, "shipped defaults")):
            op = entries.get(defn.name)
            if not op:
                continue
            if op.get("source") != source_hash(defn, self.backend):
                if not op.get("_warned"):
                    warnings.warn(f"ascend_kernels: ignoring stale {source} for {defn.name}: the "
                                  f"kernel changed since it was tuned", stacklevel=4)
                    op["_warned"] = True
                continue
            entries = op.get("entries", {})
            config = entries.get(key)
            if isinstance(config, dict):
                return config, source
            near = _nearest(entries, key)
            if near is not None:
                return entries[near], f"{source}, nearest bucket {near}"
        return None, ""

    def store(self, defn: Any, key: str, config: dict, timing_ms: Optional[float] = None) -> None:
        op = self.user.setdefault(defn.name, {})
        if op.get("source") != source_hash(defn, self.backend):
            op.clear()
            op["source"] = source_hash(defn, self.backend)
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


def _split_key(key: str) -> tuple:
    """(fixed part, {bucketed name: bucket}) of a tuning key."""
    fixed, buckets = [], {}
    for part in key.split(","):
        name, sep, value = part.partition("~")
        if sep:
            buckets[name] = int(value)
        else:
            fixed.append(part)
    return ",".join(fixed), buckets


def _nearest(entries: dict, key: str) -> Optional[str]:
    """The tuned key with the same fixed part whose buckets are nearest (in powers of two) to
    this key's: a batch of 48 or a context of 3000 takes the closest tuned shape."""
    fixed, buckets = _split_key(key)
    best, best_d = None, float("inf")
    for other in entries:
        f, b = _split_key(other)
        if f != fixed or b.keys() != buckets.keys() or not isinstance(entries[other], dict):
            continue
        d = sum(abs(max(b[n], 1).bit_length() - max(buckets[n], 1).bit_length()) for n in b)
        if d < best_d:
            best, best_d = other, d
    return best


def _same_arch(backend: str, arch: str) -> Optional[Path]:
    """A shipped file of this backend written on another device of the same architecture."""
    for path in sorted(SHIPPED_DIR.glob(f"{backend}__*.json")):
        try:
            if json.loads(path.read_text()).get("arch") == arch:
                return path
        except (OSError, ValueError):
            continue
    return None


_TABLES: dict = {}


def table(backend: str, device_name: str, arch: Optional[str] = None) -> _Table:
    k = (backend, device_name, os.environ.get(CACHE_ENV))
    if k not in _TABLES:
        _TABLES[k] = _Table(backend, device_name, arch)
    return _TABLES[k]


# bumped by reset(): the ops' launch plans, which keep looked-up configs, are keyed by it
generation = 0


def reset() -> None:
    """Forget loaded cache files, hashes and launch plans (tests, or after tuning in-process)."""
    global generation
    _TABLES.clear()
    _SOURCE_HASHES.clear()
    generation += 1


def _check_verdicts(op: str, backend_hash: str) -> dict:
    """{config key: passed} from the Ascend compile check's results for this version of the op."""
    path = cache_dir() / CHECK_VERDICTS
    try:
        entry = json.loads(path.read_text())["ops"][op]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if entry.get("source") != backend_hash:
        return {}
    return {k: bool(v.get("passed", True)) for k, v in entry.get("configs", {}).items()}


def config_key(config: dict) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def search_space(defn: Any, backend: str) -> list:
    """The op's search space on `backend`; on npu without the configs the Ascend compile check
    failed (all of them if every one failed: the tuner needs one)."""
    configs = _configs.search_space(defn.name, backend)
    if backend == "npu":
        verdicts = _check_verdicts(defn.name, source_hash(defn, backend))
        configs = [c for c in configs if verdicts.get(config_key(c), True)] or configs
    return configs


def get_config(defn: Any, backend: str, problem: Any) -> tuple[dict, str]:
    """The config for this call and where it came from (no timing unless asked for)."""
    if os.environ.get(TUNED_ENV) == "0":
        return heuristic_config(defn, backend, problem), f"heuristic ({TUNED_ENV}=0)"
    props = _device.properties(problem.device)
    tab = table(backend, props["name"], props.get("arch"))
    key = key_of(defn, problem)
    config, source = tab.lookup(defn, key)
    if config is not None:
        return config, source
    if os.environ.get(AUTOTUNE_ENV) == "1" and backend != "cpu":  # timing the interpreter is noise
        best, _ = tune(defn, problem)
        return best, "tuned now (ASCEND_KERNELS_AUTOTUNE=1)"
    return heuristic_config(defn, backend, problem), "heuristic"


def heuristic_config(defn: Any, backend: str, problem: Any) -> dict:
    """The backend's default rules applied to this problem (what runs when nothing is tuned)."""
    features = dict(_device.properties(problem.device), **defn.features(problem))
    return _configs.default_config(defn.name, backend, features)


def tuned_before(defn: Any, backend: str, problem: Any) -> Optional[dict]:
    """The user cache's entry for exactly this tuning key and kernel version, if any (the
    tuner resumes from it)."""
    op = table(backend, _device.device_name(problem.device)).user.get(defn.name, {})
    if op.get("source") != source_hash(defn, backend):
        return None
    return op.get("entries", {}).get(key_of(defn, problem))


def run_config(defn: Any, problem: Any, config: dict) -> None:
    """Launch every kernel of the op once with this config."""
    for launch in defn.launches(problem, config, problem.device.type):
        launch()


def time_config(defn: Any, problem: Any, config: dict) -> float:
    """Median milliseconds of one config, timed the way the bench times the op: replays of a
    captured CUDA graph on CUDA (eager timings of long prefills differed from them by 12-15%,
    more than configs differ), triton.testing.do_bench on an NPU, a wall clock on the CPU (the
    interpreter: only useful to exercise the tuner)."""
    run = functools.partial(run_config, defn, problem, config)
    if problem.device.type == "cpu":
        return wall_clock_ms(run)
    import triton.testing

    run()  # compiles, and makes what must exist before a capture (paged split-KV counters)
    if problem.device.type == "cuda":
        return float(triton.testing.do_bench_cudagraph(run, rep=25, return_mode="median"))
    return float(triton.testing.do_bench(run, warmup=5, rep=25, return_mode="median"))


def wall_clock_ms(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def tune(defn: Any, problem: Any, save: bool = True, configs: Optional[list] = None,
         timer=time_config, backend: Optional[str] = None) -> tuple[dict, dict]:
    """Time every config of the backend's search space (or `configs`); store and return the
    best. Returns (best config, {config json: ms or error string}). `backend` defaults to the
    problem's device (the tests time the npu space on CPU problems with a fake timer)."""
    backend = backend or problem.device.type
    tab = table(backend, _device.device_name(problem.device))
    timings: dict = {}
    best, best_ms = None, float("inf")
    for config in (configs if configs is not None else search_space(defn, backend)):
        name = config_key(config)
        try:
            ms = timer(defn, problem, config)
        except Exception as exc:  # a config that does not compile/fit is skipped, not fatal
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            timings[name] = f"failed: {type(exc).__name__}: {first}"
            continue
        timings[name] = ms
        if ms < best_ms:
            best, best_ms = config, ms
    if best is None:
        return get_config(defn, backend, problem)[0], timings
    tab.store(defn, key_of(defn, problem), best, best_ms)
    if save:
        tab.save()
    return best, timings
