import json
import warnings

import pytest
import torch

import ascend_kernels as ak
from ascend_kernels.launcher import autotune, device, dispatch
from ascend_kernels.ops import reshape_and_cache as rac


def _problem(tokens=5):
    return rac._make_problem({"tokens": tokens, "kv_heads": 1, "head_size": 16, "block_size": 16},
                             torch.device("cpu"), torch.float32)


def test_interpreter_is_on_without_accelerator():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the interpreter stays off")
    assert device.INTERPRETER_ON, device.interpreter_reason()
    assert device.backend_of(torch.empty(1)) == "cpu"
    assert device.triton_runs_on("cpu")[0]
    assert device.properties(torch.device("cpu"))["num_cores"] >= 1


def test_bucket_and_key():
    assert [autotune.bucket(n) for n in (0, 1, 2, 3, 5, 8, 9, 8192, 8193)] == [0, 1, 2, 4, 8, 8, 16, 8192, 16384]
    spec = dispatch.get_spec("reshape_and_cache")
    assert autotune.key_of(spec, _problem(5)) == autotune.key_of(spec, _problem(7))
    assert autotune.key_of(spec, _problem(5)) != autotune.key_of(spec, _problem(9))


def test_split_config_per_backend():
    config = {"BLOCK_H": 4, "num_warps": 8, "num_stages": 2, "multibuffer": True, "grid_programs_per_core": 2}
    assert autotune.split_config(config, "cuda") == ({"BLOCK_H": 4}, {"num_warps": 8, "num_stages": 2})
    assert autotune.split_config(config, "npu") == ({"BLOCK_H": 4}, {"multibuffer": True})
    assert autotune.split_config(config, "cpu") == ({"BLOCK_H": 4}, {})


def test_every_op_config_space_is_well_formed():
    for name in dispatch.op_names():
        spec = dispatch.get_spec(name)
        for backend, configs in spec.configs.items():
            assert backend in device.BACKENDS and configs, (name, backend)
            for config in configs:
                if backend == "npu":  # Ascend configs carry no num_warps/num_stages
                    assert "num_warps" not in config and "num_stages" not in config, (name, config)


def test_tune_persists_and_is_looked_up(monkeypatch):
    spec = dispatch.get_spec("reshape_and_cache")
    p = _problem()
    monkeypatch.setitem(spec.configs, "cpu", [{"BLOCK_H": 1, "grid_programs_per_core": 1},
                                              {"BLOCK_H": 2, "grid_programs_per_core": 2}])
    best, timings = autotune.tune(spec, p)
    assert len(timings) == 2 and all(isinstance(v, float) for v in timings.values())
    path = autotune.cache_file("cpu", device.device_name(p.device))
    data = json.loads(path.read_text())
    assert data["triton"] == device.TRITON_VERSION and data["ops"]["reshape_and_cache"]["entries"]
    autotune.reset()  # a new process: read back from disk
    config, source = autotune.get_config(spec, "cpu", p)
    assert config == best and source == "tuned cache"
    assert ak.explain("reshape_and_cache", p.key, p.value, p.key_cache, p.value_cache,
                      p.slot_mapping).config_source == "tuned cache"


def _write_cache(payload):
    path = autotune.cache_file("cpu", device.device_name(torch.device("cpu")))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))


@pytest.mark.parametrize("payload,why", [
    ("{not json", "corrupt"),
    ({"format": 1, "backend": "cpu", "device": "some other device", "triton": device.TRITON_VERSION,
      "ops": {}}, "another device"),
    ({"format": 1, "backend": "cpu", "device": "cpu (triton interpreter)", "triton": "0.0.1",
      "ops": {}}, "another device, backend, triton version"),
    ({"format": 1, "backend": "cpu", "device": "cpu (triton interpreter)", "triton": device.TRITON_VERSION,
      "ops": {"reshape_and_cache": {"source": "0123", "entries": {}}}}, "stale"),
    ({"format": 1, "backend": "cpu", "device": "cpu (triton interpreter)", "triton": device.TRITON_VERSION,
      "ops": ["not", "a", "dict"]}, "corrupt"),
])
def test_bad_cache_file_is_ignored_with_one_warning(payload, why):
    _write_cache(payload)
    spec = dispatch.get_spec("reshape_and_cache")
    p = _problem()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            config, source = autotune.get_config(spec, "cpu", p)
    assert source == "heuristic" and config == spec.default_config("cpu", p)
    messages = [str(w.message) for w in caught if "ascend_kernels" in str(w.message)]
    assert len(messages) == 1 and why in messages[0], messages


def test_shipped_defaults_are_used_when_no_user_cache(tmp_path, monkeypatch):
    spec = dispatch.get_spec("reshape_and_cache")
    p = _problem()
    monkeypatch.setattr(autotune, "SHIPPED_DIR", tmp_path / "tuned")
    (tmp_path / "tuned").mkdir()
    shipped = {"BLOCK_H": 2, "grid_programs_per_core": 3}
    autotune.shipped_file("cpu", device.device_name(p.device)).write_text(json.dumps({
        "format": 1, "backend": "cpu", "device": device.device_name(p.device), "triton": "any",
        "ops": {spec.name: {"source": autotune.source_hash(spec),
                            "entries": {autotune.key_of(spec, p): shipped}}}}))
    assert autotune.get_config(spec, "cpu", p) == (shipped, "shipped defaults")


def test_autotune_env_never_times_the_interpreter(monkeypatch):
    monkeypatch.setenv("ASCEND_KERNELS_AUTOTUNE", "1")
    monkeypatch.setattr(autotune, "tune", lambda *a, **k: pytest.fail("timed on the hot path"))
    spec = dispatch.get_spec("reshape_and_cache")
    assert autotune.get_config(spec, "cpu", _problem())[1] == "heuristic"


def test_unknown_op_in_explain():
    with pytest.raises(ValueError, match="unknown op"):
        ak.explain("no_such_op")
