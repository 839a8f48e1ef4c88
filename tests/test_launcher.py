import json
import warnings
import weakref

import pytest

import torch

import ascend_kernels as ak
from ascend_kernels import backends
from ascend_kernels.bench import problems
from ascend_kernels.launcher import autotune, configs, device, op
from ascend_kernels.reference import flash_attention as flash_ref

from .conftest import poison_like


def _problem(tokens=5):
    return problems.make("reshape_and_cache", {"tokens": tokens, "kv_heads": 1, "head_size": 16,
                                               "block_size": 16}, "cpu", torch.float32)


def test_interpreter_is_on_when_asked_for():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the interpreter stays off")
    assert device.INTERPRETER_ON, device.interpreter_reason()
    assert device.backend_of(torch.empty(1)) == "cpu"
    assert device.triton_runs_on("cpu")[0]
    assert device.properties(torch.device("cpu"))["num_aicore"] >= 1


def test_bucket_and_key():
    assert [autotune.bucket(n) for n in (0, 1, 2, 3, 5, 8, 9, 8192, 8193)] == [0, 1, 2, 4, 8, 8, 16, 8192, 16384]
    defn = op.get("reshape_and_cache")
    assert autotune.key_of(defn, _problem(5)) == autotune.key_of(defn, _problem(7))
    assert autotune.key_of(defn, _problem(5)) != autotune.key_of(defn, _problem(9))


def test_split_config_per_backend():
    config = {"BLOCK_H": 4, "num_warps": 8, "num_stages": 2, "multibuffer": True, "grid_programs_per_core": 2}
    assert configs.split_config(config, "cuda") == ({"BLOCK_H": 4}, {"num_warps": 8, "num_stages": 2})
    assert configs.split_config(config, "npu") == ({"BLOCK_H": 4}, {"multibuffer": True})
    assert configs.split_config(config, "cpu") == ({"BLOCK_H": 4}, {})


@pytest.mark.parametrize("backend", backends.NAMES)
@pytest.mark.parametrize("name", op.op_names())
def test_every_search_space_is_well_formed(name, backend):
    space = configs.search_space(name, backend)
    assert space and all(c not in space[:i] for i, c in enumerate(space))
    keys = set(configs.default_config(name, backend, {}))
    for config in space:
        assert set(config) == keys, (config, keys)  # the heuristic and the space name the same knobs
        if backend == "npu":  # Ascend configs carry no num_warps/num_stages
            assert "num_warps" not in config and "num_stages" not in config, config


def test_heuristic_rules_apply_in_order():
    base = configs.default_config("flash_attention", "cuda", {"head_block": 256})
    assert base["BLOCK_M"] == 64 and base["BLOCK_N"] == 32
    hopper = configs.default_config("flash_attention", "cuda", {"head_block": 128, "tma": True})
    assert (hopper["BLOCK_M"], hopper["BLOCK_N"], hopper["num_warps"]) == (128, 128, 8)
    short = configs.default_config("flash_attention", "cuda",
                                   {"head_block": 128, "tma": True, "short_prefill": True})
    assert (short["BLOCK_M"], short["BLOCK_N"]) == (64, 64)
    assert configs.default_config("paged_attention", "cuda", {"tasks_per_core": 0.5})["grid_step_tokens"] == 64


def test_tune_persists_and_is_looked_up():
    defn = op.get("reshape_and_cache")
    p = _problem()
    space = [{"BLOCK_H": 1, "grid_programs_per_core": 1}, {"BLOCK_H": 2, "grid_programs_per_core": 2}]
    best, timings = autotune.tune(defn, p, configs=space)
    assert len(timings) == 2 and all(isinstance(v, float) for v in timings.values())
    path = autotune.cache_file("cpu", device.device_name(p.device))
    data = json.loads(path.read_text())
    assert data["triton"] == device.TRITON_VERSION and data["ops"]["reshape_and_cache"]["entries"]
    autotune.reset()  # a new process: read back from disk
    config, source = autotune.get_config(defn, "cpu", p)
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
    defn = op.get("reshape_and_cache")
    p = _problem()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            config, source = autotune.get_config(defn, "cpu", p)
    assert source == "heuristic" and config == configs.default_config(defn.name, "cpu", {})
    messages = [str(w.message) for w in caught if "ascend_kernels" in str(w.message)]
    assert len(messages) == 1 and why in messages[0], messages


