"""Reading the adapter's Linalg/HIVM output: a small parser into ops, regions and SSA values
(names resolved per region, as MLIR scopes them), then memory accesses, loops and the UB model
described in the package docstring."""
from __future__ import annotations

import re
from typing import Optional

_ELEM_BYTES = {"i1": 1, "i8": 1, "i16": 2, "i32": 4, "i64": 8, "f16": 2, "bf16": 2, "f32": 4,
               "f64": 8, "index": 8, "f8E4M3FN": 1, "f8E5M2": 1, "f8E4M3FNUZ": 1, "f8E5M2FNUZ": 1}
_TYPE_RE = re.compile(r"(?:tensor|memref)<[^<>]*(?:<[^<>]*>[^<>]*)*>|\b(?:i\d+|f\d+|bf16|index)\b")
_SHAPE_RE = re.compile(r"(tensor|memref)<((?:[0-9?]+x)*)(\w+)")
_NAME_RE = re.compile(r"%[\w.$-]+(?:#\d+)?")
_ARG_RE = re.compile(r"(%[\w.$-]+)\s*:\s*((?:tensor|memref)<[^<>]*(?:<[^<>]*>[^<>]*)*>|\w+)")
_RESULTS_RE = re.compile(r"^(%[\w.$-]+(?::\d+)?(?:\s*,\s*%[\w.$-]+(?::\d+)?)*)\s*=\s*(.*)$")

_VIEWS = {"memref.subview", "memref.cast", "memref.collapse_shape", "memref.expand_shape",
          "memref.reshape", "memref.transpose", "memref.reinterpret_cast", "tensor.expand_shape",
          "tensor.collapse_shape", "tensor.extract_slice", "tensor.cast", "tensor.reshape",
          "bufferization.to_tensor"}
_CASTS = {"arith.extsi", "arith.extui", "arith.trunci", "arith.index_cast", "arith.index_castui",
          "arith.sitofp", "arith.uitofp", "arith.fptosi", "arith.fptoui", "arith.bitcast",
          "arith.extf", "arith.truncf", "arith.select", "arith.constant"}
_MATMULS = {"linalg.matmul", "linalg.batch_matmul", "linalg.matmul_transpose_a",
            "linalg.matmul_transpose_b"}
_CONTROL = {"scf.for", "scf.while", "scf.if", "scf.execute_region", "scf.index_switch",
            "func.func", "module"}
COUNTS = ("dma", "scalar_access", "scalarised", "vector", "int64_vector", "cube", "scalar",
          "int64_scalar")


class Type:
    __slots__ = ("kind", "dims", "elem")

    def __init__(self, text: Optional[str]):
        m = _SHAPE_RE.match(text or "")
        if m:
            dims = [d for d in m.group(2).split("x") if d]
            self.kind, self.elem = m.group(1), m.group(3)
            self.dims = None if "?" in dims else [int(d) for d in dims]
        else:
            self.kind, self.dims, self.elem = "scalar", [], text or "?"

    @property
    def shaped(self) -> bool:
        return self.kind != "scalar"

    @property
    def nbytes(self) -> Optional[int]:
        if self.dims is None:
            return None
        n = _ELEM_BYTES.get(self.elem, 4)
        for d in self.dims:
            n *= d
        return n


class Value:
    __slots__ = ("name", "type", "op", "arg_of", "uses")

    def __init__(self, name: str, type_: Type, op=None, arg_of=None):
        self.name, self.type, self.op, self.arg_of, self.uses = name, type_, op, arg_of, []


class Region:
    __slots__ = ("op", "ops", "args")

    def __init__(self, op):
        self.op, self.ops, self.args = op, [], []


class Op:
    __slots__ = ("name", "line", "text", "results", "operands", "ins", "regions", "parent",
                 "index", "close")

    def __init__(self, name: str, line: int, text: str, parent: Region):
        self.name, self.line, self.text, self.parent = name, line, text, parent
        self.results, self.operands, self.ins, self.regions = [], [], [], []
        self.index, self.close = len(parent.ops), ""

    def ancestors(self):
        region = self.parent
        while region.op is not None:
            yield region.op
            region = region.op.parent

    @property
    def extracted(self) -> bool:
        """A loop the adapter made to scalarise an access (one DMA per element or row)."""
        return "ExtractedLoadOrStore" in self.close

    @property
    def kernel_loop(self) -> bool:
        return self.name in ("scf.for", "scf.while") and not self.extracted


