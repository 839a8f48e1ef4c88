"""One kernel launch, and its replay for later calls with the same signature.

`Launch` is what an op's `launches(problem, config, backend)` returns: the jit function, the
grid, the runtime arguments by name, the constexprs and the launch options. The first call
runs it through Triton's own launcher (`JITFunction.run`: argument binding, specialisation,
the compile cache), which returns the compiled kernel. A `Replay` then calls that compiled
kernel's launcher directly with the arguments re-bound to the new call's tensors: everything
else (grid, scalars, constexprs) depends only on the signature the plan is cached under, which
includes each tensor's 16-byte alignment, the one value-dependent fact Triton specialises on.

Replays call the compiled kernel's launcher the way `CompiledKernel[grid](*args)` does, with
the bound arguments in the kernel's parameter order: every parameter from triton 3.3 on
(constexprs included), the non-constexpr ones before (triton 3.2, which triton-ascend 3.2 is).
What that runner looks up on every call (the driver, the launcher, the launch hooks) is looked up
once, when the plan is made; when launch hooks are set then (a profiler), replays go through the
runner itself, which calls them. Under the interpreter, or with ASCEND_KERNELS_DIRECT_LAUNCH=0,
a replay calls `kernel[grid](**kwargs)` instead.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from . import device as _device

DIRECT_ENV = "ASCEND_KERNELS_DIRECT_LAUNCH"
_VERSION = tuple(int(x) for x in _device.TRITON_VERSION.split(".")[:2])
_RUNNER_TAKES_CONSTEXPRS = _VERSION >= (3, 3)


@dataclasses.dataclass
class Launch:
    kernel: Any          # the @triton.jit function
    grid: tuple
    args: dict           # runtime arguments by name (tensors, ints, floats)
    constexprs: dict
    options: dict        # launch options (num_warps, Ascend compile options, ...)

    def __call__(self):
        """Launch through Triton's own launcher; returns the compiled kernel (None under the
        interpreter)."""
        return self.kernel[self.grid](**self.args, **self.constexprs, **self.options)

    def compile(self) -> None:
        """Compile without launching (`JITFunction.warmup`); under the interpreter, where there is
        nothing to compile, run it."""
        warmup = getattr(self.kernel, "warmup", None)
        if warmup is None:
            self()
        else:
            warmup(**self.args, **self.constexprs, **self.options, grid=self.grid)


def _launch_hooks() -> tuple:
    try:
        from triton import knobs

        return knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook
    except ImportError:  # triton 3.2: the hooks are class attributes
        from triton.compiler import CompiledKernel

        return CompiledKernel.launch_enter_hook, CompiledKernel.launch_exit_hook


def _direct_runner(compiled, grid: tuple):
    """`compiled[grid]`'s runner with its per-call lookups done once (None when launch hooks
    are set: the runner must call them)."""
    if any(h is not None for h in _launch_hooks()):
        return None
    from triton.runtime import driver

    compiled[grid]  # loads the module (CompiledKernel._init_handles)
    launcher, function, metadata = compiled.run, compiled.function, compiled.packed_metadata
    active = driver.active
    get_device, get_stream = active.get_current_device, active.get_current_stream
    gx, gy, gz = grid

    def run(*args):
        launcher(gx, gy, gz, get_stream(get_device()), function, metadata, None, None, None, *args)
    return run


def _rebased(desc, base: torch.Tensor):
    """A host tensor descriptor like `desc` over `base` (same shape, strides and block; the
    signature guarantees them): a copy of its fields, without the dataclass's checks."""
    new = object.__new__(type(desc))
    new.__dict__.update(desc.__dict__)
    new.base = base
    return new


def _params(kernel) -> list:
    """(name, is_constexpr) of each kernel parameter, in order."""
    return [(p.name, bool(p.is_constexpr)) for p in kernel.params]


