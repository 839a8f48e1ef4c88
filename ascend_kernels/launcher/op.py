"""The generic op: one declaration per op, and a launch plan per call signature.

An op module writes its public function once, as the validation of its arguments into a
problem (a dataclass whose fields are the custom op's arguments), and declares the rest with
`define`: its capability check, the kernel launches of one config (`launches`), its fallback
per fallback package, its tuning key and rule features, which fields it writes (`outputs`)
and which are made anew on every call (`fresh`: outputs to allocate, seeds to draw). From
that this module makes the public callable, the torch custom op with its fake (one opaque
node for torch.compile and graph capture), the path decision and the triton/fallback tail.

The launch plan. The first call with a given signature (every argument's type; each tensor's
dtype, shape, strides, device and 16-byte alignment; every other argument's value; the
environment switches) is validated in full, decided, launched, and remembered: where each
problem field comes from (which argument, or a constant), the decision, and each kernel
launch re-bound to the compiled kernel (`launch.Replay`). A later call with the same signature
skips straight to re-binding its tensors and launching. Whatever a value-free check looks at is
part of the signature, so a call that would fail validation never matches a plan: it takes the
full path and gets its error before any kernel runs. Calls whose problem cannot be rebuilt
from the arguments alone (a converted tensor, a host-side reshape), calls under
ASCEND_KERNELS_CHECK_BOUNDS=1, and calls traced by torch.compile always take the full path.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import os
import typing
from typing import Any, Callable, Optional

import torch

from . import autotune, dispatch
from .launch import DIRECT_ENV, Replay, Scratch, is_permanent, stream_getters, rebased, unused_output

CHECK_BOUNDS_ENV = "ASCEND_KERNELS_CHECK_BOUNDS"
# environment switches read by validation or the decision: part of every plan's signature
ENV_KEYS = (dispatch.BACKEND_ENV, CHECK_BOUNDS_ENV, autotune.AUTOTUNE_ENV, autotune.TUNED_ENV, DIRECT_ENV,
            "ASCEND_KERNELS_PA_SPLIT_SIZE")
_ENV_BYTES = getattr(os.environ, "_data", None)  # the raw mapping: a lookup without encoding
_ENV_KEYS_RAW = tuple(os.environ.encodekey(k) for k in ENV_KEYS) if _ENV_BYTES is not None else ()
_environ_get = os.environ.get


def _switches() -> tuple:
    if _ENV_BYTES is not None:
        return tuple(map(_ENV_BYTES.get, _ENV_KEYS_RAW))
    return tuple(map(_environ_get, ENV_KEYS))


@dataclasses.dataclass
class OpDef:
    name: str
    validate: Callable[..., Any]          # the public signature: arguments -> problem
    problem: type                         # dataclass; its fields are the custom op's arguments
    kernel_module: Any                    # kernels/<op>.py: hashed for the tuning cache
    capability: Callable[[str, Any], tuple]
    launches: Callable[[Any, dict, str], list]   # (problem, config, backend) -> [Launch]
    fallbacks: dict                       # fallback package name -> fn(problem)
    tuning_key: Callable[[Any], tuple]    # problem -> (fixed, data-dependent)
    features: Callable[[Any], dict]       # problem -> facts the heuristic rules test
    result: Callable[[Any], Any]          # problem -> what the public function returns
    outputs: tuple = ()                   # fields the op writes
    fresh: dict = dataclasses.field(default_factory=dict)  # field -> fn(problem), every call
    check_values: Optional[Callable[[Any], None]] = None   # value checks (a host sync), on demand

    def prepare(self, *args, **kwargs) -> Any:
        """Validate into a problem with its fresh fields made."""
        return self.make_fresh(self.validate(*args, **kwargs))

    def make_fresh(self, p: Any) -> Any:
        for name, make in self.fresh.items():
            setattr(p, name, make(p))
        return p


class Output:
    """A `fresh` maker of an output field: the tensor the caller gave (the field is not None),
    else a new tensor of `shape_dtype(p)` = (shape, dtype) on the problem's device, or, when
    `wanted(p)` is false, the device's shared empty fp32 tensor (never written). A replay
    allocates with its first call's shape and dtype (they follow from the signature), without
    building the problem."""

    def __init__(self, shape_dtype: Callable, wanted: Optional[Callable] = None):
        self.shape_dtype, self.wanted, self.name = shape_dtype, wanted, None

    def __call__(self, p: Any) -> torch.Tensor:
        given = getattr(p, self.name)
        if given is not None:
            return given
        if self.wanted is not None and not self.wanted(p):
            return unused_output(p.device)
        shape, dtype = self.shape_dtype(p)
        return torch.empty(shape, dtype=dtype, device=p.device)


_REGISTRY: dict = {}
_RUNNERS: dict = {}


def get(name: str) -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown op {name!r}; known ops: {sorted(_REGISTRY)}") from None


def op_names() -> list:
    return sorted(_REGISTRY)


def runner(name: str) -> "Runner":
    """The public callable of a registered op."""
    return _RUNNERS[name]


def explain(op: str, *args, **kwargs) -> dispatch.Decision:
    """Which path `op(*args, **kwargs)` would take, and why (nothing runs)."""
    defn = get(op)
    p = defn.prepare(*args, **kwargs)
    decision = dispatch.decide(defn, p, _FORCED.get(op))
    route = getattr(defn.fallbacks.get(decision.fallback), "route", None)
    if decision.path == "fallback" and route is not None:
        path, why = route(p)
        decision.reason += f"; it takes {path}: {why}"
    return decision


_FORCED: dict = {}


@contextlib.contextmanager
def force_config(op: str, config: dict):
    """Run `op`'s Triton kernel with this config (merged onto the heuristic one) inside the
    block: for tests and experiments."""
    get(op)
    previous = _FORCED.get(op)
    _FORCED[op] = config
    autotune.reset()
    try:
        yield
    finally:
        if previous is None:
            _FORCED.pop(op, None)
        else:
            _FORCED[op] = previous
        autotune.reset()


def op_fields(problem: type) -> list:
    """The problem's fields that are custom-op arguments (not those marked host-only, like a
    torch.Generator that only a fresh field reads)."""
    return [f for f in dataclasses.fields(problem) if not f.metadata.get("host")]


def _signature(a):
    if isinstance(a, torch.Tensor):
        return (a.dtype, a.shape, a.stride(), a.device, a.data_ptr() & 15 == 0)
    return (type(a), a)


try:  # torch's C++ check of tensors' dtype, device, shape and strides (torch.compile's guards)
    from torch._C._dynamo.guards import TensorGuards
except ImportError:  # pragma: no cover -- a torch without it keeps the signature lookup only
    TensorGuards = None


def _matcher(args: tuple, kwargs: dict):
    """`match(args, kwargs)`: whether a call has the signature of (args, kwargs), generated for
    them: the same positions and keywords; each tensor's dtype, device, shape and strides in one
    C++ check (any other tensor metadata it compares too, e.g. requires_grad, only makes a match
    stricter), each 16-byte aligned address still aligned (an unaligned one matches either way:
    a kernel specialised for it takes both); every other argument of the same type and value;
    the same environment switches. None where torch has no TensorGuards of this form."""
    if TensorGuards is None:
        return None
    values = [(f"args[{i}]", a) for i, a in enumerate(args)] + [(f"kwargs[{k!r}]", v) for k, v in kwargs.items()]
    tensors = [(e, v) for e, v in values if type(v) is torch.Tensor]
    if any(isinstance(v, torch.Tensor) for e, v in values if type(v) is not torch.Tensor):
        return None  # tensor subclasses: the signature lookup only
    try:
        guard = TensorGuards(*[v for _, v in tensors], dynamic_dims_sizes=[list(v.shape) for _, v in tensors],
                             dynamic_dims_strides=[list(v.stride()) for _, v in tensors])
    except (TypeError, SystemError):  # a torch whose constructor differs (private API): no match
        return None
    scope = {"switches": _switches, "SW": _switches(), "KW": set(kwargs), "guard": guard}
    conds = [f"len(args) == {len(args)}", "kwargs.keys() == KW" if kwargs else "not kwargs",
             f"guard.check({', '.join(e for e, _ in tensors)})"]
    aligned = [f"{e}.data_ptr()" for e, v in tensors if v.data_ptr() & 15 == 0]
    if aligned:
        conds.append(f"not ({' | '.join(aligned)}) & 15")
    for i, (e, v) in enumerate(values):
        if type(v) is not torch.Tensor:
            scope[f"t{i}"], scope[f"v{i}"] = type(v), v
            conds.append(f"{e} is None" if v is None else f"type({e}) is t{i} and {e} == v{i}")
    conds.append("switches() == SW")
    code = "def match(args, kwargs):\n    return (" + "\n            and ".join(conds) + ")"
    exec(code, scope)  # noqa: S102 -- argument positions and names only
    return scope["match"]


class _Plan:
    """What a call signature's first call found out, as one function generated for it:
    `call(args, kwargs)` rebuilds what it needs of the problem from the new call's arguments,
    makes the fresh fields, replays the path (the compiled kernels' launchers with the new
    tensors, or the fallback) and returns the result, with no per-field branching on the way.

    A fresh field whose maker returned the argument itself on the first call (an `out` given, a
    tensor scale) is taken from the argument, and the problem is built only when a fresh field,
    the fallback or the result needs it. So a fresh maker either passes its field through or
    makes a new value, and which of the two follows from the call's signature alone.
    `match(args, kwargs)` says whether a call has this signature (see _matcher; None where it
    cannot be made)."""

    def __init__(self, defn: OpDef, validated: list, p: Any, args: tuple, kwargs: dict, path: tuple):
        where = {id(a): f"args[{i}]" for i, a in enumerate(args)}
        where.update({id(v): f"kwargs[{k!r}]" for k, v in kwargs.items()})
        names = [f.name for f in dataclasses.fields(defn.problem)]
        scope = {"Problem": defn.problem, "result": defn.result, "rebased": rebased}
        self.ok = True
        expr, fresh = {}, []
        for name, v in zip(names, validated):
            if isinstance(v, torch.Tensor) and not is_permanent(v):
                self.ok &= id(v) in where  # made from the arguments' values: not replayable
                expr[name] = where.get(id(v), "None")
            else:
                scope[f"c_{name}"] = v
                expr[name] = f"c_{name}"
        # (line, whether only a built problem needs it), in order
        lines = [(f"    p = Problem({', '.join(expr[n] for n in names)})", True)]
        for name, make in defn.fresh.items():
            made = getattr(p, name)
            if made is validated[names.index(name)]:
                continue
            if is_permanent(made):  # the same tensor on every call
                scope[f"k_{name}"] = made
                expr[name] = f"k_{name}"
            elif isinstance(make, Output):  # a new output of the first call's shape and dtype
                # empty_like of a one-element template expanded to the shape: fewer arguments to
                # parse than torch.empty(shape, dtype=, device=) (docs/design.md has the figures)
                scope.update({"empty_like": torch.empty_like, "contiguous": torch.contiguous_format,
                              f"like_{name}": torch.empty((), dtype=made.dtype, device=made.device).expand(made.shape)})
                lines.append((f"    new_{name} = empty_like(like_{name}, memory_format=contiguous)", False))
                expr[name] = f"new_{name}"
            else:
                scope[f"fresh_{name}"] = make
                lines.append((f"    p.{name} = fresh_{name}(p)", False))
                expr[name] = f"p.{name}"
                fresh.append(name)
                continue
            lines.append((f"    p.{name} = {expr[name]}", True))
        needs_p = bool(fresh)
        if path[0] == "fallback":
            scope["fallback"] = path[1]
            lines.append(("    fallback(p)", False))
            needs_p = True
        else:
            lines += [(line, False) for line in self._launch_lines(path, expr, scope)]

        def field_of(t):  # the expression of the field that holds tensor t, else None
            return next((expr[n] for n in names if isinstance(t, torch.Tensor) and getattr(p, n) is t), None)

        out = defn.result(p)
        if out is None:
            ret = "None"
        elif isinstance(out, tuple):  # a tuple of fields: returned as it is built
            parts = [field_of(t) for t in out]
            ret = None if None in parts else f"({', '.join(parts)},)"
        else:
            ret = field_of(out)
        if ret is None:
            ret, needs_p = "result(p)", True
        lines = [line for line, only_p in lines if needs_p or not only_p]
        code = "\n".join(["def call(args, kwargs):"] + lines + [f"    return {ret}"])
        exec(code, scope)  # noqa: S102 -- our own field names only
        self.call = scope["call"]
        self.code = code
        self.match = _matcher(args, kwargs) if self.ok else None

    @staticmethod
    def _launch_lines(path: tuple, expr: dict, scope: dict) -> list:
        """The lines that re-bind and launch the replays: each tensor's address read once, the
        stream once, the launcher's C function called directly where the replay allows it."""
        _, replays, scratch = path
        as_address = any(r.as_address for r in replays)
        lines = []
        if any(r.c_launch for r in replays) or (scratch.views and as_address):
            scope["get_stream"], scope["get_device"] = stream_getters()
            lines.append("    stream = get_stream(get_device())")
        if scratch.views:
            scope["scratch_of"] = scratch.addresses if as_address else scratch.make
            lines.append(f"    keep, scratch = scratch_of({'stream' if as_address else ''})")
        addresses: dict = {}
        for r, replay in enumerate(replays):
            values = []
            for i, (kind, *what) in enumerate(replay.sources):
                if kind == "const":
                    scope[f"k{r}_{i}"] = what[0]
                    values.append(f"k{r}_{i}")
                elif kind == "field" and replay.as_address:
                    if expr[what[0]] not in addresses:
                        addresses[expr[what[0]]] = f"a{len(addresses)}"
                        lines.append(f"    a{len(addresses) - 1} = {expr[what[0]]}.data_ptr()")
                    values.append(addresses[expr[what[0]]])
                elif kind == "field":
                    values.append(expr[what[0]])
                elif kind == "scratch":
                    values.append(f"scratch[{what[0]}]")
                else:  # a host tensor descriptor over a field
                    scope[f"d{r}_{i}"] = what[1]
                    values.append(f"rebased(d{r}_{i}, {expr[what[0]]})")
            if replay.c_launch:
                fn, after = replay.c_launch
                scope[f"launch{r}"] = fn
                head = list(map(repr, replay.grid)) + ["stream"]
                for j, v in enumerate(after):
                    scope[f"h{r}_{j}"] = v
                    head.append(f"h{r}_{j}")
                lines.append(f"    launch{r}({', '.join(head + values)})")
            else:
                scope[f"run{r}"] = replay.runner
                lines.append(f"    run{r}({', '.join(values)})")
        return lines


