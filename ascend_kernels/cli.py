"""ascend-kernels {bench,tune,check,env,explain}."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

import torch

from . import __version__
from .bench import problems, providers as prov, runner
from .bench.runner import UsageError
from .launcher import autotune, device as _device, dispatch, op as _op

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
          "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
STRING_KEYS = ("model", "logits_dtype")  # shape keys whose values are names, not numbers


def cmd_env(args) -> int:
    from .tuning import tune_advice

    dev = _device.default_device()
    print(f"ascend_kernels {__version__}")
    for name, version in _device.versions().items():
        print(f"{name:16s} {version}")
    print(f"{'backend':16s} {dev.type}")
    if dev.type == "cpu":
        print(f"{'interpreter':16s} {'on' if _device.INTERPRETER_ON else 'off'}: {_device.interpreter_reason()}")
    else:
        count = getattr(torch, dev.type).device_count()
        for i in range(count):
            props = _device.properties(torch.device(dev.type, i))
            print(f"{'device ' + str(i):16s} {props['name']}: {props['num_aicore']} cores, "
                  f"ub {props['ub_bytes'] or '-'} bytes")
    print(f"{'forced path':16s} {dispatch.forced_backend()} ({dispatch.BACKEND_ENV})")
    cache = autotune.cache_dir()
    print(f"{'cache dir':16s} {cache}")
    files = sorted(cache.glob("*.json")) if cache.exists() else []
    for path in files:
        try:
            data = json.loads(path.read_text())
            ops = data.get("ops", {})
            summary = ", ".join(f"{op}: {len(v.get('entries', {}))} keys" for op, v in ops.items())
            print(f"  {path.name}: device {data.get('device')}, triton {data.get('triton')}; {summary or 'empty'}")
        except Exception as exc:
            print(f"  {path.name}: unreadable ({exc})")
    if not files:
        print("  (no tuning results)")
    print(f"{'tune':16s} {tune_advice(dev.type)[1]}")
    shipped = sorted(autotune.SHIPPED_DIR.glob("*.json"))
    print(f"{'shipped tuning':16s} {', '.join(p.name for p in shipped) or 'none'}")
    return 0


# ---- explain: a shape in the suites' vocabulary -> the op's problem -> the path decision ----

class _Probe(dict):
    """A suite shape that records the keys read from it. A missing key read with [] is recorded
    and reads as 1, so one pass finds every missing key; with present=True every key reads as
    present (1 unless a default is given), so every branch is taken and every key is seen."""

    def __init__(self, shape: dict, present: bool = False):
        super().__init__(shape)
        self.present, self.read, self.missing = present, {}, {}

    def _value(self, key, default):
        self.read[key] = None
        return dict.__getitem__(self, key) if dict.__contains__(self, key) else default

    def __getitem__(self, key):
        if not (self.present or dict.__contains__(self, key)):
            self.missing[key] = None
        return self._value(key, 1)

    def get(self, key, default=None):
        return self._value(key, 1 if self.present and default is None else default)

    def __contains__(self, key):
        self.read[key] = None
        return self.present or dict.__contains__(self, key)


def _probe(op: str, shape: dict, present: bool = False) -> _Probe:
    """Run the bench provider's label, tune_shape and cost over a probe of `shape`."""
    mod = prov.op_module(op)
    probe = _Probe(shape, present)
    for fn in (mod.label, mod.tune_shape, lambda s: mod.cost(s, torch.float32)):
        try:
            fn(probe)
        except Exception:  # a placeholder value that does not fit: the real call reports it
            pass
    return probe


def _parse_shape(pairs: list) -> tuple[dict, list]:
    """NAME=VALUE pairs -> (shape, errors); values are JSON numbers or booleans (names for
    STRING_KEYS)."""
    shape, errors = {}, []
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not (sep and name):
            errors.append(f"{pair!r} is not NAME=VALUE")
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if name not in STRING_KEYS and not isinstance(value, (int, float)):
            errors.append(f"{name}={text} is not a number")
        shape[name] = value
    return shape, errors


