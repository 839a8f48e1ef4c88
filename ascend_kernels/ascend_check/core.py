"""The check's data: what a case is, what its result holds, and the verdict rules."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

UB_BYTES = 192 * 1024  # Ascend 910B (A2/A3) unified buffer per AI vector core
TARGET = ("npu", "Ascend910B3", 0)
DEFAULT_TIMEOUT_S = 60.0

_TRITON_TYPES = {"torch.float16": "fp16", "torch.bfloat16": "bf16", "torch.float32": "fp32",
                 "torch.float64": "fp64", "torch.int8": "i8", "torch.uint8": "u8",
                 "torch.int16": "i16", "torch.int32": "i32", "torch.int64": "i64",
                 "torch.bool": "i1", "torch.float8_e4m3fn": "fp8e4nv", "torch.float8_e5m2": "fp8e5"}


def signature_of(args: dict) -> dict:
    """Triton type strings for a kernel's runtime arguments, as a launch would pass them:
    tensors -> "*<dtype>", ints -> "i32" (or "i64" past 2**31), floats -> "fp32"."""
    sig = {}
    for name, value in args.items():
        if hasattr(value, "dtype") and hasattr(value, "data_ptr"):
            sig[name] = "*" + _TRITON_TYPES[str(value.dtype)]
        elif isinstance(value, bool):
            sig[name] = "i1"
        elif isinstance(value, int):
            sig[name] = "i32" if -2**31 <= value < 2**31 else "i64"
        elif isinstance(value, float):
            sig[name] = "fp32"
        else:
            raise TypeError(f"signature_of: no Triton type for argument {name}={value!r}")
    return sig


def config_key(config: dict) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def pyfn(kernel):
    """The Python function under a JITFunction / InterpretedFunction / plain function."""
    return getattr(kernel, "fn", kernel)


@dataclasses.dataclass
class KernelCase:
    op: str
    kernel: Any                    # a @triton.jit function (JITFunction or InterpretedFunction)
    signature: dict                # non-constexpr arg name -> "*fp16" / "i32" / ...
    constexprs: dict               # constexpr arg name -> value
    config: dict = dataclasses.field(default_factory=dict)  # the Ascend config it came from
    label: str = ""                # shape description
    options: dict = dataclasses.field(default_factory=dict)  # Ascend compile options (NPUOptions)
    note: str = ""                 # why a known scalarised access is there (for the report)

    @property
    def kernel_name(self) -> str:
        return pyfn(self.kernel).__name__


@dataclasses.dataclass
class CaseResult:
    op: str
    kernel: str
    label: str
    config: dict
    lowered: bool
    error: str = ""
    structured: int = 0            # tensor loads/stores/atomics lowered as one strided DMA
    scalar: int = 0                # one-element loads/stores by design (tl.load(ptr + i))
    scalarised: int = 0            # accesses the adapter turned into per-element/row loops
    scalarised_where: list = dataclasses.field(default_factory=list)  # short descriptions
    loops: list = dataclasses.field(default_factory=list)  # ir.Loop rows (dicts), see ir.py
    hot: dict = dataclasses.field(default_factory=dict)    # op counts inside growing loops
    mix_mode: str = ""
    ub_bytes: int = 0              # peak live UB bytes, see the package docstring
    ub_bytes_multibuffer: int = 0  # the same with the loads inside loops double-buffered
    dynamic_buffers: int = 0       # buffers whose size is not static (not counted in ub_bytes)
    multibuffer: bool = True       # the case's multibuffer option (NPUOptions' default: on)
    note: str = ""                 # the case's note: why a scalarised access is there
    seconds: float = 0.0
    cached: bool = False
    key: str = ""

    @property
    def ub_used(self) -> int:
        """The UB figure that applies to this case's multibuffer option."""
        return self.ub_bytes_multibuffer if self.multibuffer else self.ub_bytes

    @property
    def fits(self) -> bool:
        return self.lowered and self.ub_used <= UB_BYTES

    @property
    def failures(self) -> list:
        """Why the case fails, one line each; empty when it passes."""
        if not self.lowered:
            return [self.error or "did not lower"]
        out = [] if self.fits else [f"UB {self.ub_used} B > {UB_BYTES} B"]
        for name, what in (("scalarised", "scalarised accesses"),
                           ("int64_vector", "int64 vector ops")):
            if self.hot.get(name):
                where = ", ".join(f"{lp['id']} (line {lp['line']})" for lp in self.loops
                                  if lp["hot"] and lp["ops"].get(name))
                out.append(f"{self.hot[name]} {what} in growing loops: {where}")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
