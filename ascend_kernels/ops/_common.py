"""What the ops share beyond the generic argument checks (launcher/checks.py): the softmax scale
and the fallbacks (no kernels, no dispatch)."""
from __future__ import annotations

import importlib
import math

from ..launcher.checks import check_float


def softmax_scale_of(name: str, scale, head_size: int) -> float:
    """The softmax scale: 1/sqrt(head_size) when None, else a finite float > 0."""
    return check_float(name, 1.0 / math.sqrt(head_size) if scale is None else scale, positive=True)


def _call(package: str, module: str, args_of, finish):
    imported = []  # the module, imported on the first call (fallback_atb needs torch_npu)

    def run(p):
        args, kwargs = args_of(p)
        if not imported:
            imported.append(importlib.import_module(f"ascend_kernels.{package}.{module}"))
        result = getattr(imported[0], module)(*args, **kwargs)
        if finish is not None:
            finish(p, result)
    return run


def atb_fallback(module: str, args_of, finish=None):
    """An op's fallback on Ascend: ``fallback_atb.<module>.<module>(*args, **kwargs)`` with the
    arguments `args_of(problem)` gives, then `finish(problem, result)` if given. Its `.route(p)`
    says which torch_npu operator (or the reference) the wrapper takes and why (explain shows it;
    the call itself re-decides, so nothing value-dependent is cached)."""
    run = _call("fallback_atb", module, args_of, finish)

    def route(p):
        args, kwargs = args_of(p)
        kwargs = {k: v for k, v in kwargs.items() if k not in ("out", "return_lse", "return_probs")}
        return importlib.import_module(f"ascend_kernels.fallback_atb.{module}").route(*args, **kwargs)

    run.route = route
    return run


def fallbacks(module: str, args_of, finish=None, reference=None) -> dict:
    """An op's fallbacks: "fallback_atb" (see atb_fallback) and "reference": `reference(problem)`
    when given, else ``reference.<module>.<module>`` called like the ATB one (then `finish`)."""
    return {"fallback_atb": atb_fallback(module, args_of, finish),
            "reference": reference or _call("reference", module, args_of, finish)}
