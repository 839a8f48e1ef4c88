"""Ascend compile check: lower every kernel x Ascend config x suite shape through triton-ascend's
adapter (``triton-adapter-opt``) on any host -- no CANN, no NPU -- and read the lowered IR.

How the stages are driven (triton-ascend 3.2.0, read from its ``backends/ascend/compiler.py``):

* ``AscendBackend(GPUTarget("npu", "Ascend910B3", 0))`` and ``backend.parse_options(opts)`` build
  ``NPUOptions`` without touching CANN: importing ``triton.backends.ascend.compiler`` only
  imports the driver module, it does not load ``libascendcl`` (that happens on first use of
  ``driver.active``, which we never call since the target is given explicitly).
* ``ASTSource(fn, signature, constants)``: in 3.2 ``signature`` maps the *non-constexpr* argument
  names to type strings ("*fp16", "i32", "i64", "fp32"); ``constants`` maps constexpr names to
  values. ``src.make_ir(options, codegen_fns, module_map, context)`` runs the frontend.
* ``backend.add_stages(stages, options)`` gives ``stages["ttir"]`` (inliner/combine/canonicalize/
  licm/loop-unroll in process) and ``stages["ttadapter"]``, which writes the TTIR to a temp file
  and runs ``triton-adapter-opt --triton-to-annotation --triton-to-unstructure --triton-to-hivm
  ... --triton-to-linalg=named-ops=True`` as a subprocess (raises ``CalledProcessError`` with the
  MLIR diagnostics on stderr). ``stages["npubin"]`` (bishengir-compile) needs CANN: not run.
  Each stage takes ``(module, metadata)``; metadata must hold the ``NPUOptions`` fields.
  A case costs ~20-100 ms; the first one in a process pays ~2-4 s of imports.

What the lowered (linalg + memref) IR looks like:

* structured load: ``memref.reinterpret_cast %argN to offset: [...], sizes: [16, 128], strides:
  [...]`` + ``%alloc = memref.alloc() : memref<16x128xf16>`` + ``memref.copy %rc, %alloc`` (or on
  subviews for masked tails) + ``bufferization.to_tensor %alloc``. Structured store:
  ``bufferization.materialize_in_destination %t in writable %reinterpret_cast``. Atomics:
  ``linalg.generic ... attrs = {GenericAtomicRMW = "fadd", ...}`` on the reinterpret_cast.
  A scalar ``tl.load(ptr + i)`` is ``reinterpret_cast sizes: [1]`` + ``memref.load`` (counted
  apart as ``scalar``: one element by design, not scalarised).
* scalarised (gather/scatter through a pointer tensor built from loaded values):
  ``scf.for %i = 0 to N step 1 { %e = tensor.extract %idx[%i] {DiscreteMemAccess};
  reinterpret_cast ... sizes: [1] (or [1, 128] for a row gather); memref.load / memref.copy into a
  subview / materialize_in_destination } {ExtractedLoadOrStore}`` -- one DMA per element or row.
  The ``{ExtractedLoadOrStore}`` attribute sits on the loop's closing brace.
* mix mode: ``func.func`` attributes ``mix_mode = "aiv"`` (vector only), ``"aic"`` (cube only),
  ``"mix"`` (tl.dot + vector work), plus ``parallel_mode = "simd"``.
* the adapter rarely fails outright: ops it cannot convert are passed through (e.g.
  ``tl.inline_asm_elementwise`` stays ``llvm.inline_asm``, ``tl.histogram`` becomes
  ``hfusion.histogram``). A ``tt.*`` op or ``llvm.inline_asm`` left in the output is reported as
  a lowering failure ("unconverted"): bishengir-compile would reject it.
  Non-power-of-two ``tl.arange`` lowers fine on Ascend.
* on-chip buffers: ``memref.alloc()`` (DMA staging buffers of loads), ``tensor.empty()`` /
  ``bufferization.alloc_tensor()`` (outputs of fills, reductions, elementwise chains), all with
  static shapes. The UB figure below is their sum -- an ESTIMATE: bishengir's memory planner
  reuses dead buffers (so it may be lower) and materialises elementwise temporaries (so it may be
  higher); the exact number needs CANN (``bishengir-compile --enable-print-memory-allocated-size``).
  With multibuffer (the NPUOptions default) the staging buffers allocated inside a loop are
  double-buffered: that estimate adds them a second time.

Hung lowerings cannot stall CI: cases run in a child process (``python -c "import triton; ..."``
with ``TRITON_INTERPRET`` unset, so the kernels are real JITFunctions even on a CPU-only host where
``ascend_kernels`` turns the interpreter on); the parent kills the child's process group when a
case passes its timeout, records the case as timed out and restarts a child for the rest.

Results are cached in ``$ASCEND_KERNELS_CACHE_DIR/ascend_check.json`` (default
``~/.cache/ascend_kernels``), keyed by a hash of the kernel source (with the jit helpers it calls),
the signature, constexprs, options, triton version and the adapter binary. Per op the file also
keeps which Ascend configs passed; ``passing_configs`` (the launcher's search-space filter) reads
only that.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Any, Iterable, Optional

UB_BYTES = 192 * 1024  # Ascend 910B (A2/A3) unified buffer per AI vector core
TARGET = ("npu", "Ascend910B3", 0)
CACHE_ENV = "ASCEND_KERNELS_CACHE_DIR"
CACHE_NAME = "ascend_check.json"
CACHE_FORMAT = 1
DEFAULT_TIMEOUT_S = 60.0
STARTUP_TIMEOUT_S = 120.0  # imports of torch + triton + the op modules in the child
REPORT_PATH = Path("bench/results/ascend_check.md")
_MARK = "@@ASCEND_CHECK@@"


# --------------------------------------------------------------------------- data

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
        return _pyfn(self.kernel).__name__


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
    scalarised_in_loop: int = 0    # accesses made per-element/row loops, inside a kernel loop
    scalarised_outside: int = 0    # ... outside any kernel loop
    scalarised_where: list = dataclasses.field(default_factory=list)  # short descriptions
    mix_mode: str = ""
    ub_bytes: int = 0              # estimate, see module docstring
    ub_bytes_multibuffer: int = 0  # estimate with loop staging buffers doubled
    fits: bool = False
    fits_multibuffer: bool = False
    multibuffer: bool = True       # the case's multibuffer option (NPUOptions' default: on)
    note: str = ""                 # the case's note: why a scalarised access is there
    dynamic_buffers: int = 0       # buffers whose size is not static (not counted in ub_bytes)
    seconds: float = 0.0
    cached: bool = False
    key: str = ""

    @property
    def passed(self) -> bool:
        """The check's verdict: lowered, and the UB estimate fits as the case compiles: with its
        loop buffers doubled when multibuffer is on (the Ascend default), else single."""
        return self.lowered and (self.fits_multibuffer if self.multibuffer else self.fits)

    @property
    def scalarised(self) -> int:
        return self.scalarised_in_loop + self.scalarised_outside

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CaseResult":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# --------------------------------------------------------------------------- environment

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


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ascend_kernels")


def cache_path() -> Path:
    return cache_dir() / CACHE_NAME


# --------------------------------------------------------------------------- hashing

def _pyfn(kernel):
    """The Python function under a JITFunction / InterpretedFunction / plain function."""
    return getattr(kernel, "fn", kernel)


def _is_jit_like(obj) -> bool:
    return callable(obj) and hasattr(obj, "fn") and inspect.isfunction(getattr(obj, "fn", None))


def _jit_closure(kernel) -> list:
    """The kernel's Python function and every jit helper it calls (by global name, or as
    an attribute of an imported module), recursively."""
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
        g = fn.__globals__
        for name in sorted(names):
            obj = g.get(name)
            if _is_jit_like(obj):
                todo.append(obj.fn)
            elif isinstance(obj, types.ModuleType) and not obj.__name__.startswith("triton"):
                for attr in sorted(names):
                    sub = getattr(obj, attr, None)
                    if _is_jit_like(sub):
                        todo.append(sub.fn)
    return order


def kernel_source_hash(kernel) -> str:
    h = hashlib.sha256()
    for fn in sorted(_jit_closure(kernel), key=lambda f: (f.__module__, f.__qualname__)):
        h.update(f"{fn.__module__}.{fn.__qualname__}\n".encode())
        try:
            h.update(inspect.getsource(fn).encode())
        except (OSError, TypeError):
            h.update(fn.__code__.co_code)
    return h.hexdigest()[:24]


def _toolchain_id() -> str:
    p = adapter_path()
    stat = p.stat() if p else None
    try:
        from importlib.metadata import version
        ver = version("triton-ascend")
    except Exception:
        ver = "?"
    return f"triton-ascend-{ver}:{stat.st_size if stat else 0}:{int(stat.st_mtime) if stat else 0}"


def config_key(config: dict) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def case_key(case: KernelCase) -> str:
    payload = json.dumps({
        "src": kernel_source_hash(case.kernel),
        "name": case.kernel_name,
        "sig": {k: v for k, v in case.signature.items() if v != "constexpr"},
        "const": {k: case.constexprs[k] for k in sorted(case.constexprs)},
        "opts": case.options,
        "tool": _toolchain_id(),
        "fmt": CACHE_FORMAT,
    }, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def op_source_hash(spec) -> str:
    h = hashlib.sha256()
    for k in getattr(spec, "kernels", ()) or ():
        h.update(kernel_source_hash(k).encode())
    return h.hexdigest()[:24]


# --------------------------------------------------------------------------- cache file

_cache_memo: dict = {}


def _read_cache(path: Optional[Path] = None) -> dict:
    path = path or cache_path()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return {"format": CACHE_FORMAT, "cases": {}, "ops": {}}
    memo = _cache_memo.get(str(path))
    if memo and memo[0] == mtime:
        return memo[1]
    try:
        data = json.loads(path.read_text())
        if data.get("format") != CACHE_FORMAT or not isinstance(data.get("cases"), dict):
            raise ValueError("foreign format")
        data.setdefault("ops", {})
    except Exception:
        data = {"format": CACHE_FORMAT, "cases": {}, "ops": {}}
    _cache_memo[str(path)] = (mtime, data)
    return data


def _write_cache(data: dict, path: Optional[Path] = None) -> None:
    path = path or cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ascend_check.", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True, default=str)
        os.replace(tmp, path)
        _cache_memo.pop(str(path), None)
    except OSError:
        pass  # a read-only home must not fail the check


def record_op_results(op: str, source: str, results: Iterable[CaseResult],
                      path: Optional[Path] = None) -> None:
    """Store, per config, whether every case of that config passed (what passing_configs reads)."""
    data = _read_cache(path)
    data = json.loads(json.dumps(data))  # private copy
    per_cfg: dict = {}
    for r in results:
        ck = config_key(r.config)
        ent = per_cfg.setdefault(ck, {"passed": True, "why": ""})
        if not r.passed and ent["passed"]:
            ent["passed"] = False
            ent["why"] = f"{r.kernel} {r.label}: " + (r.error or
                                                    f"UB estimate {r.ub_bytes} B > {UB_BYTES} B")
    data["ops"][op] = {"source": source, "configs": per_cfg}
    _write_cache(data, path)


# --------------------------------------------------------------------------- IR analysis

_DTYPE_BYTES = {"f16": 2, "bf16": 2, "f32": 4, "f64": 8, "i1": 1, "i8": 1, "i16": 2, "i32": 4,
                "i64": 8, "f8E4M3FN": 1, "f8E5M2": 1, "f8E4M3FNUZ": 1, "f8E5M2FNUZ": 1,
                "index": 8}
_SHAPED_RE = re.compile(r"(?:memref|tensor)<([^>]*)>")
_RC_SIZES_RE = re.compile(r"sizes:\s*\[([^\]]*)\]")


def _shaped_bytes(text: str) -> Optional[int]:
    """Bytes of the first memref<..>/tensor<..> type in text; None when a dim is dynamic."""
    m = _SHAPED_RE.search(text)
    if not m:
        return None
    body = m.group(1).split(",")[0].strip()
    parts = body.split("x")
    elem, dims = parts[-1], parts[:-1]
    if any(not d.isdigit() for d in dims):
        return None
    n = 1
    for d in dims:
        n *= int(d)
    return n * _DTYPE_BYTES.get(elem, 4)


class _Region:
    __slots__ = ("kind", "line", "close")

    def __init__(self, kind: str, line: int):
        self.kind, self.line, self.close = kind, line, ""

    @property
    def extracted(self) -> bool:  # a loop the adapter made to scalarise an access
        return "ExtractedLoadOrStore" in self.close

    @property
    def kernel_loop(self) -> bool:  # a loop of the kernel itself
        return self.kind in ("scf.for", "scf.while") and not self.extracted


def _op_name(s: str) -> str:
    s = s.lstrip("}").strip()
    if "=" in s.split("(")[0] and s.startswith("%"):
        s = s.split("=", 1)[1].strip()
    return s.split(" ", 1)[0] if s else ""


def analyse_linalg(text: str) -> dict:
    """Counts from the adapter's output, see the module docstring for the patterns."""
    lines = text.splitlines()
    stack: list = []
    where: list = []  # per line: tuple of enclosing regions
    rc_sizes: dict = {}  # %reinterpret_cast result -> its sizes (global memory views)
    alias: dict = {}  # %view -> the value it views (subview/cast/reshape of memrefs)
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("}"):
            if stack:
                stack.pop().close = s
        where.append(tuple(stack))
        if s.endswith("{"):
            stack.append(_Region(_op_name(s) if not s.startswith("}") else "else", i))
        m = re.match(r"(%[\w.]+)\s*=\s*memref\.reinterpret_cast", s)
        if m:
            sm = _RC_SIZES_RE.search(s)
            rc_sizes[m.group(1)] = [x.strip() for x in sm.group(1).split(",")] if sm else []
        m = re.match(r"(%[\w.]+)\s*=\s*memref\.(?:subview|cast|collapse_shape|expand_shape|"
                     r"reshape|transpose)\s+(%[\w.]+)", s)
        if m:
            alias[m.group(1)] = m.group(2)

    def root(name: Optional[str]) -> Optional[str]:
        seen = 0
        while name in alias and seen < 64:
            name, seen = alias[name], seen + 1
        return name

    def is_global(name: Optional[str]) -> bool:
        return root(name) in rc_sizes

    mix = re.search(r'mix_mode\s*=\s*"([^"]+)"', text)
    out = {"structured": 0, "scalar": 0, "scalarised_in_loop": 0, "scalarised_outside": 0,
           "scalarised_where": [], "mix_mode": mix.group(1) if mix else "?",
           "ub_bytes": 0, "ub_bytes_multibuffer": 0, "dynamic_buffers": 0,
           # ops the adapter passed through unconverted: bishengir-compile rejects them
           "unconverted": sorted(set(re.findall(
               r"^\s*(?:%[\w.:#]+(?:,\s*%[\w.:#]+)*\s*=\s*)?(tt\.\w+|ttg\.\w+|llvm\.inline_asm)\b",
               text, re.MULTILINE)))}

    def one_elem(name: Optional[str]) -> bool:
        sizes = rc_sizes.get(root(name) or "", None)
        return sizes is not None and all(x == "1" for x in sizes)

    for i, line in enumerate(lines):
        s = line.strip()
        regions = where[i]
        in_extracted = any(r.extracted for r in regions)
        in_loop = any(r.kernel_loop for r in regions)
        # --- buffers
        if re.search(r"=\s*(memref\.alloc\(|tensor\.empty\(|bufferization\.alloc_tensor\()", s):
            rhs = s.split("=", 1)[1]
            nbytes = _shaped_bytes(rhs.split(":", 1)[-1]) if ":" in rhs else None
            if nbytes is None:
                out["dynamic_buffers"] += 1
            else:
                out["ub_bytes"] += nbytes
                staged = "memref.alloc(" in s and in_loop
                out["ub_bytes_multibuffer"] += nbytes * (2 if staged else 1)
        # --- memory accesses (global memory is always reached through a reinterpret_cast)
        kind = None
        target = None
        if s.startswith("memref.copy "):
            src = s[len("memref.copy "):].split(",")[0].strip()
            if is_global(src):
                kind, target = "load", src
        elif "bufferization.materialize_in_destination" in s:
            m = re.search(r"in writable (%[\w.]+)", s)
            if m and is_global(m.group(1)):
                kind, target = "store", m.group(1)
        elif re.search(r"=\s*memref\.load %", s):
            m = re.search(r"memref\.load (%[\w.]+)", s)
            if m and is_global(m.group(1)):
                kind, target = "load", m.group(1)
        elif s.startswith("memref.store "):
            m = re.search(r"memref\.store [^,]+, (%[\w.]+)", s)
            if m and is_global(m.group(1)):
                kind, target = "store", m.group(1)
        elif "GenericAtomicRMW" in s or "hivm.hir.atomic" in s or "memref.atomic_rmw" in s:
            kind, target = "atomic", None
        if kind is None:
            continue
        if in_extracted:
            key = "scalarised_in_loop" if in_loop else "scalarised_outside"
            out[key] += 1
            grain = "element" if one_elem(target) else "row"
            out["scalarised_where"].append(
                f"{kind} per {grain} {'in' if in_loop else 'outside'} kernel loop "
                f"(ir line {i + 1})")
        elif one_elem(target):
            out["scalar"] += 1
        else:
            out["structured"] += 1
    return out


