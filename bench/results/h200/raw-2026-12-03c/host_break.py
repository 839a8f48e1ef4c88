"""Where an eager call's host time goes, component by component (scratch; private names)."""
import time, torch
import ascend_kernels as ak
from ascend_kernels.launcher import op as opmod
from bench.gpu import host_time as ht

N = 3000


def per_call(fn, n=N, queued=True):
    best = 1e9
    for _ in range(5):
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
        if queued:
            torch.cuda._sleep(ht.SLEEP_CYCLES)
        t = time.perf_counter()
        for _ in range(200 if queued else n):
            fn()
        best = min(best, (time.perf_counter() - t) / (200 if queued else n) * 1e6)
        torch.cuda.synchronize()
    return best


def breakdown(name, runner, args, kwargs):
    runner(*args, **kwargs)
    torch.cuda.synchronize()
    (key, plan), = list(runner.plans.items())[-1:]
    scope = plan.call.__globals__
    print(f"\n## {name}\n```\n{plan.code}\n```")
    rows = [("full call", per_call(lambda: runner(*args, **kwargs)))]
    sig = opmod._signature
    rows.append(("key", per_call(lambda: (tuple(map(sig, args)), tuple([(k, sig(v)) for k, v in kwargs.items()]) if kwargs else (), opmod._switches()), queued=False)))
    rows.append(("dict get", per_call(lambda: runner.plans.get(key), queued=False)))
    if getattr(plan, "match", None) is not None:
        rows.append(("plan.match (fast path check)", per_call(lambda: plan.match(args, kwargs), queued=False)))
    for a in args:
        if isinstance(a, torch.Tensor):
            rows.append(("one tensor signature", per_call(lambda: sig(a), queued=False)))
            break
    rows.append(("switches", per_call(opmod._switches, queued=False)))
    launches = [k for k in scope if k.startswith("launch") or k.startswith("run")]
    saved = {k: scope[k] for k in launches}
    captured = {}
    for k in launches:
        def rec(*a, k=k):
            captured[k] = a
        scope[k] = rec
    plan.call(args, kwargs)
    for k in launches:
        scope[k] = lambda *a: None
    rows.append(("plan.call, launches no-op", per_call(lambda: plan.call(args, kwargs), queued=False)))
    scope.update(saved)
    for k in launches:
        f, a = saved[k], captured[k]
        rows.append((f"{k} alone ({len(a)} args)", per_call(lambda: f(*a))))
    if "get_stream" in scope:
        gs, gd = scope["get_stream"], scope["get_device"]
        rows.append(("get_stream(get_device())", per_call(lambda: gs(gd()), queued=False)))
        if "scratch_of" in scope:
            so, st = scope["scratch_of"], gs(gd())
            rows.append(("scratch_of(stream)", per_call(lambda: so(st), queued=False)))
    for k in scope:
        if k.startswith("shape_"):
            f = k[6:]
            sh, dt, dv = scope[k], scope["dtype_" + f], scope["device_" + f]
            rows.append((f"empty {f} {sh}", per_call(lambda: torch.empty(sh, dtype=dt, device=dv), queued=False)))
            rows.append((f"empty {f}, device='cuda'", per_call(lambda: torch.empty(sh, dtype=dt, device="cuda"), queued=False)))
            t0 = args[0]
            rows.append((f"args[0].new_empty {f}", per_call(lambda: t0.new_empty(sh, dtype=dt), queued=False)))
            like = torch.empty(sh, dtype=dt, device=dv)
            rows.append((f"empty_like {f}", per_call(lambda: torch.empty_like(like), queued=False)))
            rows.append((f"empty {f} then del, 2 allocs", per_call(lambda: (torch.empty(sh, dtype=dt, device=dv), torch.empty(sh, dtype=dt, device=dv)), queued=False)))
    rows.append(("is_current_stream_capturing", per_call(torch.cuda.is_current_stream_capturing, queued=False)))
    rows.append(("_C._cuda_isCurrentStreamCapturing", per_call(torch._C._cuda_isCurrentStreamCapturing, queued=False)))
    print("| part | µs |\n|---|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.2f} |")


def main():
    x = torch.zeros(1, device="cuda")
    print(f"raw launch: {per_call(lambda: ht._trivial[(1,)](x)):.2f} us")
    k, v, kc, vc, slots = ht.rac_inputs(16)
    breakdown("reshape_and_cache", ak.reshape_and_cache, (k, v, kc, vc, slots), {})
    q, pkc, pvc, bt, lens, out = ht.pa_inputs(4, 1024)
    breakdown("paged_attention", ak.paged_attention, (q, pkc, pvc, bt, lens), {"out": out})
    logits, seeds = ht.sampling_inputs(4, 32000)
    breakdown("topk_topp_sampling", ak.topk_topp_sampling, (logits,), dict(top_k=50, top_p=0.9, seeds=seeds))
    fq, fk, fv, fcu, fout = ht.fa_inputs(1, 64)
    breakdown("flash_attention", ak.flash_attention, (fq, fk, fv), dict(cu_seqlens_q=fcu, max_seqlen_q=64, out=fout))
    print(f"raw launch: {per_call(lambda: ht._trivial[(1,)](x)):.2f} us")


if __name__ == "__main__":
    main()
