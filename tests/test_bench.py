"""The bench runner: suites, providers, checks, absent/wrong providers, outputs, tune (CPU)."""
import json

import pytest
import torch

from ascend_kernels.bench import problems, providers as prov
from ascend_kernels.bench import runner
from ascend_kernels.bench.suites import shapes_for

ROOF = {"copy_GBps": 10.0, "matmul_TFLOPs": 0.1, "matmul": "fixed for the test"}


def _quick(op, **kw):
    return runner.run_suite(runner.load_suite("quick"), ops=[op], device=torch.device("cpu"),
                            progress=False, roofline=ROOF, **kw)


def _rows(result, provider):
    return [r for r in result["rows"] if r["provider"] == provider]


def test_quick_reshape_and_cache_rows_per_provider():
    res = _quick("reshape_and_cache")
    n_cases = len(runner.load_suite("quick")["ops"]["reshape_and_cache"])
    for name in ("triton", "fallback", "index_copy_"):
        rows = _rows(res, name)
        assert len(rows) == n_cases
        for r in rows:
            assert r["status"] == "ok" and r["detail"] == "exact", r
            assert r["median_ms"] > 0 and r["p20_ms"] <= r["median_ms"] <= r["p80_ms"]
            assert r["gbps"] > 0 and r["roofline"] is not None
    tri = _rows(res, "triton")[0]
    assert tri["speedup_vs_fallback"] is not None and tri["best_peer"] == "index_copy_"
    text = runner.markdown(res)
    assert "| tiny-gqa T=5 Hkv=2 D=32 bs=16 | triton | ok |" in text
    assert "device: cpu" in text and "torch: " in text and "triton: " in text and "torch_npu: " in text
    assert "## Summary" in text


def _counting(build, calls):
    def b(x, s):
        fn = build(x, s)

        def run():
            calls.append(1)
            return fn()
        return run
    return b


def test_wrong_provider_is_flagged_and_not_timed():
    calls = []

    def build_wrong(x, s):
        kc, vc = x["key_cache"].clone(), x["value_cache"].clone()

        def fn():
            kc.view(-1, *kc.shape[2:])[x["slot_mapping"]] = x["key"] + 1  # off by one everywhere
            return kc, vc
        return fn

    wrong = prov.Provider("wrong", "peer", _counting(build_wrong, calls))
    res = _quick("reshape_and_cache", extra_providers={"reshape_and_cache": [wrong]},
                 provider_names=["fallback", "wrong"])
    rows = _rows(res, "wrong")
    assert rows and all(r["status"] == "WRONG" and r["median_ms"] is None for r in rows)
    assert "elements differ" in rows[0]["detail"]
    assert len(calls) == len(rows)  # run once for the check, never timed
    assert "**WRONG**" in runner.markdown(res)
    # a wrong provider is never the best peer
    assert all(r["best_peer"] != "wrong" for r in _rows(res, "fallback"))


def test_absent_and_erroring_providers():
    absent = prov.Provider("ghost", "peer", lambda x, s: None, lambda dev: "ghostlib is not installed")

    def boom(x, s):
        raise RuntimeError("kernel exploded")

    def unsupported(x, s):
        raise prov.Unsupported("this case is not for me")

    extra = [absent, prov.Provider("boom", "peer", boom), prov.Provider("picky", "peer", unsupported)]
    res = _quick("reshape_and_cache", extra_providers={"reshape_and_cache": extra},
                 provider_names=["index_copy_", "ghost", "boom", "picky", "vllm"])
    ghost = _rows(res, "ghost")
    assert len(ghost) == 1 and ghost[0]["status"] == "absent" and "ghostlib" in ghost[0]["detail"]
    assert _rows(res, "vllm")[0]["status"] == "absent"  # CPU: vLLM's kernel is absent
    assert all(r["status"] == "error" and "kernel exploded" in r["detail"] for r in _rows(res, "boom"))
    assert all(r["status"] == "n/a" for r in _rows(res, "picky"))
    text = runner.markdown(res)
    assert "Absent: " in text and "`ghost` (ghostlib is not installed)" in text


