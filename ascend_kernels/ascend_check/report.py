"""The markdown report: one row per case, then the loops of every distinct lowering."""
from __future__ import annotations

from .core import TARGET, UB_BYTES, config_key
from .ir import COUNTS
from .toolchain import triton_ascend_version

_HEADS = {"dma": "DMA", "scalar_access": "scalar acc.", "scalarised": "scalarised",
          "vector": "vector", "int64_vector": "i64 vector", "cube": "cube", "scalar": "scalar",
          "int64_scalar": "i64 scalar"}


def _kb(n: int) -> str:
    return f"{n / 1024:.1f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_table(results: list) -> str:
    head = ("| op | kernel | shape | config | lowered | structured / scalar / scalarised | "
            "hot loops | hot ops: vector / i64 vector / scalar / scalarised | mix | "
            f"UB KB (single / multibuffer) of {_kb(UB_BYTES)} | verdict | s |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for r in results:
        cfg = ", ".join(f"{k}={v}" for k, v in r.config.items())
        hot = [lp["id"] for lp in r.loops if lp["hot"]]
        h = r.hot
        verdict = "pass" if r.passed else "FAIL: " + "; ".join(r.failures)
        rows.append(
            f"| {r.op} | {r.kernel} | {r.label} | {cfg} | {'yes' if r.lowered else 'NO'} | "
            f"{r.structured} / {r.scalar} / {r.scalarised} | {', '.join(hot) or '-'} | "
            + (f"{h['vector']} / {h['int64_vector']} / {h['scalar']} / {h['scalarised']} | "
               if h else "- | ")
            + f"{r.mix_mode or '-'} | "
            + (f"{_kb(r.ub_bytes)} / {_kb(r.ub_bytes_multibuffer)} | " if r.lowered else "- | ")
            + f"{_cell(verdict)} | {r.seconds:.2f}{' (cached)' if r.cached else ''} |")
    return head + "\n".join(rows) + "\n"


def render_loops(r) -> str:
    """The loop table of one case: its op counts per loop (ops of nested loops not included)."""
    head = ("| loop | in | IR line | trip count | grows | hot | "
            + " | ".join(_HEADS[c] for c in COUNTS) + " |\n|" + "---|" * (6 + len(COUNTS)) + "\n")
    rows = [f"| {lp['id']} | {lp['parent'] or '-'} | {lp['line']} | "
            f"{lp['trip'] if lp['trip'] is not None else lp['bounds']} | "
            f"{'yes' if lp['grows'] else 'no'} | {'yes' if lp['hot'] else 'no'} | "
            + " | ".join(str(lp["ops"][c]) for c in COUNTS) + " |" for lp in r.loops]
    return head + "\n".join(rows) + "\n"


def render_report(results: list, elapsed: float = 0.0, command: str = "") -> str:
    failed = [r for r in results if not r.passed]
    lines = [
        "# Ascend compile check",
        "",
        *([f"Command: `{command}`", ""] if command else []),
        f"triton-ascend {triton_ascend_version()}, target `{TARGET[1]}`, stages `ttir` + "
        f"`ttadapter` (triton-adapter-opt); no CANN. {len(results)} cases, {len(failed)} "
        f"failing, {elapsed:.1f} s.",
        "",
        "A case fails when it does not lower, when its UB peak (the multibuffer figure for "
        "configs with multibuffer on, the Ascend default) exceeds 192 KB, or when a hot loop "
        "(a loop whose trip count grows with the problem, or one nested in it) holds a "
        "scalarised memory access or int64 vector arithmetic. A config with a failing case is "
        "dropped from the Ascend search space. The rules and the UB model: docs/ascend_check.md.",
        "",
        render_table(results),
    ]
    where = [(r, w) for r in results for w in r.scalarised_where]
    if where:
        lines += ["## Scalarised accesses", ""]
        lines += [f"- {r.op} {r.kernel} {r.label} {config_key(r.config)}: {w}"
                  + (f" (why: {r.note})" if r.note else "") for r, w in where]
        lines.append("")
    lines += ["## Loops", "", "Op counts per loop of each distinct lowering (first case shown)."
              " Loop ids are in IR order; `in` is the enclosing loop.", ""]
    seen = set()
    for r in results:
        if r.lowered and r.key not in seen:
            seen.add(r.key)
            lines += [f"### {r.op} {r.kernel} {r.label} {config_key(r.config)}", "",
                      render_loops(r)]
    return "\n".join(lines)


def summary(results: list, elapsed: float) -> str:
    failed = [r for r in results if not r.passed]
    lines = [f"{len(results)} cases, {len(failed)} failing, {elapsed:.1f} s"]
    lines += [f"FAIL {r.op} {r.kernel} {r.label} {config_key(r.config)}: {'; '.join(r.failures)}"
              for r in failed]
    return "\n".join(lines)
