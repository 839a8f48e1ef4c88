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
from .launch import DIRECT_ENV, Replay, Scratch

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


class _Plan:
    """What a call signature's first call found out, to replay on later calls: `problem(args,
    kwargs)` rebuilds the problem from the new call's arguments (a function generated once per
    plan: one call, no per-field branching), `run(problem)` replays the path."""

    def __init__(self, defn: OpDef, validated: list, args: tuple, kwargs: dict, run: Callable):
        ids = {id(a): f"args[{i}]" for i, a in enumerate(args)}
        ids.update({id(v): f"kwargs[{k!r}]" for k, v in kwargs.items()})
        names = [f.name for f in dataclasses.fields(defn.problem)]
        scope = {"Problem": defn.problem}
        values = []
        self.ok = True
        for name, v in zip(names, validated):
            if isinstance(v, torch.Tensor):
                self.ok &= id(v) in ids  # made from the arguments' values: not replayable
                values.append(ids.get(id(v), "None"))
            else:
                scope[f"c_{name}"] = v
                values.append(f"c_{name}")
        lines = ["def problem(args, kwargs):", f"    p = Problem({', '.join(values)})"]
        for name, make in defn.fresh.items():
            scope[f"fresh_{name}"] = make
            lines.append(f"    p.{name} = fresh_{name}(p)")
        exec("\n".join(lines + ["    return p"]), scope)  # noqa: S102 -- our own field names only
        self.problem = scope["problem"]
        self.run = run


class Runner:
    """The public callable of one op (see the module docstring)."""

    def __init__(self, defn: OpDef):
        self.defn = defn
        self.plans: dict = {}
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

    def _execute(self, p: Any) -> Callable:
        """Decide and run; returns a function that runs the same path for a problem of the same
        signature (the replay)."""
        defn = self.defn
        decision = dispatch.decide(defn, p, _FORCED.get(defn.name))
        if decision.path == "fallback":
            fallback = defn.fallbacks[decision.fallback]
            fallback(p)
            return fallback
        fields = tuple(f.name for f in dataclasses.fields(defn.problem))
        scratch = Scratch()
        replays = [Replay(launch, p, fields, launch(), scratch)
                   for launch in defn.launches(p, dict(decision.config), decision.backend)]
        if not all(r.ok for r in replays):
            return None

        def replay(q):
            made = scratch.make()
            for r in replays:
                r(q, made)
        return replay if scratch.views or len(replays) != 1 else functools.partial(replays[0], scratch=[])

    def __call__(self, *args, **kwargs):
        defn = self.defn
        if torch.compiler.is_compiling():
            p = defn.prepare(*args, **kwargs)
            self.custom_op(*[getattr(p, n) for n in self.op_field_names])
            return defn.result(p)
        try:
            key = (tuple(map(_signature, args)),
                   tuple([(k, _signature(v)) for k, v in kwargs.items()]) if kwargs else (),
                   _switches())
            plan = self.plans.get(key) if self.generation == autotune.generation else None
        except TypeError:  # an unhashable argument: validation will name it
            key = plan = None
        if plan is not None:
            p = plan.problem(args, kwargs)
            plan.run(p)
            return defn.result(p)
        return self._first_call(key, args, kwargs)

    def _first_call(self, key, args: tuple, kwargs: dict):
        defn = self.defn
        p = defn.validate(*args, **kwargs)
        validated = [getattr(p, f.name) for f in dataclasses.fields(defn.problem)]
        defn.make_fresh(p)
        if _environ_get(CHECK_BOUNDS_ENV) == "1" and defn.check_values is not None:
            defn.check_values(p)
            key = None
        run = self._execute(p)
        if key is not None and run is not None:
            plan = _Plan(defn, validated, args, kwargs, run)
            if plan.ok:
                if self.generation != autotune.generation:
                    self.plans.clear()
                    self.generation = autotune.generation
                self.plans[key] = plan
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
        defn = OpDef(validate.__name__, validate, problem, kernel_module, capability, launches,
                     fallbacks, tuning_key, features, result, tuple(outputs),
                     dict(fresh or {}), check_values)
        if defn.name in _REGISTRY:
            raise ValueError(f"op {defn.name!r} is defined twice")
        _REGISTRY[defn.name] = defn
        _RUNNERS[defn.name] = Runner(defn)
        return _RUNNERS[defn.name]
    return wrap
