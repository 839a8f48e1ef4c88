"""Argument checks for the ops' validation, and the small helpers they share: generic, no op
and no kernel. A failed check raises a TypeError/ValueError naming the argument."""
from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


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


def first_bad(name: str, bad: torch.Tensor, what) -> None:
    """ValueError naming the first true entry of `bad` as name[index], described by what(index)
    (the value checks of ASCEND_KERNELS_CHECK_BOUNDS=1: a host sync)."""
    where = bad.nonzero()
    if where.numel():
        i = tuple(int(x) for x in where[0])
        raise ValueError(f"{name}[{', '.join(map(str, i))}] {what(i)}")


def check_int(name: str, value, minimum: int, what: str = "") -> int:
    """ValueError naming `name` unless value is an int (not a bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}{what}, got {value!r}")
    return value


def check_float(name: str, value, *, positive: bool = False, what: str = "") -> float:
    """TypeError/ValueError naming `name` unless value is a finite float >= 0 (> 0 if positive)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float{what}, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite float {'> 0' if positive else '>= 0'}{what}, got {value!r}")
    return float(value)


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


def check_tensors(specs: dict, *others: tuple) -> torch.device:
    """check_tensor(name, t, ndim=ndim, dtypes=dtypes) for each `name: (t, ndim, dtypes)` of
    specs in order, then their common device and that of the (name, tensor) pairs in `others`
    (see check_same_device)."""
    for name, (t, ndim, dtypes) in specs.items():
        check_tensor(name, t, ndim=ndim, dtypes=dtypes)
    return check_same_device([(name, spec[0]) for name, spec in specs.items()] + list(others))


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


def check_out(out, like: torch.Tensor, like_name: str) -> None:
    """TypeError/ValueError naming `out` unless it is None or a tensor of like's shape and dtype."""
    if out is not None:
        check_tensor("out", out, ndim=like.dim(), dtypes=(like.dtype,))
        if out.shape != like.shape:
            raise ValueError(f"out must have {like_name}'s shape {tuple(like.shape)}, got {tuple(out.shape)}")
