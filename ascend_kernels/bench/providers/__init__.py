"""Providers: the implementations a bench case is timed with.

Each op module (`bench/providers/<op>.py`) defines:

    OP                      the op name
    UNIT                    "TFLOP/s" or "GB/s": the throughput shown in the table
    label(shape) -> str     a short description of one case
    make_inputs(shape, device, dtype) -> dict   fresh random inputs (never zeros)
    oracle(inputs) -> expected                  computed in float32 (or exactly), once per case
    check(output, expected, inputs) -> (ok, detail)
    cost(shape, dtype) -> (flops, bytes)        the fewest bytes the op must move
    providers() -> list[Provider]
    tune_shape(shape) -> dict                   the shape as the op's make_problem takes it

A provider's `build(inputs, shape)` returns a zero-argument callable that runs the op once and
returns what `check` compares; it raises `Unsupported` for a case it cannot take. Its
`available(device)` returns None, or why the provider is absent on this machine (a missing
package, another device): absent providers are listed, never an error.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
from typing import Any, Callable, Optional

import torch

OPS = ("reshape_and_cache", "flash_attention", "paged_attention", "topk_topp_sampling")


class Unsupported(Exception):
    """The provider cannot take this case (shown as n/a with the reason)."""


@dataclasses.dataclass
class Provider:
    name: str
    kind: str  # "triton" (ours) | "fallback" (ATB / PyTorch reference) | "peer"
    build: Callable[[dict, dict], Callable[[], Any]]
    available: Optional[Callable[[torch.device], Optional[str]]] = None
    env: dict = dataclasses.field(default_factory=dict)  # set while the provider runs
    note: str = ""

    def absent_reason(self, device: torch.device) -> Optional[str]:
        if self.available is None:
            return None
        try:
            return self.available(device)
        except Exception as exc:  # a broken optional package is absent, not fatal
            return f"{type(exc).__name__}: {exc}"

    @contextlib.contextmanager
    def environment(self):
        old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def op_module(op: str):
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; bench knows {list(OPS)}")
    return importlib.import_module(f"{__name__}.{op}")


def provider_names(ops) -> list:
    """The names of the providers of `ops`, in order, each once."""
    return list(dict.fromkeys(p.name for op in ops for p in op_module(op).providers()))


# ---- helpers shared by the op modules -------------------------------------------------------

def ours(op: str, build: Callable[[dict, dict], Callable[[], Any]]) -> list:
    """The `triton`, `triton-heuristic` and `fallback` providers of one of our ops, through the
    public API.

    `triton` forces the Triton path (ASCEND_KERNELS_BACKEND=triton: a call the kernel cannot
    take raises, shown as n/a) with the tuned config where one exists; `triton-heuristic` the
    same with the backend's heuristic config (ASCEND_KERNELS_TUNED=0), so each case shows what
    tuning buys; `fallback` forces ATB/aclnn on NPU and the PyTorch reference elsewhere.
    """
    def available(device):
        return None  # our ops run on every device (the interpreter on the CPU)

    return [Provider("triton", "triton", build, available, {"ASCEND_KERNELS_BACKEND": "triton"},
                     "ascend_kernels, Triton path"),
            Provider("triton-heuristic", "triton", build, _tuned_here,
                     {"ASCEND_KERNELS_BACKEND": "triton", "ASCEND_KERNELS_TUNED": "0"},
                     "ascend_kernels, Triton path with the heuristic config (no tuning)"),
            Provider("fallback", "fallback", build, available, {"ASCEND_KERNELS_BACKEND": "fallback"},
                     "ascend_kernels fallback: ATB/aclnn on NPU, PyTorch reference elsewhere")]


def _tuned_here(device) -> Optional[str]:
    if device.type == "cpu":
        return "nothing is tuned on CPU: `triton` runs the heuristic config"
    return None


def module_absent(name: str) -> Optional[str]:
    """None if `name` imports, else the reason it does not."""
    try:
        importlib.import_module(name)
        return None
    except Exception as exc:
        return f"{name} is not installed ({type(exc).__name__}: {str(exc)[:80]})"


def cuda_only(device: torch.device) -> Optional[str]:
    return None if device.type == "cuda" else f"CUDA only (device is {device.type})"


def randn(shape, device, dtype, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(shape, device=device, dtype=torch.float32) * scale).to(dtype)


def compare(out: torch.Tensor, ref: torch.Tensor, tol: float) -> tuple[bool, str]:
    """Relative L2 error under `tol`, max abs error under 10 * tol * max|ref|, no NaN/inf."""
    if not isinstance(out, torch.Tensor):
        return False, f"returned {type(out).__name__}, expected a tensor"
    if tuple(out.shape) != tuple(ref.shape):
        return False, f"shape {tuple(out.shape)}, expected {tuple(ref.shape)}"
    o, r = out.detach().float(), ref.detach().float().to(out.device)
    if not torch.isfinite(o).all():
        return False, "NaN/inf in the output"
    diff = (o - r)
    rel = float(diff.norm() / r.norm().clamp_min(1e-30))
    max_abs = float(diff.abs().max()) if diff.numel() else 0.0
    bound = 10 * tol * float(r.abs().max()) if r.numel() else 0.0
    detail = f"rel err {rel:.1e}, max abs err {max_abs:.1e}"
    return (rel <= tol and max_abs <= bound + 1e-6), detail


def tol_of(dtype: torch.dtype) -> float:
    return {torch.float32: 2e-3, torch.float16: 5e-3, torch.bfloat16: 2e-2}.get(dtype, 2e-2)