MODELS = {"llama-3-8b": (32, 8, 128), "qwen2.5-7b": (28, 4, 128), "mistral-7b": (32, 8, 128),
          "gemma-2-9b": (16, 8, 256), "llama-3-70b-tp8": (8, 1, 128)}


def test_suites_parse_and_hold_the_model_configs():
    models = runner.load_models()
    for name, (h, kvh, d) in MODELS.items():
        m = models[name]
        assert (m["q_heads"], m["kv_heads"], m["head_size"]) == (h, kvh, d), name
    assert models["mistral-7b"]["sliding_window"] == 4096
    assert models["gemma-2-9b"]["softcap"] == 50.0 and models["gemma-2-9b"]["sliding_window"] == 4096
    assert set(runner.suite_names()) >= {"quick", "full"}
    for name in runner.suite_names():
        suite = runner.load_suite(name)
        assert set(suite["ops"]) == set(prov.OPS), name
        for op, shapes in suite["ops"].items():
            mod = prov.op_module(op)
            assert shapes and all(isinstance(mod.label(s), str) for s in shapes)
    full = runner.load_suite("full")["ops"]
    for op in ("flash_attention", "paged_attention"):
        assert {s["model"] for s in full[op]} >= set(MODELS), op
    decode = full["paged_attention"]
    assert min(s["batch"] for s in decode) == 1 and max(s["batch"] for s in decode) == 256
    assert min(s["context"] for s in decode) <= 1024 and max(s["context"] for s in decode) == 32768
    prefill = [s["batch"] * s["seq_len"] for s in full["flash_attention"]]
    assert min(s["seq_len"] for s in full["flash_attention"]) == 512 and max(prefill) == 16384
    vocabs = {s["vocab"] for s in full["topk_topp_sampling"]}
    assert min(vocabs) == 32000 and max(vocabs) == 262144


def test_shapes_for_feed_make_problem():
    from ascend_kernels.launcher import autotune, op as _op

    for op in _op.op_names():
        if op not in prov.OPS:
            continue
        spec = _op.get(op)
        shapes = shapes_for(op, "quick")
        assert shapes and all("dtype" in s for s in shapes)
        p = problems.make(op, shapes[0], "cpu", getattr(torch, shapes[0]["dtype"]))
        assert autotune.key_of(spec, p)


def test_decode_tuning_shapes_keep_window_and_softcap():
    """The tuner tunes the key that the suite's call looks up: a decode case's sliding window and
    softcap reach the tuner's problem (both are in the tuning key)."""
    from ascend_kernels.launcher import autotune, op as _op

    mod = prov.op_module("paged_attention")
    cases = runner.load_suite("full")["ops"]["paged_attention"]
    assert any(s.get("sliding_window") for s in cases) and any(s.get("softcap") for s in cases)
    for s in cases:
        t = {**mod.tune_shape(s), "seqs": 2, "context": 64, "cache_dtype": None}
        key = autotune.key_of(_op.get("paged_attention"), problems.make("paged_attention", t, "cpu", torch.float32))
        assert ("window=True" in key) == bool(s.get("sliding_window")), (mod.label(s), key)
        assert ("softcap=True" in key) == bool(s.get("softcap")), (mod.label(s), key)


def test_sampler_check_rejects_ids_outside_the_set(seed):
    mod = prov.op_module("topk_topp_sampling")
    torch.manual_seed(seed)
    x = mod.make_inputs({"batch": 3, "vocab": 100, "top_k": 5, "top_p": 0.9, "temperature": 0.7},
                        torch.device("cpu"), torch.float32)
    e = mod.oracle(x)
    good = x["logits"].argmax(-1)
    assert mod.check(good, e, x)[0]
    bad = x["logits"].argmin(-1)
    ok, detail = mod.check(bad, e, x)
    assert not ok and "outside" in detail
    assert not mod.check((good, e["probs"] * 2), e, x)[0]