class Runner:
    """The public callable of one op (see the module docstring)."""

    def __init__(self, defn: OpDef):
        self.defn = defn
        self.plans: dict = {}
        self.last = None  # the plan of the last call, tried first through its `match`
        self.generation = autotune.generation
        self.op_field_names = [f.name for f in op_fields(defn.problem)]
        self.custom_op = self._make_custom_op()
        functools.update_wrapper(self, defn.validate)

    def _make_custom_op(self):
        defn = self.defn
        hints = typing.get_type_hints(defn.problem)
        names = self.op_field_names
        params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=hints[n])
                  for n in names]

        def impl(*values):
            self._execute(defn.problem(**dict(zip(names, values))))

        impl.__signature__ = inspect.Signature(params, return_annotation=None)
        op = torch.library.custom_op(f"ascend_kernels::{defn.name}", mutates_args=defn.outputs)(impl)
        op.register_fake(lambda *values: None)
        return op

    def _execute(self, p: Any) -> Optional[tuple]:
        """Decide and run; returns how to run the same path for a problem of the same signature:
        ("fallback", fn), ("triton", replays, scratch), or None where it cannot be replayed."""
        defn = self.defn
        decision = dispatch.decide(defn, p, _FORCED.get(defn.name))
        if decision.path == "fallback":
            fallback = defn.fallbacks[decision.fallback]
            fallback(p)
            return "fallback", fallback
        fields = tuple(f.name for f in dataclasses.fields(defn.problem))
        scratch = Scratch()
        replays = [Replay(launch, p, fields, launch(), scratch)
                   for launch in defn.launches(p, dict(decision.config), decision.backend)]
        return ("triton", replays, scratch) if all(r.ok for r in replays) else None

    def __call__(self, *args, **kwargs):
        defn = self.defn
        if torch.compiler.is_compiling():
            p = defn.prepare(*args, **kwargs)
            self.custom_op(*[getattr(p, n) for n in self.op_field_names])
            return defn.result(p)
        plan = self.last
        if plan is not None and plan.match(args, kwargs) and self.generation == autotune.generation:
            return plan.call(args, kwargs)
        try:
            key = (tuple(map(_signature, args)),
                   tuple([(k, _signature(v)) for k, v in kwargs.items()]) if kwargs else (),
                   _switches())
            plan = self.plans.get(key) if self.generation == autotune.generation else None
        except TypeError:  # an unhashable argument: validation will name it
            key = plan = None
        if plan is not None:
            self.last = plan if plan.match is not None else None
            return plan.call(args, kwargs)
        return self._first_call(key, args, kwargs)

    def _first_call(self, key, args: tuple, kwargs: dict):
        defn = self.defn
        p = defn.validate(*args, **kwargs)
        validated = [getattr(p, f.name) for f in dataclasses.fields(defn.problem)]
        defn.make_fresh(p)
        if _environ_get(CHECK_BOUNDS_ENV) == "1" and defn.check_values is not None:
            defn.check_values(p)
            key = None
        path = self._execute(p)
        if key is not None and path is not None:
            plan = _Plan(defn, validated, p, args, kwargs, path)
            if plan.ok:
                if self.generation != autotune.generation:
                    self.plans.clear()
                    self.generation = autotune.generation
                self.plans[key] = plan
                self.last = plan if plan.match is not None else None
        return defn.result(p)


def _tuning_features(tuning_key):
    def features(p) -> dict:
        fixed, data_dependent = tuning_key(p)
        return {**fixed, **data_dependent}
    return features


def define(*, problem: type, kernel_module, capability, launches, fallbacks, tuning_key, result,
           features=None, outputs=(), fresh=None, check_values=None):
    """Decorator for an op's validation function: registers the op and returns its public
    callable (same name, signature and docstring). `features` defaults to the tuning key."""
    def wrap(validate):
        nonlocal features
        features = features or _tuning_features(tuning_key)
        for name, make in (fresh or {}).items():
            if isinstance(make, Output):
                make.name = name
        defn = OpDef(validate.__name__, validate, problem, kernel_module, capability, launches,
                     fallbacks, tuning_key, features, result, tuple(outputs),
                     dict(fresh or {}), check_values)
        if defn.name in _REGISTRY:
            raise ValueError(f"op {defn.name!r} is defined twice")
        _REGISTRY[defn.name] = defn
        _RUNNERS[defn.name] = Runner(defn)
        return _RUNNERS[defn.name]
    return wrap
