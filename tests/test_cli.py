"""The ascend-kernels CLI: env, explain (the suites' shape keys, validated by the op), usage
errors (status 2, the valid choices named, never a traceback), and the bench/tune/check wiring."""
import json
import re

import pytest
import torch

from ascend_kernels import cli, tuning
from ascend_kernels.bench import runner
from ascend_kernels.launcher import autotune, device

PAGED = ["--shape", "batch=3", "context=50", "q_heads=4", "kv_heads=2", "head_size=32", "block_size=16"]


def usage_error(capsys, argv) -> str:
    """Run the CLI, expect a usage error; its stderr."""
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "error:" in err and "usage:" in err and "Traceback" not in err
    return err


def test_env_reports_versions_backend_and_cache(capsys, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ASCEND_KERNELS_CACHE_DIR", str(cache))
    cache.mkdir()
    (cache / "cpu__x__triton-1.json").write_text(json.dumps(
        {"format": 1, "backend": "cpu", "device": "x", "triton": "1",
         "ops": {"reshape_and_cache": {"source": "s", "entries": {"k": {}, "k2": {}}}}}))
    (cache / "broken.json").write_text("{")
    assert cli.main(["env"]) == 0
    out = capsys.readouterr().out
    assert f"triton           {device.TRITON_VERSION}" in out and "torch " in out
    assert "backend" in out and str(cache) in out
    assert "reshape_and_cache: 2 keys" in out and "broken.json: unreadable" in out
    assert "shipped tuning" in out and "cuda__nvidia-h200.json" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU message")
def test_env_and_tune_agree_that_cpu_has_nothing_to_tune(capsys):
    times, advice = tuning.tune_advice("cpu")
    assert not times and "nothing to tune on CPU" in advice and "GPU" in advice and "NPU" in advice
    assert cli.main(["env"]) == 0
    assert advice in capsys.readouterr().out
    assert cli.main(["tune", "--suite", "quick", "--op", "reshape_and_cache", "--device", "cpu",
                     "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert advice in out and "nothing to time" in out and "cache:" not in out


def test_tune_advice_on_a_device_names_what_tune_does():
    times, advice = tuning.tune_advice("cuda")
    ok = device.triton_runs_on("cuda")[0]
    assert times == ok
    assert ("times each op's search space" in advice) if ok else advice.startswith("nothing to tune")


def test_explain_takes_the_suite_keys(capsys):
    assert cli.main(["explain", "reshape_and_cache", "--device", "cpu", "--shape", "tokens=9",
                     "kv_heads=2", "head_size=64", "block_size=16"]) == 0
    out = capsys.readouterr().out
    assert "reshape_and_cache on cpu: triton kernel" in out and "tuning key:" in out
    assert cli.main(["explain", "paged_attention", "--device", "cpu", *PAGED]) == 0
    out = capsys.readouterr().out
    assert "paged_attention on cpu: triton kernel" in out and "heads=4" in out and "kv_heads=2" in out


def test_explain_reports_every_missing_and_unknown_key_and_bad_value_at_once(capsys):
    err = usage_error(capsys, ["explain", "paged_attention", "--device", "cpu", "--shape", "batch=3",
                               "seqs=2", "heads=4", "block_size=abc"])
    assert "missing context, q_heads, kv_heads, head_size" in err
    assert "unknown seqs, heads" in err and "block_size=abc is not a number" in err
    err = usage_error(capsys, ["explain", "reshape_and_cache", "--device", "cpu", "--shape", "tokens=9"])
    assert "missing kv_heads, head_size, block_size" in err


def test_explain_validates_through_the_op(capsys):
    err = usage_error(capsys, ["explain", "paged_attention", "--device", "cpu", "--shape", "batch=3",
                               "context=50", "q_heads=31", "kv_heads=8", "head_size=32", "block_size=16"])
    assert "paged_attention:" in err and "multiple" in err and "31" in err


def test_explain_merges_a_model(capsys):
    assert cli.main(["explain", "paged_attention", "--device", "cpu", "--model", "qwen2.5-7b",
                     "--shape", "batch=2", "context=40", "block_size=16", "sliding_window=8"]) == 0
    out = capsys.readouterr().out
    assert "heads=28" in out and "kv_heads=4" in out and "head_size=128" in out
    assert "window=True" in out and "not part of the decision" not in out  # the window decides too
    assert cli.main(["explain", "flash_attention", "--device", "cpu", "--model", "llama-3-8b",
                     "--shape", "batch=1", "seq_len=16", "block_size=16"]) == 0
    out = capsys.readouterr().out  # a page size without `paged`: said to be unused, not dropped silently
    assert "block_size=0" in out and "not part of the decision" in out and out.rstrip().endswith("block_size")
    assert cli.main(["explain", "topk_topp_sampling", "--device", "cpu", "--shape", "model=mistral-7b",
                     "batch=2", "top_k=5"]) == 0
    assert "vocab=32000" in capsys.readouterr().out
    err = usage_error(capsys, ["explain", "topk_topp_sampling", "--device", "cpu", "--model", "nosuch",
                               "--shape", "batch=2"])
    assert "unknown model 'nosuch'" in err and "llama-3-8b" in err


def test_explain_forced_fallback(capsys, monkeypatch):
    monkeypatch.setenv("ASCEND_KERNELS_BACKEND", "fallback")
    assert cli.main(["explain", "paged_attention", "--device", "cpu", *PAGED]) == 0
    assert "because ASCEND_KERNELS_BACKEND=fallback" in capsys.readouterr().out


QUICK_RAC = ["--suite", "quick", "--op", "reshape_and_cache", "--device", "cpu", "--no-progress"]


@pytest.mark.parametrize("argv, names", [
    (["bench", "--suite", "nosuch"], ["unknown suite 'nosuch'", "quick", "full"]),
    (["tune", "--suite", "nosuch"], ["unknown suite 'nosuch'", "quick", "full"]),
    (["bench", "--device", "cuda:99"], ["--device 'cuda:99'", "cpu"]),
    (["tune", "--device", "cuda:99"], ["--device 'cuda:99'", "cpu"]),
    (["explain", "reshape_and_cache", "--device", "cuda:99"], ["--device 'cuda:99'", "cpu"]),
    (["bench", *QUICK_RAC, "--providers", "nosuch"], ["unknown provider 'nosuch'", "triton", "index_copy_"]),
    (["bench", *QUICK_RAC, "--providers", "fallback", "tritn"], ["'tritn'", "triton, triton-heuristic, fallback"]),
    (["bench", "--op", "nosuch"], ["invalid choice: 'nosuch'", "paged_attention"]),
    (["tune", "--op", "nosuch"], ["invalid choice: 'nosuch'", "paged_attention"]),
    (["explain", "nosuch"], ["invalid choice: 'nosuch'", "paged_attention"]),
    (["explain", "reshape_and_cache", "--dtype", "int3"], ["invalid choice: 'int3'", "bfloat16"]),
])
def test_usage_errors_exit_2_naming_the_choices(argv, names, capsys):
    err = usage_error(capsys, argv)
    for name in names:
        assert name in err, (name, err)


def test_unavailable_accelerators_are_usage_errors(capsys):
    for name in ("cuda", "npu"):
        if name in runner.available_devices():
            continue
        assert "choose from: cpu" in usage_error(capsys, ["bench", "--device", name])


def test_a_suite_without_the_op_is_a_usage_error(tmp_path, capsys):
    suite = tmp_path / "one.yaml"
    suite.write_text("name: one\nops:\n  reshape_and_cache:\n"
                     "    - {tokens: 5, kv_heads: 2, head_size: 32, block_size: 16}\n")
    err = usage_error(capsys, ["bench", "--suite", str(suite), "--op", "paged_attention"])
    assert "suite one has no case for paged_attention" in err and "reshape_and_cache" in err


@pytest.mark.parametrize("command", ["bench", "tune", "check"])
def test_subcommands_are_wired(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    assert "--op" in capsys.readouterr().out


def test_check_help_names_the_cache_pruning_and_outputs(capsys):
    with pytest.raises(SystemExit):
        cli.main(["check", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "cached" in out and "pruned" in out and "stdout" in out
    assert "--out PATH" in out and "--dump-ir DIR" in out and "--jobs" in out


def test_shipped_defaults_file_is_well_formed():
    files = list(autotune.SHIPPED_DIR.glob("*.json"))
    assert files
    for path in files:
        data = json.loads(path.read_text())
        assert data["format"] == autotune.FORMAT and path.name.startswith(data["backend"] + "__")
        for op in data["ops"].values():
            assert op["source"] and op["entries"]


ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def test_sampling_paths_are_documented_to_draw_different_tokens():
    import ascend_kernels as ak

    doc = " ".join(ak.topk_topp_sampling.__doc__.split())
    assert "draw different tokens for the same seeds" in doc and "same filtered distribution" in doc
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "Sampling paths draw different tokens" in readme


def test_readme_opens_with_the_two_commands_and_keeps_figures_in_one_place():
    text = (ROOT / "README.md").read_text()
    blocks = text.split("```")
    assert "ascend-kernels bench" in blocks[1] and "pip install" in blocks[1]
    assert blocks[3].split("\n", 1)[1].strip() == "bash tests/lanes.sh"
    assert text.index("```") < text.index("\n## ")  # the commands come before any section
    # every figure comes from a results file, and every results file cited exists
    perf = text[text.index("## Performance (NVIDIA H200)"):]
    cited = re.findall(r"`(bench/results/[^`]+)`", perf)
    assert cited and all((ROOT / c).exists() for c in cited), cited
    assert "DESIGN.md" not in text and (ROOT / "docs" / "design.md").exists()
    for link in ("docs/design.md", "docs/transformers.md", "docs/ascend_fallback.md", "docs/ascend_check.md"):
        assert f"]({link})" in text and (ROOT / link).exists(), link