TINY_SUITE = ("name: tiny\ndtype: float16\nwarmup_ms: 1\nrep_ms: 5\nops:\n  reshape_and_cache:\n"
              "    - {tokens: 5, kv_heads: 2, head_size: 32, block_size: 16}\n")


@pytest.fixture
def tiny_suite(tmp_path):
    """One tiny reshape_and_cache case: the quick suite cut to what runs in a second on CPU."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SUITE)
    return str(path)


def _bench(argv):
    from ascend_kernels import cli

    return cli.main(["bench", "--device", "cpu", "--no-progress", *argv])


def test_bench_writes_its_results_folder(tiny_suite, tmp_path, capsys):
    out_dir = tmp_path / "res"
    assert _bench(["--suite", tiny_suite, "--providers", "triton", "fallback", "index_copy_",
                   "--results", str(out_dir)]) == 0
    captured = capsys.readouterr()
    assert "## reshape_and_cache" in captured.out and "host µs/call" in captured.out
    assert f"results in {out_dir}" in captured.err
    names = {p.name for p in out_dir.iterdir()}
    assert {"bench.md", "bench.csv", "bench.json", "command.txt"} <= names
    data = json.loads((out_dir / "bench.json").read_text())
    assert data["header"]["suite"] == "tiny" and data["header"]["command"].startswith("ascend-kernels bench")
    rows = {r["provider"]: r for r in data["rows"]}
    assert set(rows) == {"triton", "fallback", "index_copy_"}
    for r in rows.values():  # kernel time and host time per call, measured in the same run
        assert r["status"] == "ok" and r["median_ms"] > 0 and r["host_us"] > 0, r
    assert "host_us" in (out_dir / "bench.csv").read_text()
    assert (out_dir / "bench.md").read_text() == captured.out
    try:
        import matplotlib  # noqa: F401
        assert "reshape_and_cache.png" in names
    except ImportError:
        pass


def test_bench_results_go_to_a_fresh_folder_by_default(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["--suite", "quick", "--op", "reshape_and_cache", "--providers", "fallback"]
    assert _bench(argv) == 0 and _bench(argv) == 0
    runs = sorted((tmp_path / "ascend_kernels_results").iterdir())
    assert len(runs) == 2 and all(p.name.endswith(("-cpu", "-cpu-2")) for p in runs)
    assert all((p / "bench.json").exists() for p in runs)
    err = capsys.readouterr().err
    assert all(f"results in {p.relative_to(tmp_path)}" in err for p in runs)


def test_host_us_per_call_times_back_to_back_calls():
    calls = []
    us = runner.host_us_per_call(lambda: calls.append(1), torch.device("cpu"), median_ms=0.001, budget_ms=10)
    assert len(calls) == 100 and us > 0
    calls.clear()
    runner.host_us_per_call(lambda: calls.append(1), torch.device("cpu"), median_ms=50.0, budget_ms=20)
    assert len(calls) == 1  # one slow call is timed once


def test_cpu_bench_reruns_itself_with_the_interpreter(tmp_path, monkeypatch, capsys):
    import sys

    from ascend_kernels.launcher import device as _device

    execs = []

    def fake_execve(path, argv, env):
        execs.append((path, argv, env))
        raise SystemExit(0)

    monkeypatch.setattr(runner.os, "execve", fake_execve)
    monkeypatch.setattr(_device, "INTERPRETER_ON", False)
    monkeypatch.delenv(_device.INTERPRET_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    argv = ["--suite", "quick", "--op", "reshape_and_cache"]
    assert _bench([*argv, "--providers", "fallback"]) == 0  # no triton provider: no re-run
    assert not execs
    capsys.readouterr()
    with pytest.raises(SystemExit):
        _bench(argv)
    ((path, new_argv, env),) = execs
    assert path == sys.executable and env[_device.INTERPRET_ENV] == "1"
    assert new_argv == [sys.executable, "-m", "ascend_kernels.cli", "bench", "--device", "cpu",
                        "--no-progress", *argv]
    assert "running again with ASCEND_KERNELS_INTERPRET=1" in capsys.readouterr().err


def test_cpu_bench_from_a_fresh_process(tiny_suite, tmp_path):
    """What a new user runs: no interpreter switch set; the bench turns it on, runs the triton
    provider's kernels and writes its results folder in the current directory."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("ASCEND_KERNELS_INTERPRET", "TRITON_INTERPRET")}
    proc = subprocess.run([sys.executable, "-m", "ascend_kernels.cli", "bench", "--device", "cpu", "--suite",
                           tiny_suite, "--providers", "triton", "fallback", "--no-progress"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("running again with ASCEND_KERNELS_INTERPRET=1") == 1
    (run,) = (tmp_path / "ascend_kernels_results").iterdir()
    rows = json.loads((run / "bench.json").read_text())["rows"]
    assert [(r["provider"], r["status"]) for r in rows] == [("triton", "ok"), ("fallback", "ok")]


def test_plot_or_message(tmp_path, capsys):
    res = _quick("reshape_and_cache", provider_names=["fallback", "index_copy_"])
    written = runner.plot(res, tmp_path)
    try:
        import matplotlib  # noqa: F401
        assert [p.name for p in written] == ["reshape_and_cache.png"]
        assert (tmp_path / "reshape_and_cache.png").stat().st_size > 1000
    except ImportError:
        assert written == [] and "matplotlib" in capsys.readouterr().err


def test_tune_on_cpu_and_export(tmp_path, monkeypatch, capsys):
    import argparse

    from ascend_kernels import tuning
    from ascend_kernels.launcher import autotune, device as _device, op

    parser = argparse.ArgumentParser()
    tuning.add_tune_arguments(parser)
    args = parser.parse_args(["--suite", "quick", "--op", "reshape_and_cache", "--device", "cpu",
                              "--no-progress", "--export"])
    # a tuned entry as a GPU tune would leave it, then --export writes the shipped file
    spec = op.get("reshape_and_cache")
    tab = autotune.table("cpu", _device.device_name(torch.device("cpu")))
    tab.store(spec, "tokens~8", {"BLOCK_H": 8, "grid_programs_per_core": 1}, 0.5)
    tab.save()
    monkeypatch.setattr(autotune, "SHIPPED_DIR", tmp_path / "tuned")
    assert tuning.run_tune(args) == 0
    out = capsys.readouterr().out
    assert "| reshape_and_cache |" in out and "nothing to time" in out and "nothing to tune on CPU" in out
    (path,) = (tmp_path / "tuned").glob("*.json")
    data = json.loads(path.read_text())
    assert data["backend"] == "cpu" and "tokens~8" in data["ops"]["reshape_and_cache"]["entries"]
    autotune.reset()
    assert autotune.table("cpu", _device.device_name(torch.device("cpu"))).shipped  # the launcher reads it


def test_export_merges_with_the_shipped_file(tmp_path, monkeypatch):
    """Ops and keys tuned in separate runs end up in one shipped file; entries of an older
    kernel source are dropped."""
    from ascend_kernels import tuning
    from ascend_kernels.launcher import autotune, device as _device, op

    monkeypatch.setattr(autotune, "SHIPPED_DIR", tmp_path / "tuned")
    cpu = torch.device("cpu")
    name = _device.device_name(cpu)
    runs = (("reshape_and_cache", "tokens~8", {"BLOCK_H": 4}),
            ("paged_attention", "seqs~2", {"grid_step_tokens": 64}),
            ("reshape_and_cache", "tokens~64", {"BLOCK_H": 8}))
    for op_name, key, config in runs:  # each run tunes one op, from an empty user cache
        autotune.cache_file("cpu", name).unlink(missing_ok=True)
        autotune.reset()
        tab = autotune.table("cpu", name)
        tab.store(op.get(op_name), key, config, 0.5)
        tab.save()
        path = tuning.export_shipped(cpu)
    data = json.loads(path.read_text())
    assert {k: sorted(v["entries"]) for k, v in data["ops"].items()} == \
        {"reshape_and_cache": ["tokens~64", "tokens~8"], "paged_attention": ["seqs~2"]}
    data["ops"]["reshape_and_cache"]["source"] = "an older kernel"
    path.write_text(json.dumps(data))
    autotune.cache_file("cpu", name).unlink()
    autotune.reset()
    tab = autotune.table("cpu", name)
    tab.store(op.get("topk_topp_sampling"), "batch~1", {"CHUNK": 512}, 0.5)
    tab.save()
    data = json.loads(tuning.export_shipped(cpu).read_text())
    assert sorted(data["ops"]) == ["paged_attention", "topk_topp_sampling"]
    assert data["arch"] == _device.properties(cpu).get("arch")  # what a same-arch device matches
    # `tune --export-only`: the same, timing nothing
    import argparse

    parser = argparse.ArgumentParser()
    tuning.add_tune_arguments(parser)
    data["ops"].pop("paged_attention")
    path.write_text(json.dumps(data))
    assert tuning.run_tune(parser.parse_args(["--device", "cpu", "--export-only"])) == 0
    assert sorted(json.loads(path.read_text())["ops"]) == ["topk_topp_sampling"]


def test_compile_worker_takes_its_slice_of_the_search_space():
    """`tune --jobs N` compiles a shape's configs in worker processes, each taking a slice of the
    search space (under the CPU interpreter, compiling a launch is running it)."""
    from ascend_kernels import tuning
    from ascend_kernels.launcher import autotune, op

    shape = runner.load_suite("quick")["ops"]["reshape_and_cache"][0]
    n = len(autotune.search_space(op.get("reshape_and_cache"), "cpu"))
    assert tuning._compile_slice(("reshape_and_cache", shape, "cpu", "float16", 1, 2)) == min(2, n - 1)


def test_flash_window_case_without_causal_flag_checks_ok():
    """sliding_window=W is (W - 1, 0) for every provider, so a suite case that also says
    causal: false is judged against the same band our op computes."""
    suite = runner.load_suite("quick")
    win = [c for c in suite["ops"]["flash_attention"] if c.get("sliding_window")][0]
    suite = {**suite, "ops": {"flash_attention": [{**win, "causal": False}]}}
    res = runner.run_suite(suite, ops=["flash_attention"], device=torch.device("cpu"),
                           progress=False, roofline=ROOF)
    for name in ("triton", "fallback"):
        rows = _rows(res, name)
        assert len(rows) == 1 and rows[0]["status"] == "ok", rows


def test_the_test_command_is_hermetic():
    """tests/lanes.sh installs the dev extras (with the numpy pin triton-ascend's interpreter
    needs), writes only under its private temporary folder and fails if the checkout changed;
    no test names a fixed temporary or cache path."""
    import pathlib
    import tomllib

    root = pathlib.Path(__file__).resolve().parent.parent
    dev = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert "numpy<2.4" in dev and "pytest" in dev
    lanes = (root / "tests" / "lanes.sh").read_text()
    assert '-e ".[dev]"' in lanes and "mktemp -d" in lanes
    for private in ('--results "$out/', '--out "$out/', '--basetemp="$out/', 'ASCEND_KERNELS_CACHE_DIR="$out/',
                    'TRITON_CACHE_DIR="$out/', 'MPLCONFIGDIR="$out/'):
        assert private in lanes, private
    assert "git status --porcelain" in lanes and lanes.rstrip().endswith("fi")
    fixed = ("/" + "tmp/", "~/" + ".cache", "Path" + ".home()")
    for path in (root / "tests").glob("*.py"):
        text = path.read_text()
        assert not any(f in text for f in fixed), path.name