# --------------------------------------------------------------------------- one case (child)

def _one_line(exc: BaseException) -> str:
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
            if _is_jit_like(obj) and not isinstance(obj, JITFunction):
                g[name] = rebuild(obj.fn)
        return jf

    return rebuild(_pyfn(kernel))


def _compile_case(kernel, signature: dict, constexprs: dict, options: dict) -> str:
    """ttir + ttadapter stages for Ascend910B3; returns the adapter's MLIR text."""
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
    return stages["ttadapter"](module, metadata)


def _resolve(job: dict):
    fn = None
    try:
        mod = importlib.import_module(job["module"])
    except Exception:
        mod = None
    if mod is None or not hasattr(mod, job["qualname"].split(".")[0]):
        mod = sys.modules.get(f"_ascend_check_{abs(hash(job['file']))}")
        if mod is None:
            spec = importlib.util.spec_from_file_location(
                f"_ascend_check_{abs(hash(job['file']))}", job["file"])
            mod = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = mod
            spec.loader.exec_module(mod)
    fn = mod
    for part in job["qualname"].split("."):
        fn = getattr(fn, part)
    return fn


def run_job(job: dict) -> dict:
    t0 = time.perf_counter()
    res: dict = {"lowered": False, "error": ""}
    try:
        kernel = _resolve(job)
        text = _compile_case(kernel, job["signature"], job["constexprs"], job["options"])
        res["lowered"] = True
        try:
            res.update(analyse_linalg(text))
            if res.get("unconverted"):
                res["lowered"] = False
                res["error"] = ("the adapter left ops bishengir cannot compile: "
                                + ", ".join(res["unconverted"]))
        except Exception as exc:  # noqa: BLE001 -- a bug here must not read as a lowering failure
            res["error"] = "IR analysis failed: " + _one_line(exc)
        if job.get("dump"):
            Path(job["dump"]).write_text(text)
    except BaseException as exc:  # noqa: BLE001 -- every failure is a result
        res["error"] = _one_line(exc)
    res["seconds"] = round(time.perf_counter() - t0, 3)
    return res


