"""Quantized paged decode (int8 / fp8 e4m3 cache) vs bf16: check and time kernel variants on the
H200 in one call (hard guard: no new work after 100 s).

    cd /work/main && PYTHONPATH=. python scratch/pa_quant/run.py                 # H200
    cd /work/main && ASCEND_KERNELS_INTERPRET=1 PYTHONPATH=. .venv-up/bin/python scratch/pa_quant/run.py --tiny

Shape: B64 x 4096, 32/8 heads, d128, pages of 16, random-permutation block table, bf16 query,
random cache codes, per-kv-head scales in [0.01, 0.05]. Variants (package copies, each imported in
its own subprocesses with its directory first on PYTHONPATH; base = the unmodified package):
  base  - ascend_kernels as checked out (tuned configs; split-KV 2 as an extra row)
  v_vt  - V pages stored token-contiguous ([blocks, kv heads, head_size, page], passed as a
          permuted view): the P.V dot reads V like K (no byte transpose)
  v_core- CUDA-core fp32 math, BLOCK_M = GQA (4), no tl.dot (CORE=2: a static loop over heads)
Phase A compiles every (variant, cache, config) in parallel processes (one call on zeroed caches,
filling the variant's Triton cache dir); phase B: one worker per variant builds the same seeded
data and an fp32 reference of the dequantized cache, then, one variant at a time, captures a CUDA
graph per job, checks the output (fails loudly) and times graph replays (median, do_bench).
Prints | variant | config | cache | us | vs bf16 base | max err | ...; with $OUT, also $OUT/pa_quant.md.
"""
import argparse
import json
import math
import os
import select
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
T0 = time.time()
BUDGET_S = 100.0
COMMON = {"grid_programs_per_core": 8, "grid_split_target": 2}


def cfg(n, w, s, **extra):
    return dict(COMMON, grid_step_tokens=n, num_warps=w, num_stages=s, **extra)


def jobs_full():
    """{variant: [(cache, label, config)]} (cache: bf16 | int8 | fp8 | int8_vt | fp8_vt)."""
    return {
        "base": [("bf16", "tuned", cfg(32, 4, 3)), ("int8", "tuned", cfg(64, 2, 3)),
                 ("fp8", "tuned", cfg(32, 1, 3)), ("int8", "", cfg(64, 2, 3, grid_num_splits=2)),
                 ("fp8", "", cfg(32, 1, 3, grid_num_splits=2))],
        "v_vt": [("int8_vt", "", cfg(32, 1, 3)), ("int8_vt", "", cfg(64, 2, 3)), ("int8_vt", "", cfg(32, 2, 3)),
                 ("int8_vt", "", cfg(32, 1, 4)),
                 ("fp8_vt", "", cfg(32, 1, 3)), ("fp8_vt", "", cfg(32, 1, 3, VT_ZERO_TAIL=False)),
                 ("fp8_vt", "", cfg(64, 2, 3, VT_ZERO_TAIL=False))],
        "v_core": [("int8", "", cfg(16, 1, 3, CORE=2)), ("fp8", "", cfg(16, 1, 3, CORE=2))],
    }


def jobs_tiny():
    return {
        "base": [("bf16", "tuned", cfg(32, 4, 2)), ("int8", "tuned", cfg(32, 2, 2)),
                 ("int8", "", cfg(16, 1, 2, grid_num_splits=2))],
        "v_vt": [("int8_vt", "", cfg(32, 1, 2)), ("int8_vt", "", cfg(16, 1, 2, grid_num_splits=2))],
        "v_core": [("int8", "", cfg(16, 1, 2, CORE=2)), ("int8", "", cfg(32, 2, 2, CORE=1))],
    }


def cfg_name(c):
    s = f"n{c['grid_step_tokens']} w{c['num_warps']} s{c['num_stages']}"
    for k, v in c.items():
        if k not in COMMON and k not in ("grid_step_tokens", "num_warps", "num_stages"):
            s += f" {k}={v}"
    return s


