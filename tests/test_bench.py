"""The bench runner: suites, providers, checks, absent/wrong providers, outputs, tune (CPU)."""
import json

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


def test_cli_writes_csv_json_markdown(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    runner.add_bench_arguments(parser)
    args = parser.parse_args(["--suite", "quick", "--op", "reshape_and_cache", "--providers", "fallback",
                              "index_copy_", "--csv", str(tmp_path / "b.csv"), "--json",
                              str(tmp_path / "b.json"), "--no-progress", "--device", "cpu"])
    assert runner.run_bench(args) == 0
    out = capsys.readouterr().out
    assert "## reshape_and_cache" in out and "index_copy_" in out
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["header"]["suite"] == "quick" and data["rows"]
    csv_text = (tmp_path / "b.csv").read_text()
    assert "median_ms" in csv_text and "index_copy_" in csv_text


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
    assert "| reshape_and_cache |" in out and "nothing to time" in out
    (path,) = (tmp_path / "tuned").glob("*.json")
    data = json.loads(path.read_text())
    assert data["backend"] == "cpu" and "tokens~8" in data["ops"]["reshape_and_cache"]["entries"]
    autotune.reset()
    assert autotune.table("cpu", _device.device_name(torch.device("cpu"))).shipped  # the launcher reads it


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