def _worker() -> None:
    jobs = json.loads(sys.stdin.read())
    sys.path[:0] = [p for p in jobs.get("sys_path", []) if p not in sys.path]
    for job in jobs["jobs"]:
        res = run_job(job)
        sys.stdout.write(_MARK + json.dumps({"idx": job["idx"], **res}, default=str) + "\n")
        sys.stdout.flush()


# --------------------------------------------------------------------------- running cases

def _job_of(idx: int, case: KernelCase, dump: Optional[str] = None) -> dict:
    fn = _pyfn(case.kernel)
    return {"idx": idx, "module": fn.__module__, "qualname": fn.__qualname__,
            "file": fn.__code__.co_filename, "signature": case.signature,
            "constexprs": case.constexprs, "options": case.options, "dump": dump}


def _run_jobs(jobs: list, timeout: float, progress) -> dict:
    """Run jobs in child processes; {idx: result dict}. A case that passes `timeout` (or kills
    the child) is recorded as failed and the rest go to a fresh child."""
    results: dict = {}
    pending = list(jobs)
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] +
                                        [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # triton first: ascend_kernels (imported by the op modules) then leaves the interpreter off.
    # This file is loaded by path, so a broken package __init__ only fails the cases needing it.
    here = str(Path(__file__).resolve())
    code = ("import triton, importlib.util as u\n"
            f"s = u.spec_from_file_location('_ascend_check_worker', {here!r})\n"
            "import sys; m = u.module_from_spec(s); sys.modules[s.name] = m\n"
            "s.loader.exec_module(m); m._worker()\n")
    while pending:
        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, start_new_session=True)
        lines: "queue.Queue" = queue.Queue()
        errbuf: list = []

        def pump_out(stream=proc.stdout, sink=lines):
            for ln in stream:
                sink.put(ln)
            sink.put(None)

        def pump_err(stream=proc.stderr, sink=errbuf):
            for ln in stream:
                sink.append(ln)
                del sink[:-50]

        threading.Thread(target=pump_out, daemon=True).start()
        threading.Thread(target=pump_err, daemon=True).start()
        proc.stdin.write(json.dumps({"jobs": pending, "sys_path": sys.path}))
        proc.stdin.close()
        first = True
        while pending:
            deadline = time.monotonic() + timeout + (STARTUP_TIMEOUT_S if first else 0)
            got = None
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    ln = lines.get(timeout=left)
                except queue.Empty:
                    break
                if ln is None:  # child exited
                    break
                if ln.startswith(_MARK):
                    got = json.loads(ln[len(_MARK):])
                    break
            if got is None:
                job = pending.pop(0)
                alive = proc.poll() is None
                if alive:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except OSError:
                        pass
                proc.wait()
                tail = "".join(e for e in errbuf if e)[-300:].strip().splitlines()
                why = (f"timed out after {timeout:g} s" if alive else
                       f"check process died (rc {proc.returncode}): {tail[-1] if tail else ''}")
                results[job["idx"]] = {"lowered": False, "error": why[:240], "seconds": timeout}
                if progress:
                    progress(job, results[job["idx"]])
                break  # restart a child for the rest
            first = False
            job = pending.pop(0)
            assert job["idx"] == got["idx"], (job["idx"], got["idx"])
            results[job["idx"]] = got
            if progress:
                progress(job, got)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
    return results


