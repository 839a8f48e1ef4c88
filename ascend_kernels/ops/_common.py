"""Argument checks and small helpers shared by the ops (no kernels, no dispatch)."""
from __future__ import annotations

import os
from typing import Iterable, Optional, Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Checks of tensor *values* need a host sync, so they run only when asked for (never in graphs).
CHECK_BOUNDS_ENV = "ASCEND_KERNELS_CHECK_BOUNDS"


def check_bounds_enabled() -> bool:
    return os.environ.get(CHECK_BOUNDS_ENV) == "1"


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def check_tensor(name: str, t, *, ndim: Optional[int] = None,
                 dtypes: Optional[Sequence[torch.dtype]] = None,
                 device: Optional[torch.device] = None) -> torch.Tensor:
    """TypeError/ValueError naming `name` unless `t` is a tensor of that rank, dtype and device."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {t.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device} like the other inputs")
    return t


def check_same_device(named: Iterable[tuple[str, Optional[torch.Tensor]]]) -> torch.device:
    """The common device of the given tensors; entries that are not tensors (None, or a wrong
    type, which the caller's check_tensor names) are skipped."""
    first_name, dev = None, None
    for name, t in named:
        if not isinstance(t, torch.Tensor):
            continue
        if dev is None:
            first_name, dev = name, t.device
        elif t.device != dev:
            raise ValueError(f"{name} is on {t.device}, but {first_name} is on {dev}: all tensors "
                             f"must be on one device")
    return dev


def check_dim(name: str, t: torch.Tensor, dim: int, expected: int, what: str) -> None:
    if t.shape[dim] != expected:
        raise ValueError(f"{name}.shape[{dim}] must be {what} ({expected}), got shape {tuple(t.shape)}")


def not_contiguous_in_last_dim(tensors: dict, dim_name: str) -> Optional[str]:
    """Why the kernels cannot take these tensors (None if they can): each one's last dimension
    must be contiguous, since a row is loaded as one structured block."""
    for name, t in tensors.items():
        if t is not None and t.shape[-1] > 1 and t.stride(-1) != 1:
            return f"{name} is not contiguous in {dim_name} (stride {t.stride(-1)})"
    return None


class OpaqueOp:
    """A torch custom op (one opaque node, with a fake implementation, for torch.compile and
    graph capture) whose eager calls go straight to the implementation: the custom-op
    dispatcher costs tens of microseconds of host time per call and adds nothing in eager mode."""

    def __init__(self, qualname: str, mutates_args, fn):
        self.impl = fn
        self.op_def = torch.library.custom_op(qualname, mutates_args=mutates_args)(fn)

    def register_fake(self, fn):
        self.op_def.register_fake(fn)
        return fn

    def __call__(self, *args):
        if torch.compiler.is_compiling():
            return self.op_def(*args)
        return self.impl(*args)


def opaque_op(qualname: str, mutates_args):
    """Decorator form of OpaqueOp."""
    return lambda fn: OpaqueOp(qualname, mutates_args, fn)
