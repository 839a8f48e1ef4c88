"""Search spaces and heuristic defaults, read from each backend's `configs.yaml`.

Format, per op:

    space:              # a list of grids; a grid maps each key to a value or a list of values;
      - {KEY: [a, b], other: c}     # the space is the union of the grids' cartesian products
    default:            # rules, applied in order onto an empty config: every rule whose `when`
      - config: {...}   # holds (all its conditions) updates the config with its `config`
      - when: {feature: value or "<=64" / ">=2" / "<2" / ">2048" / "!=0"}
        config: {...}

UPPERCASE keys are kernel constexprs; `grid_*` keys size the grid and never reach the kernel;
the other lowercase keys are launch options, routed by the backend's `launch_options`. Rule
features are the op's `features(problem)` (its tuning key and a few derived facts) and the
device properties (`tma`, ...).
"""
from __future__ import annotations

import functools
import itertools
import operator
from importlib import resources

import yaml

_COMPARE = (("<=", operator.le), (">=", operator.ge), ("!=", operator.ne), ("<", operator.lt),
            (">", operator.gt))


@functools.lru_cache(maxsize=None)
def table(backend: str) -> dict:
    """{op: {"space": [...], "default": [...]}} of one backend."""
    text = resources.files(f"ascend_kernels.backends.{backend}").joinpath("configs.yaml").read_text()
    return yaml.safe_load(text) or {}


def entry(op: str, backend: str) -> dict:
    try:
        return table(backend)[op]
    except KeyError:
        raise ValueError(f"backends/{backend}/configs.yaml has no entry for op {op!r}") from None


def search_space(op: str, backend: str) -> list:
    """Every config of the op's search space on this backend, without repeats."""
    out: list = []
    for grid in entry(op, backend)["space"]:
        keys = list(grid)
        values = [v if isinstance(v, list) else [v] for v in grid.values()]
        for combo in itertools.product(*values):
            config = dict(zip(keys, combo))
            if config not in out:
                out.append(config)
    return out


def _holds(condition, value) -> bool:
    if isinstance(condition, str):
        for prefix, compare in _COMPARE:
            if condition.startswith(prefix):
                return value is not None and compare(value, float(condition[len(prefix):]))
    return value == condition


def default_config(op: str, backend: str, features: dict) -> dict:
    """The heuristic config for a problem with these features."""
    config: dict = {}
    for rule in entry(op, backend)["default"]:
        when = rule.get("when", {})
        if all(_holds(cond, features.get(name)) for name, cond in when.items()):
            config.update(rule["config"])
    return config


def split_config(config: dict, backend: str) -> tuple[dict, dict]:
    """(constexpr kwargs, launch options) of a config on `backend`."""
    from .. import backends

    constexprs = {k: v for k, v in config.items() if k[:1].isupper()}
    return constexprs, backends.get(backend).launch_options(config)