def _finish(case: KernelCase, res: dict, key: str, cached: bool) -> CaseResult:
    r = CaseResult(op=case.op, kernel=case.kernel_name, label=case.label, config=case.config,
                   lowered=bool(res.get("lowered")), key=key, cached=cached,
                   multibuffer=bool(case.options.get("multibuffer", True)), note=case.note)
    for f in ("error", "structured", "scalar", "scalarised_in_loop", "scalarised_outside",
              "scalarised_where", "mix_mode", "ub_bytes", "ub_bytes_multibuffer",
              "dynamic_buffers", "seconds"):
        if f in res:
            setattr(r, f, res[f])
    r.fits = r.lowered and r.ub_bytes <= UB_BYTES
    r.fits_multibuffer = r.lowered and r.ub_bytes_multibuffer <= UB_BYTES
    return r


def check_cases(cases: list, timeout: float = DEFAULT_TIMEOUT_S, use_cache: bool = True,
                progress: bool = False) -> list:
    """Check many cases (one child process for all misses); cached results are reused."""
    ok, why = adapter_available()
    keys = [case_key(c) for c in cases]
    data = _read_cache() if use_cache else {"cases": {}}
    out: list = [None] * len(cases)
    jobs, todo = [], {}
    for i, (case, key) in enumerate(zip(cases, keys)):
        hit = data["cases"].get(key)
        if hit is not None:
            out[i] = _finish(case, hit, key, cached=True)
        elif not ok:
            out[i] = _finish(case, {"lowered": False, "error": why}, key, cached=False)
        elif key in todo:  # same kernel+constexprs from another shape/config
            todo[key].append(i)
        else:
            todo[key] = [i]
            jobs.append(_job_of(i, case))
    if jobs:
        n = len(jobs)
        done = [0]

        def report(job, res):
            done[0] += 1
            if progress:
                c = cases[job["idx"]]
                state = "ok" if res.get("lowered") else "FAIL"
                print(f"[{done[0]}/{n}] {c.op} {c.kernel_name} {c.label} "
                      f"{config_key(c.config)}: {state} ({res.get('seconds', 0):.2f} s)",
                      file=sys.stderr, flush=True)

        got = _run_jobs(jobs, timeout, report)
        fresh = _read_cache() if use_cache else {"format": CACHE_FORMAT, "cases": {}, "ops": {}}
        fresh = json.loads(json.dumps(fresh))
        for key, idxs in todo.items():
            res = got[idxs[0]]
            for i in idxs:
                out[i] = _finish(cases[i], res, key, cached=False)
            if not str(res.get("error", "")).startswith(("timed out", "check process died")):
                fresh["cases"][key] = res
        if use_cache:
            _write_cache(fresh)
    return out


