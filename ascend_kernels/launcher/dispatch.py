"""Capability checks -> Triton or fallback, with a reason.

Each op registers an `OpSpec`: how to validate its arguments into a problem description
(`prepare`), what its Triton kernel can handle per backend (`capability`, returning
``(ok, reason)``), its search space per backend, its heuristic default, its tuning key and
how to launch one config (for the tuner). The launcher knows no op by name.

``ASCEND_KERNELS_BACKEND=triton|fallback|auto`` forces a path; ``triton`` raises when the
Triton kernel cannot take the call instead of falling back silently.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable, Optional

import torch

from . import device as _device

log = logging.getLogger("ascend_kernels")

BACKEND_ENV = "ASCEND_KERNELS_BACKEND"
FALLBACK_NAMES = {"npu": "fallback_atb (torch_npu ATB/aclnn)", "cuda": "reference (PyTorch)",
                  "cpu": "reference (PyTorch)"}


@dataclasses.dataclass
class OpSpec:
    name: str
    # prepare(*args, **kwargs) -> problem: validates the public arguments (ValueError/TypeError
    # naming the argument) and returns an object with at least `.device` (torch.device).
    prepare: Callable[..., Any]
    # capability(backend, problem) -> (ok, reason): can the Triton kernel take this call?
    capability: Callable[[str, Any], tuple]
    # search space per backend: lists of configs. UPPERCASE keys are kernel constexprs,
    # lowercase keys are launch options (num_warps/num_stages on cuda, Ascend options on npu).
    configs: dict
    # default_config(backend, problem) -> config: the heuristic used when nothing is tuned.
    default_config: Callable[[str, Any], dict]
    # tuning_key(problem) -> (fixed: dict, data_dependent: dict); the second gets
    # power-of-two buckets.
    tuning_key: Callable[[Any], tuple]
    # launch(problem, config) -> None: runs the Triton kernel with one config (tuner, bench).
    launch: Callable[[Any, dict], Any]
    # the @triton.jit functions of the op, hashed to detect stale tuning results.
    kernels: tuple = ()
    # ascend_cases(shape: dict, config: dict) -> list of ascend_check.KernelCase for the
    # Ascend compile check; shape is one entry of a bench suite for this op.
    ascend_cases: Optional[Callable[[dict, dict], list]] = None
    # make_problem(shape: dict, device, dtype) -> problem with fresh random inputs (tune/check).
    make_problem: Optional[Callable[..., Any]] = None


_REGISTRY: dict[str, OpSpec] = {}


def register(spec: OpSpec) -> OpSpec:
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> OpSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown op {name!r}; known ops: {sorted(_REGISTRY)}") from None


def op_names() -> list[str]:
    return sorted(_REGISTRY)


@dataclasses.dataclass
class Decision:
    op: str
    backend: str
    path: str  # "triton" | "fallback"
    reason: str
    config: Optional[dict] = None
    config_source: Optional[str] = None

    @property
    def fallback_name(self) -> str:
        return FALLBACK_NAMES[self.backend]

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


def decide(spec: OpSpec, problem: Any) -> Decision:
    from . import autotune  # autotune imports dispatch's types

    backend = _backend_of_device(problem.device)
    forced = forced_backend()
    if forced == "fallback":
        decision = Decision(spec.name, backend, "fallback", f"{BACKEND_ENV}=fallback")
    else:
        ok, why = _device.triton_runs_on(backend)
        if ok:
            ok, why = spec.capability(backend, problem)
        if ok:
            config, source = autotune.get_config(spec, backend, problem)
            decision = Decision(spec.name, backend, "triton", why, config, source)
        elif forced == "triton":
            raise RuntimeError(f"{BACKEND_ENV}=triton, but the Triton {spec.name} kernel cannot "
                               f"take this call: {why}")
        else:
            decision = Decision(spec.name, backend, "fallback", why)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s", decision)
    return decision


def _backend_of_device(dev: torch.device) -> str:
    if dev.type not in _device.BACKENDS:
        raise ValueError(f"unsupported device type {dev.type!r}: expected npu, cuda or cpu tensors")
    return dev.type


def explain(op: str, *args, **kwargs) -> Decision:
    """Which path `op(*args, **kwargs)` would take, and why (the op is not run)."""
    spec = get_spec(op)
    return decide(spec, spec.prepare(*args, **kwargs))
