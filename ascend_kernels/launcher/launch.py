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
runner itself, which calls them. Where the launcher is triton 3.4-3.6's CUDA one (a Python
`CudaLauncher` in front of a generated C function) and the kernel needs no global or profile
scratch, the plan calls the C function itself (`Replay.c_launch`): the Python layer only
allocates those scratches and forwards the arguments. Under the interpreter, or with
ASCEND_KERNELS_DIRECT_LAUNCH=0, a replay calls `kernel[grid](**kwargs)` instead.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from typing import Any, Optional

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
    compiled[grid]  # loads the module (CompiledKernel._init_handles)
    launcher, function, metadata = compiled.run, compiled.function, compiled.packed_metadata
    get_stream, get_device = stream_getters()
    gx, gy, gz = grid

    def run(*args):
        launcher(gx, gy, gz, get_stream(get_device()), function, metadata, None, None, None, *args)
    return run


@functools.lru_cache(maxsize=None)
def _forwards_to_launch(launcher_type) -> bool:
    """Whether a compiled kernel's `run` is triton 3.4-3.6's CudaLauncher, whose call is
    `launch(gridX, gridY, gridZ, stream, function, cooperative, pdl, global_scratch,
    profile_scratch, *args)` after allocating the two scratches."""
    try:
        names = list(inspect.signature(launcher_type.__call__).parameters)
    except (TypeError, ValueError):
        return False
    return names == ["self", "gridX", "gridY", "gridZ", "stream", "function", "args"]


def _c_launch(compiled, grid: tuple):
    """(the launcher's C function, the arguments that come after the stream) where a plan may
    call that function itself (see the module docstring), else None."""
    run = compiled.run
    if not _forwards_to_launch(type(run)) or not hasattr(run, "launch") \
            or getattr(run, "global_scratch_size", 1) or getattr(run, "profile_scratch_size", 1):
        return None
    return run.launch, (compiled.function, run.launch_cooperative_grid, run.launch_pdl, None, None,
                        compiled.packed_metadata, None, None, None)


def stream_getters() -> tuple:
    """(get_stream, get_device) of the active driver: get_stream(get_device()) is the current
    device's current stream, as the launchers take it."""
    from triton.runtime import driver

    active = driver.active
    return active.get_current_stream, active.get_current_device


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


_PERMANENT: dict = {}  # id -> tensor: tensors that live as long as the process


def permanent(t: torch.Tensor) -> torch.Tensor:
    """Mark a tensor that is never freed nor rewritten by the host (a shared empty output, the
    zeroed counters): a plan takes it as a constant, like a number."""
    if not torch.compiler.is_compiling():  # traced code only makes a custom op's arguments
        _PERMANENT[id(t)] = t
    return t


def is_permanent(t) -> bool:
    return _PERMANENT.get(id(t)) is t


@functools.lru_cache(maxsize=None)
def unused_output(device: torch.device) -> torch.Tensor:
    """An optional fp32 output that was not asked for: one empty tensor per device, never
    written (an allocation less per call)."""
    return permanent(torch.empty(0, dtype=torch.float32, device=device))


class _Workspaces:
    """One work buffer per (device, stream) for the per-call scratch of direct CUDA launches,
    grown as needed: the launches of a stream run in order, so a call's scratch is free again
    when the stream's next call runs, and streams never share one. Not while the stream is being
    captured: a graph allocates its own scratch (from its own pool), so no graph shares memory
    with eager calls or with another graph."""

    def __init__(self):
        self.buffers: dict = {}  # (device, stream) -> uint8 buffer

    def get(self, device: torch.device, stream: int, nbytes: int):
        """The stream's buffer of at least nbytes, or None while capturing."""
        if torch.cuda.is_current_stream_capturing():
            return None
        buf = self.buffers.get((device, stream))
        if buf is None or buf.numel() < nbytes:
            # a freed buffer may still be read by this stream's queued launches: the allocator
            # hands it out again only to work queued after them on the same stream
            buf = torch.empty(max(nbytes, 2 * (0 if buf is None else buf.numel())),
                              dtype=torch.uint8, device=device)
            self.buffers[(device, stream)] = buf
        return buf


workspaces = _Workspaces()


