"""The ascend-kernels CLI: env, explain, and the bench/tune/check entry points are wired."""
import json

import pytest

from ascend_kernels import cli
from ascend_kernels.launcher import autotune, device


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
    assert "shipped tuning" in out and "cuda__nvidia-h100-80gb-hbm3.json" in out


def test_explain_prints_the_decision_and_key(capsys):
    assert cli.main(["explain", "reshape_and_cache", "--device", "cpu", "--shape", "tokens=9",
                     "kv_heads=2", "head_size=64", "block_size=16"]) == 0
    out = capsys.readouterr().out
    assert "reshape_and_cache on cpu: triton kernel" in out and "tuning key:" in out


def test_explain_names_a_missing_shape_field(capsys):
    assert cli.main(["explain", "reshape_and_cache", "--device", "cpu", "--shape", "tokens=9"]) == 2
    assert "kv_heads" in capsys.readouterr().err


def test_explain_forced_fallback(capsys, monkeypatch):
    monkeypatch.setenv("ASCEND_KERNELS_BACKEND", "fallback")
    assert cli.main(["explain", "paged_attention", "--device", "cpu", "--shape", "seqs=2", "heads=4",
                     "kv_heads=2", "head_size=32", "block_size=16", "context=20"]) == 0
    assert "because ASCEND_KERNELS_BACKEND=fallback" in capsys.readouterr().out


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