# --------------------------------------------------------------------------- parser

def _result_types(name: str, text: str, n: int) -> list:
    for sep in ("->", " into ", " to "):
        if sep in text and not (sep == " to " and name == "scf.for"):
            toks = _TYPE_RE.findall(text.rsplit(sep, 1)[1])[:n]
            break
    else:
        toks = _TYPE_RE.findall(text)[-n:]
    types = [Type(t) for t in toks] + [Type(None)] * (n - len(toks))
    for t in types:
        if name in ("arith.cmpi", "arith.cmpf"):
            t.elem = "i1"
        if name in ("tensor.extract", "memref.load"):
            t.kind, t.dims = "scalar", []
    return types


class _Scopes:
    """SSA names per region: a region sees its own names and those of the regions around it, up
    to the enclosing function (isolated from above); sibling regions may reuse a name."""

    def __init__(self):
        self.stack: list = [({}, True)]

    def push(self, isolated: bool) -> None:
        self.stack.append(({}, isolated))

    def pop(self) -> None:
        self.stack.pop()

    def define(self, name: str, values: list) -> None:
        self.stack[-1][0][name] = values

    def lookup(self, ref: str) -> Optional[Value]:
        name, _, idx = ref.partition("#")
        for table, isolated in reversed(self.stack):
            if name in table:
                values = table[name]
                return values[int(idx or 0)] if int(idx or 0) < len(values) else None
            if isolated:
                return None
        return None


def parse(text: str) -> Region:
    """The module as a tree of regions and ops; operands are resolved to their Values."""
    top = Region(None)
    stack, scopes = [top], _Scopes()

    def open_region(op: Op, args: list) -> None:
        region = Region(op)
        op.regions.append(region)
        stack.append(region)
        scopes.push(op.name == "func.func")
        for name, type_ in args:
            v = Value(name, type_ if isinstance(type_, Type) else Type(type_), arg_of=op)
            region.args.append(v)
            scopes.define(name, [v])

    for no, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        if not s or s.startswith(("#", "//")):
            continue
        if s.startswith("}"):
            owner = stack.pop().op
            scopes.pop()
            rest = s[1:].strip()
            if owner is not None:
                owner.close += rest
                if rest.endswith("{"):  # "} else {", "} do {"
                    open_region(owner, [])
            continue
        if s.startswith("^"):  # block label with arguments: ^bb0(%out: f32, ...):
            for name, type_text in _ARG_RE.findall(s):
                v = Value(name, Type(type_text), arg_of=stack[-1].op)
                stack[-1].args.append(v)
                scopes.define(name, [v])
            continue
        if s.startswith("(%") and s.endswith("{"):  # linalg.reduce's region: (%in: f32, ...) {
            open_region(stack[-1].ops[-1], _ARG_RE.findall(s))
            continue
        m = _RESULTS_RE.match(s)
        names, body = (m.group(1), m.group(2)) if m else ("", s)
        header = body[:-1].rstrip() if body.endswith("{") else body
        op = Op(header.split(" ", 1)[0].split("(", 1)[0], no, header, stack[-1])
        stack[-1].ops.append(op)
        # block arguments declared in the header: scf.for %iv = ..., iter_args(%a = %init)
        defined = re.findall(r"(%[\w.$-]+)\s*=(?!=)", header)
        for ref in _NAME_RE.findall(header):
            if ref not in defined:
                v = scopes.lookup(ref)
                if v is not None:
                    op.operands.append(v)
                    v.uses.append(op)
        ins = re.search(r"\bins\(([^:)]*)", header)
        op.ins = [v for v in (scopes.lookup(r) for r in _NAME_RE.findall(ins.group(1)))
                  if v is not None] if ins else []
        count = sum(int(n.partition(":")[2] or 1) for n in names.split(",")) if names else 0
        types = iter(_result_types(op.name, header, count))
        for n in names.split(",") if names else []:
            base, _, k = n.strip().partition(":")
            values = [Value(base, next(types), op=op) for _ in range(int(k or 1))]
            op.results += values
            scopes.define(base, values)
        if body.endswith("{"):
            if op.name == "func.func":
                args = _ARG_RE.findall(header.split(")", 1)[0])
            elif op.name == "scf.for":
                iv = re.match(r"scf\.for\s+(%[\w.$-]+)", header)
                iv_type = re.search(r":\s*(\w+)\s*$", header)
                args = ([(iv.group(1), iv_type.group(1) if iv_type else "index")] if iv else [])
                args += [(d, r.type) for d, r in zip(defined[1:], op.results)]
            else:
                args = [(d, None) for d in defined]
            open_region(op, args)
    return top