def test_shipped_defaults_are_used_when_no_user_cache(tmp_path, monkeypatch):
    defn = op.get("reshape_and_cache")
    p = _problem()
    monkeypatch.setattr(autotune, "SHIPPED_DIR", tmp_path / "tuned")
    (tmp_path / "tuned").mkdir()
    shipped = {"BLOCK_H": 2, "grid_programs_per_core": 3}
    autotune.shipped_file("cpu", device.device_name(p.device)).write_text(json.dumps({
        "format": 1, "backend": "cpu", "device": device.device_name(p.device), "triton": "any",
        "ops": {defn.name: {"source": autotune.source_hash(defn, "cpu"),
                            "entries": {autotune.key_of(defn, p): shipped}}}}))
    assert autotune.get_config(defn, "cpu", p) == (shipped, "shipped defaults")


def test_autotune_env_never_times_the_interpreter(monkeypatch):
    monkeypatch.setenv("ASCEND_KERNELS_AUTOTUNE", "1")
    monkeypatch.setattr(autotune, "tune", lambda *a, **k: pytest.fail("timed on the hot path"))
    assert autotune.get_config(op.get("reshape_and_cache"), "cpu", _problem())[1] == "heuristic"


def test_unknown_op_in_explain():
    with pytest.raises(ValueError, match="unknown op"):
        ak.explain("no_such_op")


# --- the launch plan: cached per signature, never skipping a check --------------------------

def _cache_args(dtype=torch.float16, device="cpu"):
    p = problems.make("reshape_and_cache", {"tokens": 6, "kv_heads": 2, "head_size": 32, "block_size": 16},
                      device, dtype)
    return p.key, p.value, p.key_cache, p.value_cache, p.slot_mapping


@pytest.mark.parametrize("backend", ["auto", "fallback"])
def test_cached_signature_still_rejects_bad_inputs(backend, monkeypatch):
    """After a good call has cached its plan, a value-free error is still raised before any
    kernel runs: a wrong device, a wrong dtype, a non-contiguous head dimension (that last one
    is no error: it takes the fallback, with the reason)."""
    monkeypatch.setenv("ASCEND_KERNELS_BACKEND", backend)
    key, value, kc, vc, slots = _cache_args()
    for _ in range(2):
        ak.reshape_and_cache(key, value, kc, vc, slots)
    assert len(ak.reshape_and_cache.plans) == 1
    before = kc.clone()
    with pytest.raises(TypeError, match="slot_mapping"):
        ak.reshape_and_cache(key, value, kc, vc, slots.float())
    with pytest.raises(TypeError, match="key must have dtype"):
        ak.reshape_and_cache(key.to(torch.int16), value, kc, vc, slots)
    with pytest.raises(ValueError, match="is on meta"):
        ak.reshape_and_cache(key, value, kc, vc, slots.to("meta"))
    assert torch.equal(kc, before)
    wide = torch.empty(key.shape[0], key.shape[1], key.shape[2] * 2, dtype=key.dtype)[..., ::2]
    wide.copy_(key)
    if backend == "auto":
        why = ak.explain("reshape_and_cache", wide, value, kc, vc, slots).reason
        assert "not contiguous in head_size" in why
    ak.reshape_and_cache(wide, value, kc, vc, slots)
    assert len(ak.reshape_and_cache.plans) == 2


