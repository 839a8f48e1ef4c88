"""triton-ascend's adapter: finding it, and lowering one kernel through the ttir and ttadapter
stages (run in a child process, see run.py)."""
from __future__ import annotations

import importlib.util
import inspect
import os
import re
import types
from pathlib import Path
from typing import Optional

from .core import TARGET, pyfn


def adapter_path() -> Optional[Path]:
    """triton-ascend's triton-adapter-opt, found without importing triton."""
    spec = importlib.util.find_spec("triton")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        p = Path(base) / "backends" / "ascend" / "triton-adapter-opt"
        if p.is_file():
            return p
    return None


def adapter_available() -> tuple:
    """(ok, reason): can this host run the check?"""
    p = adapter_path()
    if p is None:
        return False, ("triton-ascend's triton-adapter-opt is not installed (this triton is not "
                       "triton-ascend)")
    if not os.access(p, os.X_OK):
        return False, f"{p} is not executable"
    return True, f"triton-adapter-opt at {p}"


def triton_ascend_version() -> str:
    try:
        from importlib.metadata import version
        return version("triton-ascend")
    except Exception:  # noqa: BLE001
        return "?"


def toolchain_id() -> str:
    p = adapter_path()
    stat = p.stat() if p else None
    return (f"triton-ascend-{triton_ascend_version()}:{stat.st_size if stat else 0}:"
            f"{int(stat.st_mtime) if stat else 0}")


def is_jit_like(obj) -> bool:
    return callable(obj) and hasattr(obj, "fn") and inspect.isfunction(getattr(obj, "fn", None))


def one_line(exc: BaseException) -> str:
    """The error of a failed case in one line: the adapter's first `error:` diagnostic, or for a
    frontend CompilationError the innermost error plus where in the kernel it points."""
    stderr = getattr(exc, "stderr", None)
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    if stderr:
        errs = [ln for ln in stderr.splitlines() if "error" in ln.lower()]
        text = (errs or [ln for ln in stderr.splitlines() if ln.strip()] or [""])[0].strip()
        text = re.sub(r"^\S*?:\d+:\d+:\s*", "", text)  # drop file:line:col
        text = re.sub(r"^loc\([^)]*\):\s*", "", text)
        return f"{type(exc).__name__}: {text}"[:240]
    chain, e = [], exc
    while e is not None and len(chain) < 16:
        chain.append(e)
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    where = ""
    for e in chain:  # the outermost frame in the kernel the user wrote
        node, src = getattr(e, "node", None), getattr(e, "src", None)
        if getattr(node, "lineno", None) and isinstance(src, str):
            lines = src.split("\n")
            code = lines[node.lineno - 1].strip() if node.lineno <= len(lines) else ""
            where = f" (kernel line {node.lineno}: {code})"
            break
    leaf = chain[-1]
    msg = getattr(leaf, "error_message", None)
    if msg is None:
        msg = str(leaf) if not hasattr(leaf, "node") else ""
    msg = str(msg).strip()
    m = re.match(r"^(\w+)\((['\"])(.*)\2\)$", msg, re.DOTALL)  # "TypeError('...')"
    name = type(leaf).__name__
    if m:
        name, msg = m.group(1), m.group(3)
    first = next((ln.strip() for ln in msg.splitlines() if ln.strip()), "")
    return f"{name}: {first}{where}".replace("\\n", " ")[:240]


def _as_jit(kernel):
    """A JITFunction for `kernel`; rebuilds InterpretedFunctions (and the jit helpers they call)
    as JITFunctions over a copy of their module globals."""
    from triton.runtime.jit import JITFunction
    if isinstance(kernel, JITFunction):
        return kernel
    memo: dict = {}

    def rebuild(fn):
        if fn in memo:
            return memo[fn]
        g = dict(fn.__globals__)
        new = types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)
        new.__qualname__, new.__module__, new.__doc__ = fn.__qualname__, fn.__module__, fn.__doc__
        jf = JITFunction(new)
        memo[fn] = jf
        for name, obj in list(g.items()):
            if is_jit_like(obj) and not isinstance(obj, JITFunction):
                g[name] = rebuild(obj.fn)
        return jf

    return rebuild(pyfn(kernel))


def compile_case(kernel, signature: dict, constexprs: dict, options: dict) -> tuple:
    """ttir + ttadapter stages for Ascend910B3: (TTIR text, the adapter's Linalg/HIVM text)."""
    from triton._C.libtriton import ir
    from triton.backends.ascend.compiler import AscendBackend
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import ASTSource

    fn = _as_jit(kernel)
    target = GPUTarget(*TARGET)
    backend = AscendBackend(target)
    opts = backend.parse_options(dict(options or {}))
    sig = {k: v for k, v in signature.items() if v != "constexpr" and k not in constexprs}
    src = ASTSource(fn, sig, dict(constexprs))
    stages: dict = {}
    backend.add_stages(stages, opts)
    context = ir.context()
    ir.load_dialects(context)
    backend.load_dialects(context)
    module = src.make_ir(opts, backend.get_codegen_implementation(), backend.get_module_map(),
                         context)
    metadata = {"hash": src.hash(), "target": target, **opts.__dict__}
    module = stages["ttir"](module, metadata)
    ttir = str(module)
    return ttir, stages["ttadapter"](module, metadata)
