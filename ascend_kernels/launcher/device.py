"""Backend detection (npu | cuda | cpu), device properties, and the Triton interpreter on CPU.

Importing this module before `triton` is what makes CPU tensors run the real Triton kernels:
on a host with no GPU and no NPU it sets ``TRITON_INTERPRET=1`` unless triton was already
imported (jit functions compiled before the flag stay compiled and fail inside an interpreted
kernel, see DESIGN.md). When that is too late, CPU tensors take the reference path and
`interpreter_reason()` says why.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import sys

import torch

BACKENDS = ("npu", "cuda", "cpu")
# Ascend 910B (A2/A3): 192 KB unified buffer per AI core; the default multibuffer halves it.
ASCEND_UB_BYTES = 192 * 1024


def _has_torch_npu() -> bool:
    return importlib.util.find_spec("torch_npu") is not None


def _accelerator_present() -> bool:
    if torch.cuda.is_available():
        return True
    if _has_torch_npu():
        import torch_npu  # noqa: F401  (registers torch.npu)

        return bool(torch.npu.is_available())
    return False


def _enable_interpreter() -> tuple[bool, str]:
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True, "TRITON_INTERPRET=1 is set"
    if _accelerator_present():
        return False, "a GPU/NPU is present, so the Triton interpreter is off for CPU tensors"
    if "triton" in sys.modules:
        return False, ("triton was imported before ascend_kernels, too late to turn on the "
                       "interpreter (set TRITON_INTERPRET=1 or import ascend_kernels first)")
    os.environ["TRITON_INTERPRET"] = "1"
    return True, "no GPU/NPU: CPU tensors run the Triton kernels through the interpreter"


INTERPRETER_ON, _INTERPRETER_REASON = _enable_interpreter()

import triton  # noqa: E402  (after the interpreter decision, on purpose)

TRITON_VERSION = triton.__version__
# triton-ascend installs as module `triton`; its backend directory is the tell.
IS_TRITON_ASCEND = importlib.util.find_spec("triton.backends.ascend") is not None


def interpreter_reason() -> str:
    return _INTERPRETER_REASON


def backend_of(tensor: torch.Tensor) -> str:
    """The backend that runs an op whose inputs live on ``tensor.device``."""
    kind = tensor.device.type
    if kind == "npu":
        return "npu"
    if kind == "cuda":
        return "cuda"
    if kind == "cpu":
        return "cpu"
    raise ValueError(f"unsupported device type {kind!r}: expected npu, cuda or cpu tensors")


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
    if kind == "cuda":
        p = torch.cuda.get_device_properties(index)
        return {"name": p.name, "num_cores": p.multi_processor_count,
                "num_vectorcore": p.multi_processor_count, "num_aicore": p.multi_processor_count,
                "ub_bytes": None, "tma": p.major >= 9 and _has_host_tensor_descriptor(),
                "smem_bytes": getattr(p, "shared_memory_per_block_optin", None)}
    if kind == "npu":
        props = triton.runtime.driver.active.utils.get_device_properties(index)
        return {"name": torch.npu.get_device_name(index),
                "num_aicore": int(props["num_aicore"]), "num_vectorcore": int(props["num_vectorcore"]),
                "num_cores": int(props["num_aicore"]), "ub_bytes": ASCEND_UB_BYTES, "tma": False,
                "smem_bytes": None}
    # The interpreter runs programs one after another: a few programs keep the persistent
    # loops exercised without paying per-program overhead many times.
    return {"name": "cpu (triton interpreter)", "num_cores": 4, "num_vectorcore": 4,
            "num_aicore": 4, "ub_bytes": None, "tma": False, "smem_bytes": None}


def _has_host_tensor_descriptor() -> bool:
    return importlib.util.find_spec("triton.tools.tensor_descriptor") is not None


def properties(device: torch.device) -> dict:
    """name, num_cores, num_aicore (cube), num_vectorcore, ub_bytes (NPU only), tma (CUDA
    Hopper or newer with triton's host tensor descriptors: the bulk tensor copy engine),
    smem_bytes (CUDA: shared memory one program may use; None where unknown)."""
    index = device.index if device.index is not None else 0
    if device.type in ("cuda", "npu") and device.index is None:
        index = getattr(torch, device.type).current_device()
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


def dots_in_fp32(backend: str) -> bool:
    """The DOT_FP32 constexpr of the attention kernels: the CPU interpreter computes bf16 tl.dot
    wrongly (numpy has no bf16), so kernels cast dot operands to fp32 there."""
    return backend == "cpu"


def versions() -> dict:
    out = {"torch": torch.__version__, "triton": TRITON_VERSION,
           "triton_flavour": "triton-ascend" if IS_TRITON_ASCEND else "upstream"}
    if _has_torch_npu():
        import torch_npu

        out["torch_npu"] = getattr(torch_npu, "__version__", "unknown")
    else:
        out["torch_npu"] = None
    if torch.cuda.is_available():
        out["cuda"] = torch.version.cuda
    return out


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _has_torch_npu() and torch.npu.is_available():
        return torch.device("npu")
    return torch.device("cpu")