def suite_shape(op: str, pairs: list, model: Optional[str] = None) -> tuple[dict, list]:
    """--shape pairs (the keys of a suite entry of `op`; `model` merges that model's fields as a
    suite entry does) -> (the suite shape, the keys given). Every malformed value, unknown key
    and missing key is reported at once, as a UsageError."""
    shape, errors = _parse_shape(pairs)
    given = list(shape)
    known = {"model": None, **_probe(op, {}, present=True).read}
    unknown = [k for k in shape if k not in known]
    if unknown:
        errors.append(f"unknown {', '.join(unknown)} (the keys of a {op} suite entry: {', '.join(sorted(known))})")
    model = model or shape.get("model")
    if model is not None:
        models = runner.load_models()
        if model not in models:
            errors.append(f"unknown model {model!r} (models: {', '.join(models)})")
        else:
            shape = {**models[model], **shape, "model": model}
    missing = [k for k in _probe(op, shape).missing if k not in unknown]
    if missing:
        errors.append(f"missing {', '.join(missing)} (pass --shape " + " ".join(f"{k}=N" for k in missing)
                      + (" or --model NAME" if model is None else "") + ")")
    if errors:
        raise UsageError(f"{op}: " + "; ".join(errors))
    return shape, [k for k in given if k != "model"]


def cmd_explain(args) -> int:
    spec = _op.get(args.op)
    device = runner.pick_device(args.device)
    shape, given = suite_shape(args.op, args.shape, args.model)
    used = _Probe(shape)
    t = prov.op_module(args.op).tune_shape(used)  # the suite's vocabulary -> problems.make's
    dtype = getattr(torch, t["dtype"]) if "dtype" in t else DTYPES[args.dtype]
    try:
        problem = problems.make(args.op, t, device, dtype)
    except (ValueError, TypeError, RuntimeError) as exc:  # the op's own validation
        raise UsageError(f"{args.op}: {exc}") from None
    decision = dispatch.decide(spec, problem)
    print(decision)
    if decision.path == "triton":
        print(f"tuning key: {autotune.key_of(spec, problem)}")
    ignored = [k for k in given if k not in used.read]
    if ignored:
        print(f"not part of the decision (used by the bench only): {', '.join(ignored)}")
    return 0


def _add_optional_commands(sub) -> None:
    """check (triton-ascend's adapter), bench and tune."""
    from . import ascend_check

    p = sub.add_parser("check", help="lower every kernel x Ascend config through triton-ascend's adapter "
                                     "and read the IR (results cached; failing configs pruned)")
    ascend_check.add_check_arguments(p)
    p.set_defaults(func=ascend_check.run_check)
    from . import tuning

    p = sub.add_parser("bench", help="time every op against the fallback and the peers")
    runner.add_bench_arguments(p)
    p.set_defaults(func=runner.run_bench)
    p = sub.add_parser("tune", help="autotune block sizes on this device and store them")
    tuning.add_tune_arguments(p)
    p.set_defaults(func=tuning.run_tune)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ascend-kernels", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("env", help="backend, devices, versions, tuning cache")
    p.set_defaults(func=cmd_env)
    p = sub.add_parser("explain", help="which path (triton or fallback) an op takes for a shape, and why")
    p.add_argument("op", choices=_op.op_names())
    p.add_argument("--shape", nargs="*", default=[], metavar="NAME=VALUE",
                   help="the shape, with the keys of a suite entry (bench/suites/*.yaml), e.g. for "
                        "paged_attention: batch=64 context=4096 q_heads=32 kv_heads=8 head_size=128 "
                        "block_size=128")
    p.add_argument("--model", help="take q_heads, kv_heads, head_size, vocab, ... from this model of "
                                   "bench/suites/_models.yaml (the --shape keys win)")
    p.add_argument("--dtype", choices=list(DTYPES), default="bfloat16")
    p.add_argument("--device", default=None, help="cpu, cuda, npu (default: the accelerator if any)")
    p.set_defaults(func=cmd_explain)
    _add_optional_commands(sub)
    for p in sub.choices.values():
        p.set_defaults(_parser=p)
    return parser


def main(argv=None) -> int:
    """Run the CLI; a wrong value is a usage error (status 2, the valid choices named)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # `bench` runs itself again with the interpreter on (see bench/runner.py)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        args._parser.error(str(exc))  # exits with status 2


if __name__ == "__main__":
    sys.exit(main())
