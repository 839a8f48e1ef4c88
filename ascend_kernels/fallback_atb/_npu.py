"""What the fallback needs to know about the installed torch_npu: its release, the SoC family,
and whether ATB (the NNAL library behind torch_npu._npu_*) loaded.

Releases. torch_npu's __version__ is the PyTorch version plus a post number ("2.6.0.post3"); the
operator docs are versioned by Ascend Extension for PyTorch release (7.1.0, ..., 26.1.0). The
table maps one to the other (hiascend.com Pytorch release notes, "版本配套关系"; the
Ascend/pytorch README's version table). A version between two entries of its PyTorch base takes
the older release; a base newer than the table takes the newest release; anything else older.

SoC. torch_npu.npu.get_soc_version() returns the c10_npu::SocVersion number (Ascend/pytorch
torch_npu/csrc/core/npu/NpuVariables.h); families as vllm-project/vllm-ascend
vllm_ascend/device/hardware.py: 200-205 310P, 220-225 A2 (Ascend910B*), 250-255 A3
(Ascend910_93*), 260 A5 (Ascend950).

ATB. torch_npu loads libop_plugin_atb.so lazily: the first torch_npu._npu_* call raises OSError
when libatb.so (NNAL) is missing, and every later call raises again (Ascend/op-plugin
op_plugin/python/atb/_atb_ops.py, _register_atb_extensions). The wrappers catch it once,
remember the message here, and route later calls past ATB with that reason.
"""
from __future__ import annotations

import logging
import re
from typing import Optional

log = logging.getLogger("ascend_kernels")

Release = tuple  # (major, minor, patch), e.g. (7, 3, 0)

# torch_npu package version -> Ascend Extension for PyTorch release
_RELEASES = {
    "2.1.0.post12": (7, 0, 0), "2.3.1.post6": (7, 0, 0), "2.4.0.post4": (7, 0, 0), "2.5.1": (7, 0, 0),
    "2.1.0.post13": (7, 1, 0), "2.5.1.post1": (7, 1, 0), "2.6.0": (7, 1, 0),
    "2.1.0.post17": (7, 2, 0), "2.6.0.post3": (7, 2, 0), "2.7.1": (7, 2, 0), "2.8.0": (7, 2, 0),
    "2.6.0.post5": (7, 3, 0), "2.7.1.post2": (7, 3, 0), "2.8.0.post2": (7, 3, 0), "2.9.0": (7, 3, 0),
    "2.7.1.post4": (26, 0, 0), "2.8.0.post4": (26, 0, 0), "2.9.0.post2": (26, 0, 0),
    "2.10.0": (26, 0, 0),
}
OLDEST = (0, 0, 0)


def _key(version: str):
    """((major, minor, patch), post) of a torch_npu version; rc/dev builds sort before the
    release (post -1)."""
    m = re.match(r"(\d+)\.(\d+)\.(\d+)(?:\.post(\d+))?(.*)", version.strip())
    if m is None:
        return None
    post = int(m.group(4)) if m.group(4) else (-1 if m.group(5)[:1] not in ("", "+") else 0)
    return tuple(int(g) for g in m.group(1, 2, 3)), post


_TABLE = sorted((_key(v), r) for v, r in _RELEASES.items())


def release_of(version: str) -> Release:
    key = _key(version)
    if key is None:
        return OLDEST
    base, _ = key
    same_base = [(k, r) for k, r in _TABLE if k[0] == base]
    if same_base:
        older = [r for k, r in same_base if k <= key]
        return older[-1] if older else OLDEST
    return _TABLE[-1][1] if base > _TABLE[-1][0][0] else OLDEST


def release() -> Release:
    import torch_npu

    return release_of(getattr(torch_npu, "__version__", ""))


def has_operator(name: str) -> bool:
    """Whether the installed torch_npu exposes `name` (releases before 7.0.0 are not told apart
    by version here)."""
    import torch_npu

    return hasattr(torch_npu, name)


def release_name(r: Release) -> str:
    return ".".join(map(str, r)) if r != OLDEST else "before 7.0.0"


def soc_family() -> str:
    """A2 | A3 | 310P | A5 | unknown (SoC <number>)."""
    import torch_npu

    n = int(torch_npu.npu.get_soc_version())
    for family, lo, hi in (("310P", 200, 205), ("A2", 220, 225), ("A3", 250, 255), ("A5", 260, 260)):
        if lo <= n <= hi:
            return family
    return f"unknown (SoC {n})"


_atb_error: Optional[str] = None


def atb_missing() -> Optional[str]:
    """The reason ATB cannot be used, once a torch_npu._npu_* call raised OSError."""
    return _atb_error


def note_atb_missing(exc: OSError) -> str:
    global _atb_error
    _atb_error = f"ATB (NNAL libatb) could not be loaded by torch_npu: {exc}"
    log.warning("%s; the torch_npu._npu_* fallbacks take the next path", _atb_error)
    return _atb_error


def reset() -> None:
    """Forget a remembered ATB failure (tests; after installing NNAL in-process)."""
    global _atb_error
    _atb_error = None
