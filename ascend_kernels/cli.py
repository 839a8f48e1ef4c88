"""ascend-kernels {bench,tune,check,env,explain}."""
from __future__ import annotations

import argparse
import json
import sys

import torch

from . import __version__
from .launcher import autotune, device as _device, dispatch, op as _op

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _parse_shape(pairs: list[str]) -> dict:
    shape = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--shape takes name=value pairs, got {pair!r}")
        try:
            shape[name] = json.loads(value)
        except json.JSONDecodeError:
            shape[name] = value
    return shape


def cmd_env(args) -> int:
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
        print("  (no tuning results yet: `ascend-kernels tune`)")
    shipped = sorted(autotune.SHIPPED_DIR.glob("*.json"))
    print(f"{'shipped tuning':16s} {', '.join(p.name for p in shipped) or 'none'}")
    return 0


def cmd_explain(args) -> int:
    from .bench import problems

    spec = _op.get(args.op)
    device = torch.device(args.device) if args.device else _device.default_device()
    shape = _parse_shape(args.shape)
    try:
        problem = problems.make(args.op, shape, device, DTYPES[args.dtype])
    except KeyError as exc:
        print(f"explain {args.op}: the shape needs {exc} (pass --shape {exc.args[0]}=N)", file=sys.stderr)
        return 2
    decision = dispatch.decide(spec, problem)
    print(decision)
    if decision.path == "triton":
        print(f"tuning key: {autotune.key_of(spec, problem)}")
    return 0


def _add_optional_commands(sub) -> None:
    """check (triton-ascend's adapter), bench and tune plug in here."""
    from . import ascend_check

    p = sub.add_parser("check", help="lower every kernel x Ascend config through triton-ascend's adapter "
                                     "and read the IR (results cached; failing configs pruned)")
    ascend_check.add_check_arguments(p)
    p.set_defaults(func=ascend_check.run_check)
    from . import tuning
    from .bench import runner

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
                   help="shape parameters, as in the bench suites (e.g. tokens=8192 kv_heads=8)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--device", default=None, help="cpu, cuda, npu (default: the accelerator if any)")
    p.set_defaults(func=cmd_explain)
    _add_optional_commands(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
