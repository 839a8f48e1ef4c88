"""Bench suites (YAML files beside this module; `_models.yaml` holds the model shapes).

`shapes_for(op, suite)` gives the suite's cases for `op` in the vocabulary of the op's own
`make_problem` (heads, seqlen, ...), with the dtype: the Ascend compile check
(`ascend_kernels.ascend_check`) and `ascend-kernels tune` read the suites through it.
"""
from __future__ import annotations

from typing import Optional


def shapes_for(op: str, suite: Optional[str] = None) -> list:
    """Shapes of `op` in `suite` (default: every suite), in the vocabulary of the op's
    make_problem."""
    from .. import providers as prov
    from ..runner import load_suite, suite_names

    mod = prov.op_module(op)
    out: list = []
    for name in ([suite] if suite else suite_names()):
        s = load_suite(name)
        for shape in s["ops"].get(op, []):
            t = mod.tune_shape(shape)
            t.setdefault("dtype", s.get("dtype") or "bfloat16")
            if t not in out:
                out.append(t)
    return out

