"""The source of an op's kernels: every @triton.jit function a kernel reaches, hashed to tell
tuning results and compile-check verdicts made for another version of the code."""
from __future__ import annotations

import hashlib
import inspect
import json
import types


def _pyfn(kernel):
    """The Python function under a JITFunction / InterpretedFunction / plain function."""
    return getattr(kernel, "fn", kernel)


def is_jit(obj) -> bool:
    return callable(obj) and inspect.isfunction(getattr(obj, "fn", None))


def jit_closure(kernel) -> list:
    """The kernel's Python function and every jit helper it calls (by global name, or as an
    attribute of an imported module), recursively."""
    seen, order, todo = set(), [], [_pyfn(kernel)]
    while todo:
        fn = todo.pop()
        if fn in seen:
            continue
        seen.add(fn)
        order.append(fn)
        names = set(fn.__code__.co_names)
        for c in fn.__code__.co_consts:
            if isinstance(c, types.CodeType):
                names |= set(c.co_names)
        for name in sorted(names):
            obj = fn.__globals__.get(name)
            if is_jit(obj):
                todo.append(obj.fn)
            elif isinstance(obj, types.ModuleType) and not obj.__name__.startswith("triton"):
                todo += [getattr(obj, a).fn for a in sorted(names) if is_jit(getattr(obj, a, None))]
    return order


def module_kernels(module) -> list:
    """The @triton.jit functions defined in a kernel module, in source order."""
    return [obj for obj in vars(module).values()
            if is_jit(obj) and _pyfn(obj).__module__ == module.__name__]


def source_hash(kernels, extra=None) -> str:
    """Hash of the kernels' jit closures (and any JSON-able `extra`, e.g. a search space)."""
    fns = {fn for k in kernels for fn in jit_closure(k)}
    h = hashlib.sha256()
    for fn in sorted(fns, key=lambda f: (f.__module__, f.__qualname__)):
        h.update(f"{fn.__module__}.{fn.__qualname__}\n".encode())
        try:
            h.update(inspect.getsource(fn).encode())
        except (OSError, TypeError):
            h.update(fn.__code__.co_code)
    if extra is not None:
        h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]