def check_case(case: KernelCase, timeout: float = DEFAULT_TIMEOUT_S,
               use_cache: bool = True) -> CaseResult:
    return check_cases([case], timeout=timeout, use_cache=use_cache)[0]


def lowered_ir(case: KernelCase, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """The adapter's output for one case (debugging aid; not cached)."""
    with tempfile.TemporaryDirectory() as tmp:
        dump = os.path.join(tmp, "kernel.ttadapter.mlir")
        res = _run_jobs([_job_of(0, case, dump)], timeout, None)[0]
        if not res.get("lowered"):
            raise RuntimeError(res.get("error"))
        return Path(dump).read_text()


# --------------------------------------------------------------------------- ops and suites

def _load_registry():
    import ascend_kernels  # noqa: F401  (registers the ops that exist)
    for sub in ("ascend_kernels.ops",):
        try:
            importlib.import_module(sub)
        except ImportError:
            pass
    from ascend_kernels.launcher import dispatch
    return dispatch


def suite_shapes(op: str, suite: Optional[str]) -> list:
    """Shapes (dicts) of `op` in bench suite `suite` (default: every suite that has the op)."""
    try:
        from bench import suites as _suites  # the bench runner's loader, when it exists
        loader = getattr(_suites, "shapes_for", None) or getattr(_suites, "load_shapes", None)
        if loader is not None:
            return list(loader(op, suite))
    except ImportError:
        pass
    import yaml
    root = Path(__file__).resolve().parent.parent / "bench" / "suites"
    files = [root / f"{suite}.yaml"] if suite else sorted(root.glob("*.yaml"))
    shapes: list = []
    for f in files:
        if not f.is_file():
            raise ValueError(f"no bench suite {f.stem!r} under {root}")
        doc = yaml.safe_load(f.read_text()) or {}
        ops = doc.get("ops", doc) if isinstance(doc, dict) else {}
        entry = ops.get(op) if isinstance(ops, dict) else None
        if isinstance(entry, dict):
            entry = entry.get("shapes", [])
        for s in entry or []:
            if isinstance(s, dict) and s not in shapes:
                shapes.append(s)
    return shapes


def _shape_label(shape: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in shape.items() if not isinstance(v, (list, dict)))


def cases_for_op(spec, suite: Optional[str] = None) -> tuple:
    """(cases, errors): the KernelCases of op `spec` for every Ascend config x suite shape;
    errors are CaseResults for (shape, config) pairs whose ascend_cases raised."""
    cases, errors = [], []
    configs = list((spec.configs or {}).get("npu", []))
    for shape in suite_shapes(spec.name, suite):
        for config in configs:
            try:
                made = list(spec.ascend_cases(shape, config))
            except Exception as exc:  # noqa: BLE001
                errors.append(CaseResult(op=spec.name, kernel="?", label=_shape_label(shape),
                                         config=config, lowered=False,
                                         error="ascend_cases: " + _one_line(exc)))
                continue
            for c in made:
                c.op = c.op or spec.name
                c.config = c.config or config
                c.label = c.label or _shape_label(shape)
                if not c.options:
                    c.options = {k: v for k, v in config.items()
                                 if not k[:1].isupper() and not k.startswith("grid_")
                                 and k not in ("num_warps", "num_stages")}
                cases.append(c)
    return cases, errors


def check_ops(op_names: Optional[list] = None, suite: Optional[str] = None, progress: bool = True,
              timeout: float = DEFAULT_TIMEOUT_S, use_cache: bool = True) -> list:
    """Check every op (or `op_names`) x its Ascend configs x the suite's shapes; records per
    config pass/fail for `passing_configs`."""
    dispatch = _load_registry()
    names = op_names or dispatch.op_names()
    results: list = []
    for name in names:
        spec = dispatch.get_spec(name)
        if spec.ascend_cases is None:
            if progress:
                print(f"{name}: no ascend_cases, skipped", file=sys.stderr)
            continue
        cases, errors = cases_for_op(spec, suite)
        if not cases and not errors:
            print(f"ascend-kernels check: {name}: no suite shapes"
                  f"{f' in suite {suite!r}' if suite else ''}, nothing checked", file=sys.stderr)
        got = check_cases(cases, timeout=timeout, use_cache=use_cache, progress=progress)
        op_results = errors + got
        results += op_results
        if use_cache and op_results:
            record_op_results(name, op_source_hash(spec), op_results)
    return results


# --------------------------------------------------------------------------- launcher hook

_source_memo: dict = {}


def passing_configs(op_name: str, configs: list) -> list:
    """The configs of `op_name`'s Ascend search space minus those whose cached check failed.

    Configs never checked are kept; entries recorded for another version of the op's kernels are
    ignored. Reads the cache file once per process (again only when it changes); never raises.
    When every config failed, the list is returned unchanged (the launcher needs one).
    """
    try:
        entry = _read_cache()["ops"].get(op_name)
        if not entry:
            return list(configs)
        if op_name not in _source_memo:
            from ascend_kernels.launcher import dispatch
            _source_memo[op_name] = op_source_hash(dispatch.get_spec(op_name))
        if entry.get("source") != _source_memo[op_name]:
            return list(configs)
        verdicts = entry.get("configs", {})
        kept = [c for c in configs if verdicts.get(config_key(c), {}).get("passed", True)]
        return kept or list(configs)
    except Exception:  # noqa: BLE001 -- a filter on the hot path must never break a call
        return list(configs)


def prune(configs: list, results: list) -> list:
    """configs minus those with a failing result among `results` (no cache involved)."""
    bad = {config_key(r.config) for r in results if not r.passed}
    return [c for c in configs if config_key(c) not in bad]


# --------------------------------------------------------------------------- report

def _kb(n: int) -> str:
    return f"{n / 1024:.1f}"


def render_table(results: list) -> str:
    head = ("| op | kernel | shape | config | lowered | structured | scalar | scalarised "
            "(in loop / outside) | mix | UB est. KB | fits 192 KB (no MB / MB) | s | error |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for r in results:
        cfg = ", ".join(f"{k}={v}" for k, v in r.config.items())
        fits = (f"{'yes' if r.fits else 'NO'} / {'yes' if r.fits_multibuffer else 'no'}"
                if r.lowered else "-")
        ub = f"{_kb(r.ub_bytes)} / {_kb(r.ub_bytes_multibuffer)}" if r.lowered else "-"
        err = r.error.replace("|", "\\|")
        rows.append(f"| {r.op} | {r.kernel} | {r.label} | {cfg} | "
                    f"{'yes' if r.lowered else 'NO'} | {r.structured} | {r.scalar} | "
                    f"{r.scalarised_in_loop} / {r.scalarised_outside} | {r.mix_mode or '-'} | "
                    f"{ub} | {fits} | {r.seconds:.2f}{' (cached)' if r.cached else ''} | {err} |")
    return head + "\n".join(rows) + "\n"


def render_report(results: list, elapsed: float = 0.0) -> str:
    failed = [r for r in results if not r.passed]
    try:
        from importlib.metadata import version
        ver = version("triton-ascend")
    except Exception:
        ver = "?"
    lines = [
        "# Ascend compile check",
        "",
        f"triton-ascend {ver}, target `{TARGET[1]}`, stages `ttir` + `ttadapter` "
        f"(triton-adapter-opt); no CANN. {len(results)} cases, {len(failed)} failing, "
        f"{elapsed:.1f} s.",
        "",
        "UB figures are an **estimate**: the sum of the static `memref.alloc`/`tensor.empty` "
        "buffers of the lowered kernel (first number), and the same with loop staging buffers "
        "doubled for multibuffer (second number), against the 192 KB unified buffer. A case "
        "fails when it does not lower or its estimate exceeds 192 KB: the second number for "
        "configs with multibuffer on (the Ascend default), the first for those with it off. A "
        "config with a failing case is dropped from the Ascend search space.",
        "",
        render_table(results),
    ]
    where = [(r, w) for r in results for w in r.scalarised_where]
    if where:
        lines += ["## Scalarised accesses", ""]
        lines += [f"- {r.op} {r.kernel} {r.label} {config_key(r.config)}: {w}"
                  + (f" (why: {r.note})" if r.note else "") for r, w in where]
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI

def add_check_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "check", help="lower every kernel x Ascend config x suite shape through triton-ascend's "
                      "adapter (no CANN/NPU needed)")
    add_check_arguments(p)
    p.set_defaults(func=run_check)
    return p


def add_check_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The `check` options on an existing (sub)parser; pair with set_defaults(func=run_check)."""
    p.add_argument("--op", action="append", nargs="+", default=None, metavar="OP",
                   help="op(s) to check (default: all)")
    p.add_argument("--suite", default=None, help="bench suite whose shapes to use (default: all)")
    p.add_argument("--report", default=str(REPORT_PATH), help="markdown report path")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per case")
    p.add_argument("--no-cache", action="store_true", help="ignore and do not write the cache")
    p.add_argument("--quiet", action="store_true", help="no per-case progress on stderr")
    return p


def run_check(args) -> int:
    ok, why = adapter_available()
    if not ok:
        print(f"ascend-kernels check: {why}", file=sys.stderr)
        return 2
    ops = [o for group in (getattr(args, "op", None) or [])
           for o in ([group] if isinstance(group, str) else group)] or None
    t0 = time.perf_counter()
    results = check_ops(ops, suite=getattr(args, "suite", None),
                        progress=not getattr(args, "quiet", False),
                        timeout=getattr(args, "timeout", DEFAULT_TIMEOUT_S),
                        use_cache=not getattr(args, "no_cache", False))
    elapsed = time.perf_counter() - t0
    print(render_table(results))
    report = Path(getattr(args, "report", None) or REPORT_PATH)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render_report(results, elapsed))
    failed = [r for r in results if not r.passed]
    print(f"{len(results)} cases, {len(failed)} failing, {elapsed:.1f} s; report: {report}")
    for r in failed:
        print(f"FAIL {r.op} {r.kernel} {r.label} {config_key(r.config)}: "
              f"{r.error or f'UB estimate {r.ub_bytes} B > {UB_BYTES} B'}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ascend_kernels.ascend_check")
    sub = parser.add_subparsers(dest="cmd", required=True)
    add_check_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main(["check"] + sys.argv[1:]) if sys.argv[1:2] != ["check"] else main())
