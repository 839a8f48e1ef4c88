"""The path of a call: the Triton kernel or the backend's fallback, with the reason.

An op's capability check (`capability(backend, problem) -> (ok, reason)`) says what its Triton
kernel can take on a backend; the rest goes to the backend's fallback package
(`backends/<backend>.FALLBACK`: fallback_atb on npu, reference elsewhere).
``ASCEND_KERNELS_BACKEND=triton|fallback|auto`` forces a path; ``triton`` raises when the
Triton kernel cannot take the call instead of falling back silently.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Optional

from . import autotune, device as _device

log = logging.getLogger("ascend_kernels")

BACKEND_ENV = "ASCEND_KERNELS_BACKEND"
FALLBACK_NAMES = {"fallback_atb": "fallback_atb (torch_npu ATB/aclnn)", "reference": "reference (PyTorch)"}


@dataclasses.dataclass
class Decision:
    op: str
    backend: str
    path: str  # "triton" | "fallback"
    reason: str
    config: Optional[dict] = None
    config_source: Optional[str] = None
    fallback: Optional[str] = None  # the fallback package (path == "fallback")

    @property
    def fallback_name(self) -> str:
        return FALLBACK_NAMES.get(self.fallback, str(self.fallback))

    def __str__(self) -> str:
        if self.path == "triton":
            return (f"{self.op} on {self.backend}: triton kernel, config {self.config} "
                    f"({self.config_source}); {self.reason}")
        return f"{self.op} on {self.backend}: {self.fallback_name}, because {self.reason}"


def forced_backend() -> str:
    value = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if value not in ("auto", "triton", "fallback"):
        raise ValueError(f"{BACKEND_ENV}={value!r}: expected triton, fallback or auto")
    return value


def decide(defn: Any, problem: Any, forced_config: Optional[dict] = None) -> Decision:
    from .. import backends

    backend = _device.backend_of(problem)
    fallback = backends.get(backend).FALLBACK
    forced = forced_backend()
    if forced == "fallback":
        decision = Decision(defn.name, backend, "fallback", f"{BACKEND_ENV}=fallback", fallback=fallback)
    else:
        ok, why = _device.triton_runs_on(backend)
        if ok:
            ok, why = defn.capability(backend, problem)
        if ok:
            config, source = autotune.get_config(defn, backend, problem)
            if forced_config is not None:
                config, source = {**config, **forced_config}, f"{source} + forced {forced_config}"
            decision = Decision(defn.name, backend, "triton", why, config, source)
        elif forced == "triton":
            raise RuntimeError(f"{BACKEND_ENV}=triton, but the Triton {defn.name} kernel cannot "
                               f"take this call: {why}")
        else:
            decision = Decision(defn.name, backend, "fallback", why, fallback=fallback)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s", decision)
    return decision
