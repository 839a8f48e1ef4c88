"""The result cache: ``$ASCEND_KERNELS_CACHE_DIR/ascend_check.json`` (default
``~/.cache/ascend_kernels``). Case results are keyed by a hash of the kernel source (with the jit
helpers it calls), the signature, constexprs, options, triton version and the adapter binary. Per
op the file also keeps which Ascend configs passed: what the tuner reads to prune the Ascend search space."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional

from ..launcher.sources import source_hash
from .core import KernelCase, config_key
from .toolchain import toolchain_id

CACHE_ENV = "ASCEND_KERNELS_CACHE_DIR"
CACHE_NAME = "ascend_check.json"
CACHE_FORMAT = 2


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ascend_kernels")


def cache_path() -> Path:
    return cache_dir() / CACHE_NAME


def kernel_source_hash(kernel) -> str:
    return source_hash([kernel])


def case_key(case: KernelCase) -> str:
    payload = json.dumps({
        "src": kernel_source_hash(case.kernel),
        "name": case.kernel_name,
        "sig": {k: v for k, v in case.signature.items() if v != "constexpr"},
        "const": {k: case.constexprs[k] for k in sorted(case.constexprs)},
        "opts": case.options,
        "tool": toolchain_id(),
        "fmt": CACHE_FORMAT,
    }, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _empty() -> dict:
    return {"format": CACHE_FORMAT, "cases": {}, "ops": {}}


_memo: dict = {}


def read_cache(path: Optional[Path] = None) -> dict:
    """The cache file's contents (shared, do not mutate); empty when missing or foreign."""
    path = path or cache_path()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return _empty()
    memo = _memo.get(str(path))
    if memo and memo[0] == mtime:
        return memo[1]
    try:
        data = json.loads(path.read_text())
        if data.get("format") != CACHE_FORMAT or not isinstance(data.get("cases"), dict):
            raise ValueError("foreign format")
        data.setdefault("ops", {})
    except Exception:  # noqa: BLE001
        data = _empty()
    _memo[str(path)] = (mtime, data)
    return data


def update_cache(change, path: Optional[Path] = None) -> None:
    """Apply change(data) to a private copy of the cache and write it back atomically."""
    path = path or cache_path()
    data = json.loads(json.dumps(read_cache(path)))
    change(data)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ascend_check.", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True, default=str)
        os.replace(tmp, path)
        _memo.pop(str(path), None)
    except OSError:
        pass  # a read-only home must not fail the check


def record_op_results(op: str, source: str, results: Iterable, path: Optional[Path] = None) -> None:
    """Store, per config, whether every case of that config passed (what the tuner reads)."""
    per_cfg: dict = {}
    for r in results:
        ent = per_cfg.setdefault(config_key(r.config), {"passed": True, "why": ""})
        if not r.passed and ent["passed"]:
            ent.update(passed=False, why=f"{r.kernel} {r.label}: " + "; ".join(r.failures))

    def change(data):
        data["ops"][op] = {"source": source, "configs": per_cfg}

    update_cache(change, path)
