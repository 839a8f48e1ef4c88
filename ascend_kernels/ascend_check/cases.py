"""Where the cases come from: each op's own `launches(problem, config, "npu")` for the bench
suites' shapes, so the signatures checked are the ones a launch passes (nothing hand-written).
The only module of the package that knows about ops and suites."""
from __future__ import annotations

import sys
from typing import Optional

import torch

from .cache import record_op_results
from .core import DEFAULT_TIMEOUT_S, CaseResult, KernelCase, config_key, signature_of
from .run import check_cases
from .toolchain import one_line


def suite_shapes(op: str, suite: Optional[str]) -> list:
    """Shapes (dicts, in the vocabulary of bench/problems.py) of `op` in `suite` (default: all)."""
    from ..bench.suites import shapes_for

    return shapes_for(op, suite)


def _label(shape: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in shape.items() if not isinstance(v, (list, dict)) and v is not None)


def op_cases(op: str, shape: dict, config: dict) -> list:
    """The KernelCases of one op for one shape and one Ascend config: the kernels its launch
    would run (none when the op's capability check sends the shape to the fallback on npu).
    Tensors are made on the CPU: they only describe dtypes and strides."""
    from ..bench import problems
    from ..launcher import op as _op

    defn = _op.get(op)
    dtype = getattr(torch, str(shape.get("dtype") or "bfloat16").replace("torch.", ""))
    p = problems.make(op, shape, "cpu", dtype)
    if not defn.capability("npu", p)[0]:
        return []
    return [KernelCase(op, launch.kernel, signature_of(launch.args), dict(launch.constexprs), config,
                       _label(shape), dict(launch.options))
            for launch in defn.launches(p, dict(config), "npu")]


def cases_for_op(op: str, suite: Optional[str] = None) -> tuple:
    """(cases, errors) of op for every Ascend config x suite shape; errors are CaseResults for
    (shape, config) pairs whose problem or launch could not be made."""
    from ..launcher import configs

    cases, errors = [], []
    for shape in suite_shapes(op, suite):
        for config in configs.search_space(op, "npu"):
            try:
                cases += op_cases(op, shape, config)
            except Exception as exc:  # noqa: BLE001 -- reported as a failing case
                errors.append(CaseResult(op=op, kernel="?", label=_label(shape), config=config,
                                         lowered=False, error="making the launch: " + one_line(exc)))
    return cases, errors


def failing_defaults(results: list) -> list:
    """Ops whose heuristic Ascend config failed a case (the launcher would run it on an NPU)."""
    from ..launcher import configs

    out = []
    for op in sorted({r.op for r in results}):
        default = config_key(configs.default_config(op, "npu", {}))
        if any(r.op == op and not r.passed and config_key(r.config) == default for r in results):
            out.append(op)
    return out


def check_ops(op_names: Optional[list] = None, suite: Optional[str] = None, progress: bool = True,
              timeout: float = DEFAULT_TIMEOUT_S, use_cache: bool = True, **run) -> list:
    """Check every op (or `op_names`) x its Ascend configs x the suite's shapes; records per
    config pass/fail, which the launcher's tuner reads to prune the Ascend search space.
    `run`: more arguments of check_cases."""
    from ..launcher import autotune, op as _op

    results: list = []
    for name in op_names or _op.op_names():
        cases, errors = cases_for_op(name, suite)
        if not cases and not errors:
            print(f"ascend-kernels check: {name}: no suite shapes"
                  f"{f' in suite {suite!r}' if suite else ''}, nothing checked", file=sys.stderr)
        op_results = errors + check_cases(cases, timeout=timeout, use_cache=use_cache,
                                          progress=progress, **run)
        results += op_results
        if use_cache and op_results:
            record_op_results(name, autotune.source_hash(_op.get(name), "npu"), op_results)
    return results


def prune(configs: list, results: list) -> list:
    """configs minus those with a failing result among `results` (no cache involved)."""
    bad = {config_key(r.config) for r in results if not r.passed}
    return [c for c in configs if config_key(c) not in bad]