def walk(region: Region):
    for op in region.ops:
        yield op
        for r in op.regions:
            yield from walk(r)


# --------------------------------------------------------------------------- values

def _root(v: Value) -> tuple:
    """(owner, global view): follow views to the value that owns the storage; the
    reinterpret_cast met on the way marks a view of global memory."""
    rc = None
    while v.op is not None and v.op.name in _VIEWS and v.op.operands:
        if v.op.name == "memref.reinterpret_cast":
            rc = v.op
        v = v.op.operands[0]
    return v, rc


def _const(v: Value) -> Optional[int]:
    op = v.op
    if op is None:
        return None
    if op.name == "arith.constant":
        m = re.match(r"arith\.constant\s+(-?\d+)\s*:", op.text)
        return int(m.group(1)) if m else None
    args = [_const(o) for o in op.operands]
    if None in args or not args:
        return None
    if op.name in ("arith.index_cast", "arith.extsi", "arith.extui", "arith.trunci"):
        return args[0]
    a, b = args[0], args[-1]
    fold = {"arith.addi": lambda: a + b, "arith.subi": lambda: a - b, "arith.muli": lambda: a * b,
            "arith.divsi": lambda: int(a / b) if b else None, "arith.minsi": lambda: min(a, b),
            "arith.maxsi": lambda: max(a, b), "arith.ceildivsi": lambda: -(-a // b) if b else None}
    return fold[op.name]() if op.name in fold else None


def _span(ub: Value, lb: Value) -> Optional[int]:
    """ub - lb when it is a constant (ub = lb + c, or min(lb + c, x), through equal casts)."""
    if ub is lb:
        return 0
    op = ub.op
    if op is None:
        return None
    if op.name == "arith.addi":
        a, b = op.operands
        return _const(b) if a is lb else _const(a) if b is lb else None
    if op.name == "arith.minsi":
        known = [s for s in (_span(x, lb) for x in op.operands) if s is not None]
        return min(known) if known else None
    if lb.op is not None and lb.op.name == op.name and op.name in _CASTS:
        return _span(op.operands[0], lb.op.operands[0])
    return None


class _Loops:
    """Kernel loops (not the adapter's extraction loops) with trip counts and growth."""

    def __init__(self, func: Op):
        self.info: dict = {}
        self._runtime: dict = {}
        for op in walk(func.regions[0]):
            if op.kernel_loop:
                self.info[op] = self._classify(op)

    def runtime(self, v: Value) -> bool:
        """Does v depend on a kernel argument, on loaded data or on a growing loop's index?"""
        if v in self._runtime:
            return self._runtime[v]
        self._runtime[v] = True  # cycles (loop-carried values) count as runtime
        if v.arg_of is not None:  # an index of a kernel loop grows with it; an extraction
            owner = v.arg_of      # loop's index is bounded; other arguments are runtime values
            is_iv = owner in self.info and owner.regions[0].args[:1] == [v]
            res = self.info[owner]["grows"] if is_iv else not owner.extracted
        elif v.op.name in ("memref.load", "tensor.extract") or v.op.regions:
            res = True
        else:
            res = any(self.runtime(o) for o in v.op.operands)
        self._runtime[v] = res
        return res

    def _classify(self, op: Op) -> dict:
        if op.name == "scf.while":
            return {"trip": None, "grows": True, "bounds": "while"}
        lb, ub, step = op.operands[:3]
        cl, cu, cs = _const(lb), _const(ub), _const(step)
        span = cu - cl if cl is not None and cu is not None else _span(ub, lb)
        m = re.search(r"=\s*(\S+\s+to\s+\S+\s+step\s+\S+)", op.text)
        bounds = m.group(1) if m else ""
        if span is not None and cs:
            return {"trip": max(0, -(-span // cs)), "grows": False, "bounds": bounds}
        return {"trip": None, "grows": any(self.runtime(x) for x in (lb, ub, step)),
                "bounds": bounds}


# --------------------------------------------------------------------------- counts

def _access(op: Op) -> Optional[tuple]:
    """(kind, reinterpret_cast op) when op reads or writes global memory."""
    n, ops = op.name, op.operands
    pick = None
    if n == "memref.copy" and len(ops) == 2:
        pick = ("load", ops[0]) if _root(ops[0])[1] else ("store", ops[1])
    elif n == "bufferization.materialize_in_destination" and len(ops) == 2:
        pick = ("store", ops[1])
    elif n == "memref.load" and ops:
        pick = ("load", ops[0])
    elif n == "memref.store" and len(ops) > 1:
        pick = ("store", ops[1])
    elif "GenericAtomicRMW" in op.text or n.startswith("hivm.hir.atomic") or n == "memref.atomic_rmw":
        pick = ("atomic", next((o for o in ops if _root(o)[1]), None))
    if pick is None or pick[1] is None:
        return None
    rc = _root(pick[1])[1]
    return (pick[0], rc) if rc is not None else None


def _one_element(rc: Op) -> bool:
    return all(d == 1 for d in rc.results[0].type.dims or [0])


def _is_i64(op: Op, shaped: bool) -> bool:
    return any(Type(t).shaped == shaped and Type(t).elem == "i64"
               for t in _TYPE_RE.findall(op.text))


def _category(op: Op, access: Optional[tuple], extracted: bool) -> list:
    dialect = op.name.split(".", 1)[0]
    if access is not None:
        return ["scalarised" if extracted else "scalar_access" if _one_element(access[1]) else "dma"]
    if op.name in _MATMULS:
        return ["cube"]
    if dialect in ("linalg", "hfusion", "hivm") and op.name not in ("linalg.yield", "linalg.index"):
        payload_i64 = any(p.name.startswith("arith.") and p.name not in _CASTS and _is_i64(p, False)
                          for r in op.regions for p in walk(r))
        return ["vector"] + (["int64_vector"] if payload_i64 else [])
    shaped = any(r.type.shaped for r in op.results)
    if dialect in ("arith", "math") and op.name != "arith.constant":
        kind = "vector" if shaped else "scalar"
        wide = op.name not in _CASTS and _is_i64(op, shaped)
        return [kind] + ([f"int64_{kind}"] if wide else [])
    if op.name in ("tensor.extract", "tensor.insert"):
        return ["scalar"]
    if op.name == "func.call" and shaped:
        return ["vector"]
    return []


# --------------------------------------------------------------------------- UB model

class _UB:
    """Peak bytes of UB buffers alive at once; see the package docstring for the model."""

    def __init__(self, func: Op):
        self.members: dict = {}  # owner -> the values that view it
        for op in walk(func.regions[0]):
            for v in op.results:
                self.members.setdefault(_root(v)[0], []).append(v)
        self.dynamic = sum(1 for o in self.members if o.op is not None and o.op.name != "tensor.empty"
                           and o.type.shaped and o.type.dims is None)
        self.loads = {_root(op.operands[1])[0] for op in walk(func.regions[0])
                      if op.name == "memref.copy" and len(op.operands) == 2
                      and _root(op.operands[0])[1] is not None}

    def _cube_side(self, v: Value) -> Optional[bool]:
        """True: every use feeds a matmul (directly or through views/transposes); False: some
        use is vector work; None: only DMA fills of the buffer."""
        verdicts = []
        for u in v.uses:
            if u.name in _MATMULS and v in u.ins:
                verdicts.append(True)
            elif (u.name in _VIEWS or u.name == "linalg.transpose") and u.operands[0] is v:
                verdicts.append(self._cube_side(u.results[0]) if u.results else None)
            elif not ((u.name == "memref.copy" and u.operands[-1] is v)
                      or (u.name == "linalg.fill" and not u.results)):
                return False
        return False if False in verdicts else (True if True in verdicts else None)

    def nbytes(self, owner: Value, multibuffer: bool) -> int:
        op = owner.op
        if op is None or op.name == "tensor.empty" or not owner.type.shaped:
            return 0
        if op.name in ("memref.alloc", "linalg.transpose") and self._cube_side(owner):
            return 0  # cube operand: L1/L0, not UB
        n = owner.type.nbytes or 0
        doubled = multibuffer and owner in self.loads and any(a.kernel_loop for a in op.ancestors())
        return 2 * n if doubled else n

    def _positions(self, owner: Value, region: Region) -> list:
        """(index in region, direct) of every use of owner's storage, lifted to region's ops."""
        out = []
        for v in self.members.get(owner, [owner]):
            for u in v.uses:
                op = u
                while op.parent is not region and op.parent.op is not None:
                    op = op.parent.op
                if op.parent is region:
                    out.append((op.index, op is u))
        return out

    def peak(self, region: Region, outer: int, multibuffer: bool) -> int:
        local = []
        for op in region.ops:
            for v in op.results:
                if _root(v)[0] is v:
                    pos = self._positions(v, region)
                    last = max([op.index] + [p for p, _ in pos])
                    handed = all(d for p, d in pos if p == last)  # only passed to op `last`
                    local.append((op.index, last, self.nbytes(v, multibuffer), handed))
        best = outer
        for op in region.ops:
            i = op.index
            best = max(best, outer + sum(b for d, last, b, _ in local if d <= i <= last))
            if op.name not in _CONTROL:
                continue
            across = outer + sum(b for d, last, b, handed in local
                                 if d < i <= last and not (last == i and handed))
            for sub in op.regions:
                args = sum(self.nbytes_arg(a) for a in sub.args)
                best = max(best, self.peak(sub, across + args, multibuffer))
        return best

    @staticmethod
    def nbytes_arg(v: Value) -> int:
        return (v.type.nbytes or 0) if v.type.kind == "tensor" else 0


# --------------------------------------------------------------------------- analysis

def _kernel_func(top: Region) -> Op:
    funcs = [op for op in walk(top) if op.name == "func.func" and op.regions]
    return next((f for f in funcs if "mix_mode" in f.text), funcs[0])


def analyse(text: str) -> dict:
    """Accesses, per-loop op counts, the UB peak and mix mode of the adapter's output."""
    func = _kernel_func(parse(text))
    loops = _Loops(func)
    rows: dict = {}
    for op, info in loops.info.items():
        parent = next((a for a in op.ancestors() if a in loops.info), None)
        rows[op] = {"id": f"L{len(rows) + 1}", "line": op.line, "parent": rows[parent]["id"]
                    if parent is not None else "", "trip": info["trip"], "grows": info["grows"],
                    "hot": info["grows"] or (parent is not None and rows[parent]["hot"]),
                    "bounds": info["bounds"], "ops": dict.fromkeys(COUNTS, 0)}
    body = {"id": "body", "line": func.line, "parent": "", "trip": 1, "grows": False,
            "hot": False, "bounds": "", "ops": dict.fromkeys(COUNTS, 0)}
    out = {"structured": 0, "scalar": 0, "scalarised": 0, "scalarised_where": [],
           "unconverted": sorted({op.name for op in walk(func.regions[0])
                                  if op.name.startswith(("tt.", "ttg.", "llvm.inline_asm"))})}
    for op in walk(func.regions[0]):
        ancestors = list(op.ancestors())
        if any(a.name not in _CONTROL for a in ancestors):
            continue  # the scalar payload of a linalg op
        row = next((rows[a] for a in ancestors if a in rows), body)
        access = _access(op)
        extracted = any(a.extracted for a in ancestors)
        cats = _category(op, access, extracted)
        for c in cats:
            row["ops"][c] += 1
        if access is None:
            continue
        out[{"dma": "structured", "scalar_access": "scalar"}.get(cats[0], cats[0])] += 1
        if extracted:
            grain = "element" if _one_element(access[1]) else "row"
            where = f"loop {row['id']}" if row is not body else "kernel body"
            out["scalarised_where"].append(
                f"{access[0]} per {grain} in {where}{' (growing)' if row['hot'] else ''} "
                f"(ir line {op.line})")
    ub = _UB(func)
    out["ub_bytes"] = ub.peak(func.regions[0], 0, False)
    out["ub_bytes_multibuffer"] = ub.peak(func.regions[0], 0, True)
    out["dynamic_buffers"] = ub.dynamic
    out["loops"] = [body] + list(rows.values())
    out["hot"] = {c: sum(r["ops"][c] for r in rows.values() if r["hot"]) for c in COUNTS}
    mix = re.search(r'mix_mode\s*=\s*"([^"]+)"', func.text)
    out["mix_mode"] = mix.group(1) if mix else "?"
    return out
