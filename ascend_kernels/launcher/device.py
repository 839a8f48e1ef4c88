"""Backend detection (npu | cuda | cpu), device properties, persistent grids, and the Triton
interpreter switch for CPU tensors.

On CPU the ops take the PyTorch path by default: importing the library changes no global Triton
state. ``ASCEND_KERNELS_INTERPRET=1`` (or ``TRITON_INTERPRET=1``), set before `triton` is first
imported, runs the real Triton kernels on CPU tensors through the interpreter instead (the tests,
CI and the bench's triton provider on CPU do this). Jit functions compiled before the flag stay
compiled and fail inside an interpreted kernel, so a later switch cannot take effect.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import sys

import torch

BACKENDS = ("npu", "cuda", "cpu")
INTERPRET_ENV = "ASCEND_KERNELS_INTERPRET"


def _interpreter_switch() -> tuple[bool, str]:
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True, "TRITON_INTERPRET=1 is set"
    if os.environ.get(INTERPRET_ENV) != "1":
        return False, (f"CPU tensors take the PyTorch path unless {INTERPRET_ENV}=1 is set before "
                       f"ascend_kernels (and triton) are imported")
    if torch.cuda.is_available() or (has_torch_npu() and _npu_available()):
        return False, "a GPU/NPU is present: the interpreter would take its kernels too, so it stays off"
    if "triton" in sys.modules:
        return False, (f"{INTERPRET_ENV}=1, but triton was imported before ascend_kernels: too late "
                       f"to turn on the interpreter (set TRITON_INTERPRET=1 or import ascend_kernels first)")
    os.environ["TRITON_INTERPRET"] = "1"
    return True, f"{INTERPRET_ENV}=1: CPU tensors run the Triton kernels through the interpreter"


def has_torch_npu() -> bool:
    return importlib.util.find_spec("torch_npu") is not None


def _npu_available() -> bool:
    importlib.import_module("torch_npu")  # registers torch.npu

    return bool(torch.npu.is_available())


INTERPRETER_ON, _INTERPRETER_REASON = _interpreter_switch()

import triton  # noqa: E402  (after the interpreter decision, on purpose)

TRITON_VERSION = triton.__version__
# triton-ascend installs as module `triton`; its backend directory is the tell.
IS_TRITON_ASCEND = importlib.util.find_spec("triton.backends.ascend") is not None


def interpreter_reason() -> str:
    return _INTERPRETER_REASON


def backend_of(where) -> str:
    """The backend that runs an op whose inputs live on `where` (a tensor, a problem with a
    `.device`, or a torch.device)."""
    kind = getattr(where, "device", where).type
    if kind not in BACKENDS:
        raise ValueError(f"unsupported device type {kind!r}: expected npu, cuda or cpu tensors")
    return kind


def triton_runs_on(backend: str) -> tuple[bool, str]:
    """Whether Triton kernels can run for this backend in this process, and why not."""
    if backend == "cpu":
        return INTERPRETER_ON, _INTERPRETER_REASON
    if backend == "npu" and not IS_TRITON_ASCEND:
        return False, "NPU tensors need triton-ascend, but the installed triton is upstream"
    if backend == "cuda" and IS_TRITON_ASCEND:
        return False, "CUDA tensors need upstream triton, but the installed triton is triton-ascend"
    return True, f"triton {TRITON_VERSION} on {backend}"


@functools.lru_cache(maxsize=None)
def _props(kind: str, index: int) -> dict:
    from .. import backends

    return backends.get(kind).properties(index)


def properties(device: torch.device) -> dict:
    """name, num_aicore (cores for kernels with tl.dot: SMs on CUDA), num_vectorcore, ub_bytes
    (NPU only), tma (CUDA Hopper or newer with triton's host tensor descriptors), smem_bytes
    (CUDA: shared memory one program may use; None where unknown)."""
    index = device.index
    if index is None:
        index = getattr(torch, device.type).current_device() if device.type in ("cuda", "npu") else 0
    return _props(device.type, index)


def device_name(device: torch.device) -> str:
    return properties(device)["name"]


def grid_cap(device: torch.device, cube: bool) -> int:
    """Programs of a persistent grid: the physical cores (cube cores for kernels with tl.dot)."""
    p = properties(device)
    return p["num_aicore"] if cube else p["num_vectorcore"]


MAX_GRID = 65535  # Ascend's (and CUDA's y/z) grid limit per dimension


def grid_size(cores: int, n_tasks: int, programs_per_core: int) -> int:
    """Programs of a persistent grid over `cores` cores: programs_per_core per core, never more
    than the tasks or the grid limit, at least one."""
    return max(1, min(n_tasks, cores * programs_per_core, MAX_GRID))


def persistent_grid(device: torch.device, n_tasks: int, programs_per_core: int, cube: bool) -> int:
    """grid_size over the device's cores (cube cores for kernels with tl.dot)."""
    return grid_size(grid_cap(device, cube), n_tasks, programs_per_core)


def versions() -> dict:
    out = {"torch": torch.__version__, "triton": TRITON_VERSION,
           "triton_flavour": "triton-ascend" if IS_TRITON_ASCEND else "upstream", "torch_npu": None}
    if has_torch_npu():
        import torch_npu

        out["torch_npu"] = getattr(torch_npu, "__version__", "unknown")
    if torch.cuda.is_available():
        out["cuda"] = torch.version.cuda
    return out


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if has_torch_npu() and _npu_available():
        return torch.device("npu")
    return torch.device("cpu")


def backend_flag(backend: str, name: str) -> bool:
    """A kernel-shaping flag of a backend's module (DOTS_IN_FP32, QUANT_DOTS_FP16), False if unset."""
    from .. import backends

    return bool(getattr(backends.get(backend), name, False))