def test_cached_plan_rebinds_every_call(seed):
    """A replayed call writes the new call's tensors, not the first call's."""
    torch.manual_seed(seed)
    key, value, kc, vc, slots = _cache_args()
    ak.reshape_and_cache(key, value, kc, vc, slots)
    key2, value2 = torch.randn_like(key), torch.randn_like(value)
    kc2, vc2 = torch.full_like(kc, float("nan")), torch.full_like(vc, float("nan"))
    slots2 = slots.flip(0).contiguous()
    ak.reshape_and_cache(key2, value2, kc2, vc2, slots2)
    assert len(ak.reshape_and_cache.plans) == 1
    for i, s in enumerate(slots2.tolist()):
        assert torch.equal(kc2[s // 16, s % 16], key2[i]) and torch.equal(vc2[s // 16, s % 16], value2[i])


def test_last_signature_replays_without_the_key_and_alignment_still_counts(seed, monkeypatch):
    """A call with the last call's signature replays its plan through the plan's own check
    (tensors' metadata in C++, no signature key is built); a tensor of the same dtype, shape and
    strides at an address that is not 16-byte aligned does not take a plan made for an aligned
    one (Triton specialised that kernel on the alignment)."""
    torch.manual_seed(seed)
    key, value, kc, vc, slots = _cache_args()
    ak.reshape_and_cache(key, value, kc, vc, slots)

    def no_key(_):
        raise AssertionError("the signature key was built")
    with monkeypatch.context() as m:
        m.setattr(op, "_signature", no_key)
        key2 = torch.randn_like(key)
        ak.reshape_and_cache(key2, value, kc, vc, slots)
    assert len(ak.reshape_and_cache.plans) == 1
    buf = torch.empty(slots.numel() + 1, dtype=slots.dtype)
    shifted = buf[1:]
    shifted.copy_(slots.flip(0))
    assert shifted.data_ptr() % 16 and shifted.stride() == slots.stride()
    kc.fill_(float("nan"))
    ak.reshape_and_cache(key2, value, kc, vc, shifted)
    assert len(ak.reshape_and_cache.plans) == 2
    for i, s in enumerate(shifted.tolist()):
        assert s < 0 or torch.equal(kc[s // 16, s % 16], key2[i])


def test_without_tensor_guards_plans_replay_through_the_signature_key(seed, monkeypatch):
    """A torch without the C++ tensor check: no plan has a `match`, and a repeated call still
    replays its plan, found by its signature key."""
    monkeypatch.setattr(op, "TensorGuards", None)
    autotune.reset()
    torch.manual_seed(seed)
    key, value, kc, vc, slots = _cache_args()
    ak.reshape_and_cache(key, value, kc, vc, slots)

    def no_first_call(*_):
        raise AssertionError("the call did not replay a plan")
    key2 = torch.randn_like(key)
    with monkeypatch.context() as m:
        m.setattr(ak.reshape_and_cache, "_first_call", no_first_call)
        ak.reshape_and_cache(key2, value, kc, vc, slots)
    (plan,) = ak.reshape_and_cache.plans.values()
    assert plan.match is None and ak.reshape_and_cache.last is None
    for i, s in enumerate(slots.tolist()):
        assert s < 0 or torch.equal(kc[s // 16, s % 16], key2[i])


def test_replayed_plan_makes_fresh_outputs_and_passes_given_ones_through(seed):
    """A replayed call allocates a new output when none is given (never the first call's), and
    writes and returns the one it is given; a host float scale becomes a tensor on every call."""
    p = problems.make("paged_attention", {"seqs": 2, "heads": 4, "kv_heads": 2, "head_size": 32,
                                          "block_size": 16, "context": 40}, "cpu", torch.float16)
    args = (p.query, p.key_cache, p.value_cache, p.block_table, p.seq_lens)
    first, second = ak.paged_attention(*args), ak.paged_attention(*args)
    assert len(ak.paged_attention.plans) == 1
    assert first.data_ptr() != second.data_ptr() and torch.equal(first, second)
    out = torch.full_like(p.query, float("nan"))
    for _ in range(2):
        assert ak.paged_attention(*args, out=out) is out
        assert torch.equal(out, first)
    key, value, kc, vc, slots = _cache_args()
    codes = [torch.zeros(kc.shape, dtype=torch.int8), torch.zeros(vc.shape, dtype=torch.int8)]
    for key in (key, torch.randn_like(key)):  # one plan: the scale is made a tensor per call
        ak.reshape_and_cache(key, value, *codes, slots, k_scale=0.05, v_scale=0.05)
        for i, s in enumerate(slots.tolist()):
            if s < 0:
                continue
            got = codes[0][s // 16, s % 16].float() * 0.05
            assert (got - key[i].float().clamp(-127 * 0.05, 127 * 0.05)).abs().max() <= 0.0251
    assert len(ak.reshape_and_cache.plans) == 1


def _flash_reference(q, k, v, cu):
    """Causal attention of the packed sequences in float64: (out, lse [heads, tokens])."""
    out, lse = flash_ref.flash_attention(q.double(), k.double(), v.double(), cu, cu, None, None,
                                         q.shape[-1] ** -0.5, -1, 0, 0.0, return_lse=True,
                                         compute_dtype=torch.float64)
    return out, lse.double()


@pytest.mark.parametrize("backend", ["triton", "fallback"])
def test_replayed_plan_takes_shared_empty_outputs_as_constants(backend, seed, monkeypatch):
    """flash_attention without return_lse (and sampling without return_probs) fills its unused
    output with one shared empty tensor: a replay passes it as a constant (no per-call maker),
    the fallback's replayed problem holds it too, and every call computes the new inputs."""
    monkeypatch.setenv("ASCEND_KERNELS_BACKEND", backend)
    torch.manual_seed(seed)
    q, k, v = (torch.randn(18, h, 16, dtype=torch.float16) for h in (2, 1, 1))
    cu = torch.tensor([0, 9, 18], dtype=torch.int32)
    kwargs = dict(cu_seqlens_q=cu, max_seqlen_q=9, causal=True)
    ak.flash_attention(q, k, v, **kwargs, out=poison_like(q))
    q2 = torch.randn_like(q)
    got = ak.flash_attention(q2, k, v, **kwargs, out=poison_like(q2))  # replayed
    (plan,) = ak.flash_attention.plans.values()
    assert "fresh_lse" not in plan.code
    expect, _ = _flash_reference(q2, k, v, cu)
    assert (got.double() - expect).abs().max() < 2e-3


def test_plans_follow_the_environment_and_tuning(monkeypatch):
    args = _cache_args()
    ak.reshape_and_cache(*args)
    monkeypatch.setenv("ASCEND_KERNELS_BACKEND", "fallback")
    ak.reshape_and_cache(*args)
    assert len(ak.reshape_and_cache.plans) == 2
    autotune.reset()  # new tuning results: plans are rebuilt
    ak.reshape_and_cache(*args)
    assert len(ak.reshape_and_cache.plans) == 1


def test_shapes_outside_the_tuned_buckets_take_the_nearest_entry():
    """A batch of 48 or a context of 3000 uses the nearest tuned bucket of the same fixed key."""
    defn = op.get("reshape_and_cache")
    tab = autotune.table("cpu", device.device_name(torch.device("cpu")))
    near, far = {"BLOCK_H": 2, "grid_programs_per_core": 1}, {"BLOCK_H": 4, "grid_programs_per_core": 1}
    fixed = autotune.key_of(defn, _problem(5)).rsplit(",", 1)[0]
    tab.store(defn, f"{fixed},tokens~32", near)
    tab.store(defn, f"{fixed},tokens~4096", far)
    config, source = autotune.get_config(defn, "cpu", _problem(48))  # bucket 64: nearest is 32
    assert config == near and "nearest bucket" in source and "tokens~32" in source
    assert autotune.get_config(defn, "cpu", _problem(3000))[0] == far  # bucket 4096: exact
    other_key = autotune.key_of(defn, problems.make("reshape_and_cache", {"tokens": 5, "kv_heads": 2,
                                                                          "head_size": 16, "block_size": 16},
                                                    "cpu", torch.float32))
    assert autotune._nearest(tab.user[defn.name]["entries"], other_key) is None  # other heads: none


def test_shipped_file_of_the_same_architecture_is_read(tmp_path, monkeypatch):
    """No file ships for this device: one written on another device of the same architecture
    (an H100 reading the H200's) is used; a file of another architecture is not."""
    defn = op.get("reshape_and_cache")
    p = _problem()
    monkeypatch.setattr(autotune, "SHIPPED_DIR", tmp_path)
    shipped = {"BLOCK_H": 2, "grid_programs_per_core": 5}
    for arch, name in (("sm_80", "a"), ("cpu", "b")):
        (tmp_path / f"cpu__other-device-{name}.json").write_text(json.dumps({
            "format": 1, "backend": "cpu", "device": f"other device {name}", "arch": arch,
            "triton": "any", "ops": {defn.name: {"source": autotune.source_hash(defn, "cpu"),
                                                 "entries": {autotune.key_of(defn, p): dict(shipped, BLOCK_H=len(arch))}}}}))
    config, source = autotune.get_config(defn, "cpu", p)
    assert source == "shipped defaults" and config["BLOCK_H"] == len("cpu")


def test_npu_tuning_skips_configs_the_compile_check_rejected(monkeypatch):
    """The tuner's NPU path end to end on CPU: the npu search space minus the configs whose
    Ascend compile check failed, timed by a (fake) timer, the best stored for the npu table."""
    defn = op.get("reshape_and_cache")
    p = _problem()
    space = configs.search_space(defn.name, "npu")
    rejected = space[1]
    path = autotune.cache_dir() / autotune.CHECK_VERDICTS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"ops": {defn.name: {
        "source": autotune.source_hash(defn, "npu"),
        "configs": {autotune.config_key(rejected): {"passed": False}}}}}))
    timed = []

    def cost(config):
        return 1.0 + config["BLOCK_H"] / 100 - (0.5 if config["multibuffer"] else 0)

    def fake_timer(d, problem, config):
        timed.append(config)
        return cost(config)

    best, timings = autotune.tune(defn, p, timer=fake_timer, backend="npu")
    assert rejected not in timed and len(timed) == len(space) - 1
    assert best == min(timed, key=cost) and best["multibuffer"]
    assert autotune.table("npu", device.device_name(p.device)).user[defn.name]["entries"]


def test_tuner_resumes_from_its_cache():
    """What the tuner resumes from: a key an earlier (interrupted) run tuned, for this kernel
    version only; the heuristic stays the baseline the tuned config is compared with."""
    defn = op.get("reshape_and_cache")
    p = _problem()
    assert autotune.tuned_before(defn, "cpu", p) is None
    autotune.tune(defn, p, configs=[{"BLOCK_H": 2, "grid_programs_per_core": 1}], timer=lambda *a: 1.0)
    assert autotune.tuned_before(defn, "cpu", p) == {"BLOCK_H": 2, "grid_programs_per_core": 1}
    assert autotune.heuristic_config(defn, "cpu", p) == configs.default_config(defn.name, "cpu", {})
    tab = autotune.table("cpu", device.device_name(p.device))
    tab.user[defn.name]["source"] = "an older kernel"
    assert autotune.tuned_before(defn, "cpu", p) is None


def test_tuned_off_runs_the_heuristic(monkeypatch):
    """ASCEND_KERNELS_TUNED=0 (the bench's triton-heuristic provider) skips tuned entries."""
    defn = op.get("reshape_and_cache")
    p = _problem()
    autotune.tune(defn, p, configs=[{"BLOCK_H": 2, "grid_programs_per_core": 1}], timer=lambda *a: 1.0)
    assert autotune.get_config(defn, "cpu", p) == ({"BLOCK_H": 2, "grid_programs_per_core": 1}, "tuned cache")
    monkeypatch.setenv("ASCEND_KERNELS_TUNED", "0")
    config, source = autotune.get_config(defn, "cpu", p)
    assert config == autotune.heuristic_config(defn, "cpu", p) and "ASCEND_KERNELS_TUNED=0" in source


def test_replayed_tensor_descriptor_keeps_everything_but_its_base():
    """A replay re-bases the first call's host tensor descriptors without the dataclass's
    checks: the copy must equal a descriptor built afresh over the new tensor."""
    td = pytest.importorskip("triton.tools.tensor_descriptor")
    from ascend_kernels.launcher.launch import rebased

    a, b = torch.randn(64, 32), torch.randn(64, 32)
    desc = td.TensorDescriptor(a, [64, 32], [32, 1], [16, 32])
    new = rebased(desc, b)
    assert new == td.TensorDescriptor(b, [64, 32], [32, 1], [16, 32]) and new.base is b
    assert desc.base is a  # the first call's descriptor is left as it was


def test_an_h100_reads_the_shipped_h200_file():
    """The shipped H200 tuning covers every op and is what an H100 (same architecture, no file
    of its own) reads."""
    autotune.reset()
    tab = autotune.table("cuda", "NVIDIA H100 80GB HBM3", "sm_90")
    assert tab.shipped_path.name == "cuda__nvidia-h200.json"
    assert sorted(tab.shipped) == sorted(op.op_names())
    assert all(entry["entries"] for entry in tab.shipped.values())


@pytest.mark.parametrize("name, shape", [
    ("reshape_and_cache", {"tokens": 5, "kv_heads": 2, "head_size": 32, "block_size": 16}),
    ("paged_attention", {"seqs": 2, "heads": 4, "kv_heads": 2, "head_size": 32, "block_size": 16, "context": 20}),
    ("flash_attention", {"batch": 1, "seqlen": 4, "heads": 4, "kv_heads": 2, "head_size": 32, "context": 12,
                         "block_size": 16}),
])
def test_fp8_caches_are_for_cuda_kernels_only(name, shape):
    """An fp8 cache goes to the fallback, with its reason, under the interpreter and on Ascend
    (the compile check then makes no Ascend case of it)."""
    p = problems.make(name, dict(shape, cache_dtype="float8_e4m3fn"), "cpu", torch.float16)
    for backend, why in (("cpu", "the Triton interpreter has no fp8"), ("npu", "Ascend has no fp8")):
        ok, reason = op.get(name).capability(backend, p)
        assert not ok and why in reason, (backend, reason)
    assert op.get(name).capability("npu", problems.make(name, shape, "cpu", torch.float16))[0]


def test_plans_call_the_c_launcher_only_behind_the_python_layer_they_know():
    """A compiled kernel's `run` in the shape of triton 3.4-3.6's CudaLauncher (a Python
    `__call__(gridX, gridY, gridZ, stream, function, *args)` in front of `launch`) is called
    through `launch` directly, unless the kernel needs a global or profile scratch (which the
    Python layer allocates); any other launcher is called as it is."""
    from types import SimpleNamespace

    from ascend_kernels.launcher import launch

    class Launcher36:
        def __init__(self, scratch):
            self.launch = object()
            self.global_scratch_size, self.profile_scratch_size = scratch, 0
            self.launch_cooperative_grid, self.launch_pdl = 0, 1

        def __call__(self, gridX, gridY, gridZ, stream, function, *args):
            raise AssertionError("not called")

    class Launcher39(Launcher36):
        def __call__(self, gridX, gridY, gridZ, stream, function, kernel_metadata, launch_metadata,
                     launch_enter_hook, launch_exit_hook, *args):
            raise AssertionError("not called")

    def compiled(run):
        return SimpleNamespace(run=run, function=1234, packed_metadata=(4, 1, 0))

    run = Launcher36(0)
    fn, after = launch._c_launch(compiled(run), (2, 1, 1))
    assert fn is run.launch
    assert after == (1234, 0, 1, None, None, (4, 1, 0), None, None, None)
    assert launch._c_launch(compiled(Launcher36(64)), (2, 1, 1)) is None
    assert launch._c_launch(compiled(Launcher39(0)), (2, 1, 1)) is None


def test_replayed_plan_returns_tuples_of_fresh_outputs(seed):
    """flash_attention(..., return_lse=True) returns (out, lse): a replay allocates both anew
    (never the first call's), returns them without building the problem, and matches a call
    validated and decided anew."""
    torch.manual_seed(seed)
    q, k, v = (torch.randn(18, h, 16, dtype=torch.float16) for h in (2, 1, 1))
    cu = torch.tensor([0, 9, 18], dtype=torch.int32)
    kwargs = dict(cu_seqlens_q=cu, max_seqlen_q=9, return_lse=True)
    first = ak.flash_attention(q, k, v, **kwargs)
    q2 = torch.randn_like(q)
    out, lse = ak.flash_attention(q2, k, v, **kwargs)
    (plan,) = ak.flash_attention.plans.values()
    assert "Problem(" not in plan.code
    assert out.data_ptr() != first[0].data_ptr() and lse.data_ptr() != first[1].data_ptr()
    expect, expect_lse = _flash_reference(q2, k, v, cu)
    assert (out.double() - expect).abs().max() < 2e-3
    assert (lse.double() - expect_lse).abs().max() < 1e-3


def test_work_buffers_live_in_one_workspace_per_stream(monkeypatch):
    """Direct CUDA launches place a call's work buffers in its stream's workspace: reused by the
    stream's next call, never shared between streams, grown when a call needs more (every plan
    then follows the new buffer), and never used while the stream is being captured (a graph
    allocates its own)."""
    from ascend_kernels.launcher import launch

    capturing = [False]
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: capturing[0])
    monkeypatch.setattr(launch, "workspaces", launch._Workspaces())
    scratch = launch.Scratch()
    a, b = torch.empty(10, dtype=torch.float32), torch.empty((3, 4), dtype=torch.int32)
    ia, ib = scratch.add(a), scratch.add(b[1])  # b[1]: 4 int32 into b's buffer
    buf, addr = scratch.addresses(7)
    assert addr[ia] == buf.data_ptr() and addr[ib] == buf.data_ptr() + 256 + 16
    again, addr_again = scratch.addresses(7)
    assert again is buf and addr_again == addr
    assert scratch.addresses(8)[0] is not buf
    big = launch.Scratch()
    big.add(torch.empty(10000, dtype=torch.uint8))
    grown = big.addresses(7)[0]
    assert grown is not buf and grown.numel() >= 10000
    now, addr_now = scratch.addresses(7)
    assert now is grown and addr_now[ia] == grown.data_ptr()
    capturing[0] = True
    own, addr_own = scratch.addresses(7)
    assert own is not grown and addr_own[ia] == own.data_ptr()
    capturing[0] = False
    # a plan keeps no workspace alive: once grown again, the superseded buffer is freed
    gone = weakref.ref(grown)
    del grown, now
    huge = launch.Scratch()
    huge.add(torch.empty(100000, dtype=torch.uint8))
    assert huge.addresses(7)[0].numel() >= 100000 and gone() is None