class Scratch:
    """Rebuilds, per call, the kernel arguments that are neither fields of the problem nor
    constants: work buffers the op allocated for its launches (and views of them), shared by
    all the launches of one call, all placed in one buffer (each at a 256-byte aligned offset,
    as the allocator would place it): the stream's workspace for direct CUDA launches (one
    dict lookup), else one allocation per call."""

    def __init__(self):
        self.roots: list = []    # (storage data pointer, bytes) of each buffer
        self.views: list = []    # (dtype, shape, stride, element offset in the allocation)
        self.offsets: list = []  # byte offset of each buffer in the per-call allocation
        self.total, self.device = 0, None
        # stream -> (its workspace's address, the views' addresses in it); the address, not
        # the tensor, so that a workspace grown by another plan is freed, not kept alive here
        self.placed: dict = {}

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

    def _allocate(self) -> torch.Tensor:
        return torch.empty(self.total, dtype=torch.uint8, device=self.device)

    def _addresses(self, buf: torch.Tensor) -> list:
        base = buf.data_ptr()
        return [base + start * dtype.itemsize for dtype, _, _, start in self.views]

    def make(self) -> tuple:
        """(the allocation, to keep alive until the launches are queued; the views)."""
        buf = self._allocate()
        return buf, [buf.view(dtype).as_strided(shape, stride, start)
                     for dtype, shape, stride, start in self.views]

    def addresses(self, stream: int) -> tuple:
        """(the buffer, to keep alive until the launches are queued; the views' addresses) in
        the stream's workspace, or in an allocation of this call while capturing."""
        buf = workspaces.get(self.device, stream, self.total)
        if buf is None:
            buf = self._allocate()
            return buf, self._addresses(buf)
        base = buf.data_ptr()
        placed = self.placed.get(stream)
        if placed is None or placed[0] != base:
            placed = self.placed[stream] = (base, self._addresses(buf))
        return buf, placed[1]


class ZeroedCounters:
    """int32 counters that a kernel leaves at 0 when it finishes (whoever counts last resets):
    one buffer per device, grown by doubling and never freed (a captured graph keeps its
    address), passed to every replay as it is (it is not per-call scratch). Kernels on two
    streams of one device at the same time would share them: such calls must not overlap."""

    MIN_COUNTERS = 4096

    def __init__(self):
        self.buffers: dict = {}  # device -> the current buffer

    def get(self, device: torch.device, n: int) -> Optional[torch.Tensor]:
        """n counters, or None while a CUDA graph is being captured before they exist (a zeroing
        captured into a graph would only run when it replays)."""
        buf = self.buffers.get(device)
        if buf is None or buf.numel() < n:
            if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
                return None
            buf = permanent(torch.zeros(max(self.MIN_COUNTERS, 1 << max(0, n - 1).bit_length()),
                                        dtype=torch.int32, device=device))
            self.buffers[device] = buf
        return buf


zeroed_counters = ZeroedCounters()


class Replay:
    """A launch re-bound to new tensors: built from the first call's `Launch`, the problem it
    was made for, and the compiled kernel Triton returned for it. `sources` says where each
    argument of the launch comes from on a later call: ("const", value), ("field", problem
    field), ("scratch", index in the Scratch) or ("desc", problem field, host tensor descriptor
    over it). The launch itself is `runner(*arguments)`, or, where `c_launch` is set,
    `c_launch[0](*grid, stream, *c_launch[1], *arguments)`."""

    def __init__(self, launch: Launch, problem: Any, field_names: tuple, compiled: Any, scratch: Scratch):
        fields = {id(getattr(problem, f)): f for f in field_names
                  if isinstance(getattr(problem, f), torch.Tensor)}
        values = dict(launch.args, **launch.constexprs)
        direct = compiled is not None and os.environ.get(DIRECT_ENV, "1") != "0" \
            and hasattr(launch.kernel, "params")
        self.c_launch = None
        if direct:  # only what the compiled kernel's launcher takes, in its order
            names = [n for n, c in _params(launch.kernel) if _RUNNER_TAKES_CONSTEXPRS or not c]
            self.grid = tuple(launch.grid) + (1,) * (3 - len(launch.grid))
            runner = _direct_runner(compiled, self.grid)
            # CUDA: tensors go to the launcher as their addresses, which it takes as they are; a
            # tensor costs it a data_ptr() call and a cuPointerGetAttribute driver call (whether
            # the address is device memory: the signature's device already says so)
            self.as_address = runner is not None and _device.backend_of(problem) == "cuda"
            self.runner = runner or compiled[self.grid]
            if self.as_address:
                self.c_launch = _c_launch(compiled, self.grid)
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
            if isinstance(v, torch.Tensor) and is_permanent(v):
                self.sources.append(("const", v.data_ptr() if self.as_address else v))
            elif isinstance(v, torch.Tensor):
                self.sources.append(("field", fields[id(v)]) if id(v) in fields
                                    else ("scratch", scratch.add(v)))
            elif isinstance(getattr(v, "base", None), torch.Tensor):  # a host tensor descriptor
                self.ok &= id(v.base) in fields
                self.sources.append(("desc", fields.get(id(v.base)), v))
            else:
                self.sources.append(("const", v))
