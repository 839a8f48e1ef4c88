import time, torch
import ascend_kernels as ak
from ascend_kernels.launcher import op as _op
from bench.gpu.host_time import calls, per_call_us
from bench.gpu import host_time as H

def t(fn, n=2000):
    for _ in range(50): fn()
    torch.cuda.synchronize()
    best = 1e9
    for _ in range(5):
        s = time.perf_counter()
        for _ in range(n): fn()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - s) / n * 1e6)
    return best

for name, eager, _ in calls():
    runner = getattr(ak, name, None)
    if runner is None:
        print(name, round(t(eager), 1)); continue
    eager()
    plan = next(iter(runner.plans.values()))
    # capture the args of the last call by wrapping
    seen = {}
    orig = runner._first_call
    def cap(key, args, kwargs):
        seen["a"] = (args, kwargs); return orig(key, args, kwargs)
    runner.plans.clear(); runner._first_call = cap; eager(); runner._first_call = orig
    args, kwargs = seen["a"]
    plan = next(iter(runner.plans.values()))
    p = plan.problem(args, kwargs)
    key = lambda: (tuple(map(_op._signature, args)), tuple([(k, _op._signature(v)) for k, v in kwargs.items()]) if kwargs else (), _op._switches())
    run = plan.run
    print(f"{name}: total {t(eager):.1f} | key {t(key):.1f} | problem {t(lambda: plan.problem(args, kwargs)):.1f} | run {t(lambda: run(p)):.1f}")
    cl = (run.__closure__ or ()) if not hasattr(run, 'func') else ()
    if hasattr(run, 'func'):
        r = run.func.__self__ if hasattr(run.func, '__self__') else run.func
        cl = [type('C', (), {'cell_contents': [r]})()]
    for c in cl:
        v = c.cell_contents
        if isinstance(v, list):
            for r in v:
                print("   replay", type(r).__name__, "direct" if getattr(r, "runner", None) else "jit",
                      f"{t(lambda: r(p, [] if not hasattr(r,'scratch') else r.scratch.make())):.1f}",
                      "scratch.make", f"{t(lambda: r.scratch.make()):.1f}" if hasattr(r, "scratch") else "")
                if getattr(r, "runner", None):
                    vals = r.template[:]
                    for i, f in r.fields: vals[i] = getattr(p, f)
                    made = r.scratch.make()
                    for i, j in r.scratch_at: vals[i] = made[j]
                    for i, f, d in r.descs:
                        import dataclasses; vals[i] = dataclasses.replace(d, base=getattr(p, f))
                    print("      runner only", f"{t(lambda: r.runner(*vals)):.1f}", "nargs", len(vals))