class Scratch:
    """Rebuilds, per call, the kernel arguments that are neither fields of the problem nor
    constants: work buffers the op allocated for its launches (and views of them), shared by
    all the launches of one call. One allocation per call holds them all (each buffer at a
    256-byte aligned offset, as the allocator would place it)."""

    def __init__(self):
        self.roots: list = []    # (storage data pointer, bytes) of each buffer
        self.views: list = []    # (root index, dtype, shape, stride, storage offset)
        self.offsets: list = []  # byte offset of each buffer in the per-call allocation
        self.total, self.device = 0, None

    def add(self, t: torch.Tensor) -> int:
        storage = t.untyped_storage()
        spec = (storage.data_ptr(), storage.nbytes())
        if spec not in self.roots:
            self.roots.append(spec)
            self.offsets.append(self.total)
            self.total += -(-spec[1] // 256) * 256
            self.device = t.device
        self.views.append((self.roots.index(spec), t.dtype, tuple(t.shape), t.stride(), t.storage_offset()))
        return len(self.views) - 1

    def make(self) -> list:
        if not self.views:
            return []
        buf = torch.empty(self.total, dtype=torch.uint8, device=self.device)
        typed: dict = {}
        out = []
        for r, dtype, shape, stride, offset in self.views:
            base = typed.get(dtype)
            if base is None:
                base = typed[dtype] = buf.view(dtype)
            out.append(base.as_strided(shape, stride, self.offsets[r] // base.element_size() + offset))
        return out


class Replay:
    """A launch re-bound to new tensors: built from the first call's `Launch`, the problem it
    was made for, and the compiled kernel Triton returned for it."""

    def __init__(self, launch: Launch, problem: Any, field_names: tuple, compiled: Any, scratch: Scratch):
        fields = {id(getattr(problem, f)): f for f in field_names
                  if isinstance(getattr(problem, f), torch.Tensor)}
        values = dict(launch.args, **launch.constexprs)
        self.names = [n for n, _ in _params(launch.kernel)] if hasattr(launch.kernel, "params") \
            else list(values)
        self.template = [values.get(n) for n in self.names]
        self.fields: list = []   # (position, field name)
        self.descs: list = []    # (position, field name, descriptor)
        self.scratch = scratch
        self.scratch_at: list = []  # (position, view index)
        self.ok = True
        for i, v in enumerate(self.template):
            if isinstance(v, torch.Tensor):
                if id(v) in fields:
                    self.fields.append((i, fields[id(v)]))
                else:
                    self.scratch_at.append((i, self.scratch.add(v)))
            elif isinstance(getattr(v, "base", None), torch.Tensor):  # a host tensor descriptor
                self.ok &= id(v.base) in fields
                self.descs.append((i, fields.get(id(v.base)), v))
        self.launch = launch
        self.runner = None
        # CUDA: tensors go to the launcher as their addresses, which it takes as they are; a
        # tensor costs it a data_ptr() call and a cuPointerGetAttribute driver call (whether the
        # address is device memory: the signature's device already says so)
        self.as_address = False
        if compiled is not None and os.environ.get(DIRECT_ENV, "1") != "0" \
                and hasattr(launch.kernel, "params"):
            grid = tuple(launch.grid) + (1,) * (3 - len(launch.grid))
            self.runner = _direct_runner(compiled, grid)
            self.as_address = self.runner is not None and _device.backend_of(problem) == "cuda"
            self.runner = self.runner or compiled[grid]
            # keep only what the compiled kernel's launcher takes, in its order
            constexpr = [c for _, c in _params(launch.kernel)]
            keep = [i for i, c in enumerate(constexpr) if _RUNNER_TAKES_CONSTEXPRS or not c]
            at = {old: new for new, old in enumerate(keep)}
            self.template = [self.template[i] for i in keep]
            self.fields = [(at[i], f) for i, f in self.fields if i in at]
            self.descs = [(at[i], f, d) for i, f, d in self.descs if i in at]
            self.scratch_at = [(at[i], j) for i, j in self.scratch_at if i in at]

    def __call__(self, problem: Any, scratch: list) -> None:
        vals = self.template[:]
        if self.as_address:
            for i, f in self.fields:
                vals[i] = getattr(problem, f).data_ptr()
            for i, j in self.scratch_at:
                vals[i] = scratch[j].data_ptr()
        else:
            for i, f in self.fields:
                vals[i] = getattr(problem, f)
            for i, j in self.scratch_at:
                vals[i] = scratch[j]
        for i, f, desc in self.descs:
            vals[i] = _rebased(desc, getattr(problem, f))
        if self.runner is not None:
            self.runner(*vals)
        else:
            self.launch.kernel[self.launch.grid](**dict(zip(self.names, vals)), **self.launch.options)
