"""What the library knows of each backend, one folder per backend.

A backend's `__init__.py` gives its device properties (`properties(index)`), which config keys
reach the kernel as launch options (`launch_options(config)`), and which fallback package takes
the calls its Triton kernels cannot (`FALLBACK`: "fallback_atb" or "reference"). Its
`configs.yaml` holds, per op, the autotuner's search space and the heuristic defaults (see
`launcher/configs.py` for the format). A new backend is a new folder here.
"""
from __future__ import annotations

import importlib
from types import ModuleType

NAMES = ("npu", "cuda", "cpu")


def get(name: str) -> ModuleType:
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; known backends: {list(NAMES)}")
    return importlib.import_module(f"{__name__}.{name}")