def shape(tiny):
    if tiny:
        return dict(B=3, CTX=37, H=8, KVH=2, D=32, BS=16)
    return dict(B=64, CTX=4096, H=32, KVH=8, D=128, BS=16)


# ---------------------------------------------------------------------------------------------
# workers (the variant's directory first on sys.path)

def _import_variant(variant):
    import ascend_kernels as ak
    where = os.path.realpath(os.path.dirname(os.path.abspath(ak.__file__)))
    want = os.path.realpath(os.path.join(ROOT if variant == "base" else os.path.join(HERE, variant), "ascend_kernels"))
    if where != want:
        raise RuntimeError(f"ascend_kernels imported from {where}, not the variant's {want}")
    return ak


def _data(tiny, dev, zero=False):
    import torch
    sh = shape(tiny)
    B, CTX, H, KVH, D, BS = (sh[k] for k in ("B", "CTX", "H", "KVH", "D", "BS"))
    per_seq = -(-CTX // BS)
    pages = B * per_seq + 5
    g = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(B, H, D, device=dev, dtype=torch.bfloat16, generator=g)
    table = torch.randperm(pages, device=dev, generator=g)[: B * per_seq].to(torch.int32).reshape(B, per_seq)
    lens = torch.full((B,), CTX, dtype=torch.int32, device=dev)
    if tiny:
        lens = torch.tensor([37, 1, 30][:B], dtype=torch.int32, device=dev)
    caches, scales = {}, {}
    for name in ("bf16", "int8", "fp8"):
        if tiny and name == "fp8":
            continue  # the interpreter has no fp8
        if zero:
            dt = {"bf16": torch.bfloat16, "int8": torch.int8, "fp8": torch.float8_e4m3fn}[name]
            kc, vc = (torch.zeros(pages, BS, KVH, D, device=dev, dtype=dt) for _ in range(2))
        elif name == "bf16":
            kc, vc = (torch.randn(pages, BS, KVH, D, device=dev, dtype=torch.bfloat16, generator=g) for _ in range(2))
        elif name == "int8":
            kc, vc = (torch.randint(-128, 128, (pages, BS, KVH, D), device=dev, dtype=torch.int8, generator=g)
                      for _ in range(2))
        else:
            kc, vc = ((torch.randn(pages, BS, KVH, D, device=dev, generator=g) * 3).to(torch.float8_e4m3fn)
                      for _ in range(2))
        caches[name] = (kc, vc)
        if name != "bf16":
            scales[name] = tuple(torch.rand(KVH, device=dev, generator=g) * 0.04 + 0.01 for _ in range(2))
            # v_vt: the same V values, pages stored [blocks, kv heads, head_size, page]
            caches[name + "_vt"] = (kc, vc.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2))
            scales[name + "_vt"] = scales[name]
    return dict(q=q, table=table, lens=lens, caches=caches, scales=scales)


