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
    # triton >= 3.5 keeps its hooks in HookChain objects, empty when no hook is set
    if any(h is not None and getattr(h, "calls", True) for h in _launch_hooks()):
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


def rebased(desc, base: torch.Tensor):
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
        self.views: list = []    # (dtype, shape, stride, element offset in the allocation)
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
        start = self.offsets[self.roots.index(spec)] // t.element_size() + t.storage_offset()
        view = (t.dtype, tuple(t.shape), t.stride(), start)
        if view not in self.views:
            self.views.append(view)
        return self.views.index(view)

    def make(self, as_address: bool) -> tuple:
        """(the allocation, to keep alive until the launches are queued; the views, or their
        addresses when the launcher takes addresses)."""
        buf = torch.empty(self.total, dtype=torch.uint8, device=self.device)
        if as_address:
            base = buf.data_ptr()
            return buf, [base + start * dtype.itemsize for dtype, _, _, start in self.views]
        return buf, [buf.view(dtype).as_strided(shape, stride, start)
                     for dtype, shape, stride, start in self.views]


class ZeroedCounters:
    """int32 counters that a kernel leaves at 0 when it finishes (whoever counts last resets):
    one buffer per device, grown by doubling and never freed (a captured graph keeps its
    address), passed to every replay as it is (it is not per-call scratch). Kernels on two
    streams of one device at the same time would share them: such calls must not overlap."""

    MIN_COUNTERS = 4096

    def __init__(self):
        self.buffers: dict = {}  # device -> the current buffer
        self.kept: list = []     # every buffer ever made
        self.ids: set = set()

    def ready(self, device: torch.device, n: int) -> bool:
        """Whether n counters exist or can be made now: not while a CUDA graph is being captured
        (a zeroing captured into a graph would only run when it replays)."""
        buf = self.buffers.get(device)
        return (buf is not None and buf.numel() >= n) or not (
            device.type == "cuda" and torch.cuda.is_current_stream_capturing())

    def __call__(self, device: torch.device, n: int) -> torch.Tensor:
        buf = self.buffers.get(device)
        if buf is None or buf.numel() < n:
            buf = torch.zeros(max(self.MIN_COUNTERS, 1 << max(0, n - 1).bit_length()),
                              dtype=torch.int32, device=device)
            self.buffers[device] = buf
            self.ids.add(id(buf))
            self.kept.append(buf)
        return buf


zeroed_counters = ZeroedCounters()


class Replay:
    """A launch re-bound to new tensors: built from the first call's `Launch`, the problem it
    was made for, and the compiled kernel Triton returned for it. `sources` says where each
    argument of `runner` comes from on a later call: ("const", value), ("field", problem field),
    ("scratch", index in the Scratch) or ("desc", problem field, host tensor descriptor over it)."""

    def __init__(self, launch: Launch, problem: Any, field_names: tuple, compiled: Any, scratch: Scratch):
        fields = {id(getattr(problem, f)): f for f in field_names
                  if isinstance(getattr(problem, f), torch.Tensor)}
        values = dict(launch.args, **launch.constexprs)
        direct = compiled is not None and os.environ.get(DIRECT_ENV, "1") != "0" \
            and hasattr(launch.kernel, "params")
        if direct:  # only what the compiled kernel's launcher takes, in its order
            names = [n for n, c in _params(launch.kernel) if _RUNNER_TAKES_CONSTEXPRS or not c]
            grid = tuple(launch.grid) + (1,) * (3 - len(launch.grid))
            runner = _direct_runner(compiled, grid)
            # CUDA: tensors go to the launcher as their addresses, which it takes as they are; a
            # tensor costs it a data_ptr() call and a cuPointerGetAttribute driver call (whether
            # the address is device memory: the signature's device already says so)
            self.as_address = runner is not None and _device.backend_of(problem) == "cuda"
            self.runner = runner or compiled[grid]
        else:
            names = list(values)
            self.as_address = False
            kernel, grid, options = launch.kernel, launch.grid, launch.options

            def by_name(*vals):
                kernel[grid](**dict(zip(names, vals)), **options)
            self.runner = by_name
        self.sources: list = []
        self.ok = True
        for v in map(values.get, names):
            if isinstance(v, torch.Tensor) and id(v) in zeroed_counters.ids:
                self.sources.append(("const", v.data_ptr() if self.as_address else v))
            elif isinstance(v, torch.Tensor):
                self.sources.append(("field", fields[id(v)]) if id(v) in fields
                                    else ("scratch", scratch.add(v)))
            elif isinstance(getattr(v, "base", None), torch.Tensor):  # a host tensor descriptor
                self.ok &= id(v.base) in fields
                self.sources.append(("desc", fields.get(id(v.base)), v))
            else:
                self.sources.append(("const", v))