def _reference(d, cache):
    """fp32 decode attention over the dequantized cache (torch, the whole batch at once)."""
    import torch
    q, table, lens = d["q"], d["table"].long(), d["lens"].long()
    kc, vc = d["caches"][cache.replace("_vt", "")]
    B, H, D = q.shape
    _, BS, KVH, _ = kc.shape
    out = torch.empty(B, H, D, device=q.device, dtype=torch.float32)
    ks, vs = d["scales"].get(cache, (torch.ones(KVH, device=q.device),) * 2)
    pos = torch.arange(table.shape[1] * BS, device=q.device)
    for b0 in range(0, B, 16):
        sl = slice(b0, b0 + 16)
        rows = table[sl][:, pos // BS], pos % BS
        kf = kc[rows].float() * ks[None, None, :, None]          # [b, L, KVH, D]
        vf = vc[rows].float() * vs[None, None, :, None]
        kf, vf = (x.repeat_interleave(H // KVH, 2) for x in (kf, vf))   # [b, L, H, D]
        s = torch.einsum("bhd,blhd->bhl", q[sl].float(), kf) / math.sqrt(D)
        s = s.masked_fill(pos[None, None, :] >= lens[sl, None, None], float("-inf"))
        out[sl] = torch.einsum("bhl,blhd->bhd", torch.softmax(s, -1), vf)
    return out


def _call(ak, d, cache, out):
    kc, vc = d["caches"][cache]
    kw = {}
    if cache in d["scales"]:
        kw = dict(k_scale=d["scales"][cache][0], v_scale=d["scales"][cache][1])
    return lambda: ak.paged_attention(d["q"], kc, vc, d["table"], d["lens"], out=out, **kw)


def worker_compile(a):
    import torch
    ak = _import_variant(a.variant)
    dev = torch.device("cpu" if a.tiny else "cuda")
    d = _data(a.tiny, dev, zero=True)
    out = torch.empty_like(d["q"])
    for cache, config in json.loads(a.jobs):
        t = time.time()
        with ak.force_config("paged_attention", config):
            _call(ak, d, cache, out)()
        if not a.tiny:
            torch.cuda.synchronize()
        print(f"COMPILED {a.variant} {cache} {cfg_name(config)} {time.time() - t:.1f}s", flush=True)


def worker_time(a):
    import torch
    ak = _import_variant(a.variant)  # before triton (the interpreter switch)
    import triton
    dev = torch.device("cpu" if a.tiny else "cuda")
    d = _data(a.tiny, dev)
    refs = {}
    print("READY", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    for cache, label, config in json.loads(a.jobs):
        res = dict(variant=a.variant, cache=cache, label=label, config=config)
        try:
            if cache not in refs:
                refs[cache] = _reference(d, cache)
            ref = refs[cache]
            out = torch.empty_like(d["q"])
            call = _call(ak, d, cache, out)
            with ak.force_config("paged_attention", config):
                if a.tiny:
                    call()
                    t = time.perf_counter()
                    call()
                    us = (time.perf_counter() - t) * 1e6
                else:
                    call()
                    torch.cuda.synchronize()
                    g = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(g):
                        call()
                    out.fill_(float("nan"))
                    g.replay()
                    torch.cuda.synchronize()
            o = out.float()
            finite = bool(torch.isfinite(o).all())
            res["max_err"] = float((o - ref).abs().max()) if finite else math.inf
            res["rel_err"] = float((o - ref).norm() / ref.norm()) if finite else math.inf
            res["ref_max"] = float(ref.abs().max())
            res["ok"] = finite and res["max_err"] < 2e-2 * max(1.0, res["ref_max"]) and res["rel_err"] < 2e-2
            if not a.tiny:
                us = 1e3 * float(triton.testing.do_bench(g.replay, warmup=25, rep=100, return_mode="median"))
                del g
            res["us"] = us
        except Exception as e:  # noqa: BLE001
            res["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            traceback.print_exc(file=sys.stderr)
        print("RESULT " + json.dumps(res), flush=True)
    print("DONE", flush=True)


# ---------------------------------------------------------------------------------------------
# parent

def env_for(variant, tiny, tmp):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(([] if variant == "base" else [os.path.join(HERE, variant)]) + [ROOT])
    env["PYTHONUNBUFFERED"] = "1"
    env["TRITON_CACHE_DIR"] = os.path.join(tmp, "triton", variant)
    env["ASCEND_KERNELS_CACHE_DIR"] = os.path.join(tmp, "akcache")  # no user-tuned entries
    env["ASCEND_KERNELS_BACKEND"] = "triton"                         # never the reference fallback
    if tiny:
        env["ASCEND_KERNELS_INTERPRET"] = "1"
    return env


def left():
    return BUDGET_S - (time.time() - T0)


def key_of(variant, cache, config):
    return (variant, cache, json.dumps(config, sort_keys=True))


def phase_a(jobs, a, tmp):
    """Compile every job in its own process (parallel); returns {key: why} of the failures."""
    failed = {}
    if a.tiny and not a.tiny_compile:
        return failed
    todo = [(v, c, cf) for v, rows in jobs.items() for c, _, cf in rows]
    running, pending = [], list(todo)
    t_end = T0 + a.compile_s
    while pending or running:
        while pending and len(running) < a.parallel:
            v, c, cf = pending.pop(0)
            log = os.path.join(tmp, f"compile_{len(todo) - len(pending)}.log")
            cmd = [sys.executable, __file__, "--worker", "compile", "--variant", v, "--jobs",
                   json.dumps([[c, cf]])] + (["--tiny"] if a.tiny else [])
            pr = subprocess.Popen(cmd, env=env_for(v, a.tiny, tmp), stdout=open(log, "w"), stderr=subprocess.STDOUT)
            running.append((key_of(v, c, cf), pr, log))
        time.sleep(0.2)
        for item in list(running):
            k, pr, log = item
            if pr.poll() is not None:
                running.remove(item)
                text = open(log).read()
                if "COMPILED" not in text:
                    failed[k] = (text.strip().splitlines() or ["no output"])[-1][:300]
                    print(f"[compile] {k[0]} {k[1]} {cfg_name(json.loads(k[2]))}: FAILED: {failed[k]}", flush=True)
        if time.time() > t_end:
            for k, pr, _ in running:
                pr.kill()
                failed[k] = f"compile not done by {a.compile_s:.0f} s (killed)"
            for v, c, cf in pending:
                failed[key_of(v, c, cf)] = "not compiled (out of time)"
            running, pending = [], []
    print(f"[phase A] {len(todo)} compiles, {len(failed)} failed, at {time.time() - T0:.0f} s", flush=True)
    return failed


class _Lines:
    def __init__(self, pr):
        self.fd, self.buf, self.eof = pr.stdout.fileno(), b"", False

    def readline(self, deadline):
        while b"\n" not in self.buf and not self.eof:
            wait = deadline - time.time()
            if wait <= 0:
                raise TimeoutError("worker too slow")
            if select.select([self.fd], [], [], min(wait, 0.5))[0]:
                chunk = os.read(self.fd, 1 << 16)
                self.eof = not chunk
                self.buf += chunk
        if b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            return line.decode(errors="replace")
        line, self.buf = self.buf, b""
        return line.decode(errors="replace")


def start_workers(jobs, a, tmp, failed):
    workers, results = {}, []
    for v, rows in jobs.items():
        todo = [r for r in rows if key_of(v, r[0], r[2]) not in failed]
        for c, l, cf in rows:
            if key_of(v, c, cf) in failed:
                results.append(dict(variant=v, cache=c, label=l, config=cf, error=failed[key_of(v, c, cf)]))
        if todo:
            cmd = [sys.executable, __file__, "--worker", "time", "--variant", v, "--jobs", json.dumps(todo)] + \
                  (["--tiny"] if a.tiny else [])
            err = open(os.path.join(tmp, f"time_{v}.err"), "w")
            workers[v] = (subprocess.Popen(cmd, env=env_for(v, a.tiny, tmp), stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=err), todo)
    return workers, results


def phase_b(workers, results, tmp):
    for v in ["base"] + [x for x in workers if x != "base"]:
        if v not in workers:
            continue
        pr, todo = workers[v]
        got = 0
        try:
            if left() < 3:
                raise TimeoutError("out of time before its turn")
            out = _Lines(pr)
            line = out.readline(time.time() + max(3.0, left()))
            if line.strip() != "READY":
                raise RuntimeError(f"worker not ready: {line.strip()!r}")
            pr.stdin.write(b"go\n")
            pr.stdin.flush()
            while True:
                line = out.readline(time.time() + max(1.0, left()))
                if line.startswith("RESULT "):
                    results.append(json.loads(line[7:]))
                    got += 1
                elif line.strip() == "DONE" or not line:
                    break
        except Exception as e:  # noqa: BLE001
            tail = " / ".join(open(os.path.join(tmp, f"time_{v}.err")).read().strip().splitlines()[-2:])[-300:]
            for c, l, cf in todo[got:]:
                results.append(dict(variant=v, cache=c, label=l, config=cf,
                                    error=f"{type(e).__name__}: {e}; stderr: {tail}"))
        finally:
            if pr.poll() is None:
                pr.kill()
        print(f"[phase B] {v} done at {time.time() - T0:.0f} s", flush=True)
    return results


def table(results, a):
    def f(x, fmt):
        return "-" if x is None else fmt.format(x)
    bf = next((r.get("us") for r in results if r["variant"] == "base" and r["cache"] == "bf16"), None)
    unit = "us (interpreter wall clock: meaningless)" if a.tiny else "us"
    lines = [f"paged decode {shape(a.tiny)}, CUDA-graph replay median ({unit}); vs bf16 base = us / "
             f"{f(bf, '{:.1f}')}; target <= 0.60x", "",
             "| variant | config | cache | us | vs bf16 base | max err | rel err | check | note |",
             "|---|---|---|---:|---:|---:|---:|---|---|"]
    bad = 0
    for r in results:
        ok = r.get("ok")
        bad += ok is False or "error" in r
        ratio = r["us"] / bf if r.get("us") and bf else None
        note = (r.get("label") or "") + (" " + r["error"].replace("|", "/") if r.get("error") else "")
        lines.append(f"| {r['variant']} | {cfg_name(r['config'])} | {r['cache']} | {f(r.get('us'), '{:.1f}')} | "
                     f"{f(ratio, '{:.2f}x')} | {f(r.get('max_err'), '{:.1e}')} | {f(r.get('rel_err'), '{:.1e}')} | "
                     f"{'-' if ok is None else ('ok' if ok else 'WRONG')} | {note.strip()} |")
    return "\n".join(lines), bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--tiny-compile", action="store_true", help="with --tiny: run phase A too")
    ap.add_argument("--variants", default="")
    ap.add_argument("--worker", choices=("compile", "time"))
    ap.add_argument("--variant")
    ap.add_argument("--jobs")
    ap.add_argument("--parallel", type=int, default=14)
    ap.add_argument("--compile-s", type=float, default=60.0, help="phase A ends by this many s from the start")
    a = ap.parse_args()
    if a.worker:
        {"compile": worker_compile, "time": worker_time}[a.worker](a)
        return
    if a.tiny and os.environ.get("ASCEND_KERNELS_INTERPRET") != "1":
        raise SystemExit("--tiny runs the Triton interpreter: set ASCEND_KERNELS_INTERPRET=1")
    jobs = jobs_tiny() if a.tiny else jobs_full()
    if a.variants:
        jobs = {v: jobs[v] for v in ["base"] + [x for x in a.variants.split(",") if x != "base"]}
    for v in jobs:
        if v != "base" and not os.path.isdir(os.path.join(HERE, v, "ascend_kernels")):
            raise SystemExit(f"missing package copy {HERE}/{v}/ascend_kernels (carry scratch/pa_quant)")
    tmp = tempfile.mkdtemp(prefix="pa_quant_")
    print(f"variants {list(jobs)}; {sum(map(len, jobs.values()))} jobs; tmp {tmp}", flush=True)
    failed = phase_a(jobs, a, tmp)
    workers, results = start_workers(jobs, a, tmp, failed)  # data + refs build while others wait
    results = phase_b(workers, results, tmp)
    text, bad = table(results, a)
    text += f"\n\ntotal {time.time() - T0:.0f} s" + (f"; {bad} rows WRONG or failed" if bad else "; all checks ok")
    print("\n" + text, flush=True)
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "pa_quant.md"), "w") as fh:
            fh.write(text + "\n\nraw: " + json.dumps(results) + "\n")
    if bad:
        print(f"FAIL: {bad} rows WRONG or failed", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
