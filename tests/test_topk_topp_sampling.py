"""topk_topp_sampling: Triton kernel (interpreter on CPU, CUDA when present) vs the reference.

The interpreter pays milliseconds per jit call, so rows are few and vocabularies small; the
chi-square tests draw a few hundred seeded rows each.
"""
import math

import pytest
import torch

import ascend_kernels
from ascend_kernels.launcher import configs
from ascend_kernels.launcher import autotune
from ascend_kernels.launcher.op import force_config
from ascend_kernels.reference import topk_topp_sampling as ref
from tests.conftest import devices

OP = ascend_kernels.topk_topp_sampling
GENERAL_CFG = {"USE_POOL": False}


def _launch(logits, config, **kw):
    with force_config("topk_topp_sampling", config):
        return OP(logits, **kw)


def _ref_probs(logits, **kw):
    kw = {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in kw.items()}
    return ref.filtered(logits.cpu(), **kw)[0]


def _chi2_crit(df: int, z: float = 3.09) -> float:
    """Wilson-Hilferty upper quantile of chi-square(df); z = 3.09: alpha = 0.001."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def _seeds(n, device="cpu", offset=0):
    return (torch.arange(n, dtype=torch.int64) * 1000003 + 17 + offset).to(device)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("params", ["k", "p", "kpt", "tensors", "none"])
def test_probs_match_reference(device, dtype, params, seed):
    torch.manual_seed(seed)
    b, v = 4, 45
    logits = (torch.randn(b, v) * 2).to(dtype).to(device)
    kw = {"k": dict(top_k=6), "p": dict(top_p=0.8), "kpt": dict(top_k=7, top_p=0.7, temperature=0.6),
          "none": dict(temperature=1.3),
          "tensors": dict(top_k=torch.tensor([3, 0, 50, 9], device=device),
                          top_p=torch.tensor([0.9, 0.5, 1.0, 0.3], device=device),
                          temperature=torch.tensor([1.0, 0.5, 2.0, 0.0], device=device))}[params]
    seeds = _seeds(b, device)
    tok, probs = OP(logits, seeds=seeds, return_probs=True, **kw)
    expected = _ref_probs(logits, **kw)
    assert tok.dtype == torch.int64 and tok.shape == (b,)
    assert probs.dtype == torch.float32 and probs.shape == (b, v)
    torch.testing.assert_close(probs.cpu().double(), expected, atol=2e-6, rtol=1e-5)
    assert ((tok >= 0) & (tok < v)).all()
    assert (expected.gather(1, tok.cpu()[:, None]) > 0).all(), "drew a filtered-out token"
    # tokens alone: the same ids as with return_probs
    assert torch.equal(OP(logits, seeds=seeds, **kw), tok)


# a pool of 8 overflows: the select path runs its search rounds (first spread in value, then in key)
# SAMPLE_LAST (the default): group statistics and sampling in one launch, the row sampled by the
# task that finishes its groups last; False: a group-statistics launch first (9 rows: more than
# ONE_LAUNCH_BATCH, which always take one launch)
@pytest.mark.parametrize("pool_cfg", [{}, {"P_MAX": 8, "PB": 4}, {"SAMPLE_LAST": False, "GPB": 2},
                                      {"P_MAX": 8, "PB": 4, "SAMPLE_LAST": False}],
                         ids=["pool", "small_pool", "two_launches", "small_pool_two_launches"])
@pytest.mark.parametrize("kw", [dict(top_k=5), dict(top_k=3, top_p=0.6, temperature=0.5), dict(top_p=0.7),
                                dict(top_k=20, top_p=0.9)])
def test_pool_and_general_paths_agree(kw, pool_cfg, seed):
    torch.manual_seed(seed)
    b, v = 9, 61
    logits = torch.randn(b, v) * 2
    seeds = _seeds(b)
    t1, p1 = _launch(logits, pool_cfg, seeds=seeds, return_probs=True, **kw)
    t2, p2 = _launch(logits, GENERAL_CFG, seeds=seeds, return_probs=True, **kw)
    assert torch.equal(t1, t2)
    torch.testing.assert_close(p1, p2, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(p2.double(), _ref_probs(logits, **kw), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("name,kw", [
    ("top_k", dict(top_k=4)),
    ("top_p", dict(top_p=0.75)),
    ("both+temperature", dict(top_k=5, top_p=0.8, temperature=0.7)),
])
def test_chi_square_matches_filtered_distribution(name, kw, seed):
    torch.manual_seed(seed)
    v, n = 10, 240
    base = torch.randn(1, v) * 1.2
    expected = ref.filtered(base, **kw)[0][0]
    tok = OP(base.expand(n, v).contiguous(), seeds=_seeds(n, offset=5), **kw)
    obs = torch.bincount(tok, minlength=v).double()
    keep = expected > 0
    assert obs[~keep].sum() == 0, f"{name}: drew filtered-out tokens"
    exp = expected[keep] * n
    stat = float(((obs[keep] - exp) ** 2 / exp).sum())
    df = int(keep.sum()) - 1
    assert df >= 1
    assert stat < _chi2_crit(df), f"{name}: chi2 {stat:.1f} >= {_chi2_crit(df):.1f} (df {df})"


@pytest.mark.parametrize("device", devices())
def test_greedy_and_top1_give_argmax(device, seed):
    torch.manual_seed(seed)
    logits = torch.randn(4, 33) * 3
    logits[2, 5] = logits[2, 20] = logits[2].max() + 1.0  # tie: the first index wins
    logits = logits.to(device)
    want = torch.tensor([int(logits[i].argmax()) for i in range(4)])
    assert int(want[2]) == 5
    t0, p0 = OP(logits, temperature=0.0, top_k=7, top_p=0.5, seeds=_seeds(4, device), return_probs=True)
    assert torch.equal(t0.cpu(), want)
    assert torch.equal(p0.cpu(), torch.nn.functional.one_hot(want, 33).float())
    t1 = OP(logits, top_k=1, seeds=_seeds(4, device))
    # top_k = 1 with a tie at the max keeps both tied tokens (ties are kept)
    assert torch.equal(t1[[0, 1, 3]].cpu(), want[[0, 1, 3]]) and int(t1[2]) in (5, 20)


def test_rows_are_independent_of_the_batch(seed):
    torch.manual_seed(seed)
    v = 29
    row = torch.randn(1, v) * 1.5
    other = torch.randn(5, v) * 4
    seed = torch.tensor([123456789], dtype=torch.int64)
    alone = OP(row, top_k=8, top_p=0.9, temperature=0.8, seeds=seed)
    batch = torch.cat([other[:2], row, other[2:]])
    seeds = torch.cat([_seeds(2), seed, _seeds(3, offset=9)])
    kt = torch.tensor([8, 1, 8, 0, 3, 8])
    pt = torch.tensor([0.9, 0.2, 0.9, 1.0, 0.5, 0.9])
    tt = torch.tensor([0.8, 1.0, 0.8, 0.0, 2.0, 0.8])
    mixed = OP(batch, top_k=kt, top_p=pt, temperature=tt, seeds=seeds)
    assert int(mixed[2]) == int(alone[0])
    # different seeds in a batch of identical rows give different draws (not all equal)
    many = OP(row.expand(16, v).contiguous(), top_p=0.95, seeds=_seeds(16))
    assert len(set(many.tolist())) > 1


def test_ties_at_the_threshold_are_kept():
    v = 16
    x = torch.linspace(0, -3, v).repeat(3, 1)
    x[0, 3:7] = -0.1          # top_k 3: values 0, -0.1 x4 ... k-th largest is -0.1: 5 survive
    x[1, :] = 0.0
    x[1, 10] = 1.0            # top_k 2: the max and all 15 zeros survive
    x[2, :4] = 1.0            # top_p small: the 4-way tie group at the top survives whole
    tok, probs = OP(x, top_k=torch.tensor([3, 2, 0]), top_p=torch.tensor([1.0, 1.0, 0.05]),
                    seeds=_seeds(3), return_probs=True)
    assert int((probs[0] > 0).sum()) == 5
    assert int((probs[1] > 0).sum()) == 16
    assert int((probs[2] > 0).sum()) == 4
    torch.testing.assert_close(probs[2, :4], torch.full((4,), 0.25))
    torch.testing.assert_close(probs.double(), _ref_probs(x, top_k=torch.tensor([3, 2, 0]),
                                                           top_p=torch.tensor([1.0, 1.0, 0.05])),
                               atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("config", [{}, GENERAL_CFG], ids=["pool", "general"])
def test_thresholds_at_the_ends_of_the_key_range(config, seed):
    """The int32 key search (brackets up to 2^32 - 1 keys wide) finds thresholds next to
    -FLT_MAX, among denormals and signed zeros, and next to FLT_MAX."""
    torch.manual_seed(seed)
    v, big = 37, 3.4028234663852886e38
    x = torch.randn(4, v)
    x[0] = -big                                 # a tie group at the lowest finite key
    x[0, :5] = float("-inf")
    x[0, 5:9] = float("nan")
    x[1] = torch.randn(v) * 1e-40               # denormals around +0 / -0
    x[1, 3], x[1, 4] = 0.0, -0.0
    x[2] = big * (1 - torch.rand(v) * 1e-6)     # keys just below the largest
    x[2, 7] = big
    x[3, :4] = torch.tensor([big, -big, float("inf"), float("-inf")])
    kw = dict(top_k=torch.tensor([2, 5, 4, 0]), top_p=torch.tensor([1.0, 0.9, 0.5, 0.8]),
              temperature=torch.tensor([1.0, 1e-38, 1e32, 1.0]))
    tok, probs = _launch(x, config, seeds=_seeds(4), return_probs=True, **kw)
    expected = _ref_probs(x, **kw)
    torch.testing.assert_close(probs.double(), expected, atol=1e-6, rtol=1e-5)
    assert (expected.gather(1, tok[:, None]) > 0).all(), "drew a filtered-out token"


def test_nan_and_inf_logits():
    v = 40
    x = torch.randn(4, v)
    x[0] = float("nan")                       # all NaN: token 0, zero probs
    x[1, ::2] = float("nan")                  # NaN never drawn
    x[2, 3] = x[2, 30] = float("inf")         # the +inf tokens share the mass
    x[3] = float("-inf")
    for kw in (dict(), dict(top_k=4), dict(top_p=0.5), dict(top_k=3, top_p=0.9, temperature=0.5)):
        tok, probs = OP(x, seeds=_seeds(4), return_probs=True, **kw)
        assert ((tok >= 0) & (tok < v)).all()
        assert int(tok[0]) == 0 and int(tok[3]) == 0
        assert int(tok[1]) % 2 == 1
        assert int(tok[2]) in (3, 30)
        assert torch.isfinite(probs).all()
        assert probs[0].abs().sum() == 0 and probs[3].abs().sum() == 0
        torch.testing.assert_close(probs[2, [3, 30]], torch.tensor([0.5, 0.5]))
        torch.testing.assert_close(probs.double(), _ref_probs(x, **kw), atol=1e-6, rtol=1e-5)
    greedy = OP(x, temperature=0.0, seeds=_seeds(4))
    assert greedy.tolist()[0] == 0 and greedy.tolist()[2] == 3 and greedy.tolist()[3] == 0


def test_generator_draws_reproducible_seeds():
    x = torch.randn(3, 20)
    a = OP(x, top_k=5, generator=torch.Generator().manual_seed(9))
    b = OP(x, top_k=5, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


def test_bad_parameters_name_the_argument(monkeypatch):
    monkeypatch.setenv("ASCEND_KERNELS_CHECK_BOUNDS", "1")  # tensor values: checked with a sync
    x = torch.randn(2, 10)
    cases = [
        (dict(top_p=0.0), ValueError, "top_p"), (dict(top_p=1.5), ValueError, "top_p"),
        (dict(top_k=-1), ValueError, "top_k"), (dict(temperature=-0.1), ValueError, "temperature"),
        (dict(temperature=float("nan")), ValueError, "temperature"),
        (dict(top_k=torch.tensor([1, -2])), ValueError, "top_k"),
        (dict(top_p=torch.tensor([0.5, 0.0])), ValueError, "top_p"),
        (dict(temperature=torch.tensor([1.0, -1.0])), ValueError, "temperature"),
        (dict(top_k=torch.tensor([1, 2, 3])), ValueError, "top_k"),
        (dict(top_p=torch.tensor([[0.5, 0.5]])), ValueError, "top_p"),
        (dict(top_k=2.5), TypeError, "top_k"), (dict(top_k=torch.tensor([1.0, 2.0])), TypeError, "top_k"),
        (dict(seeds=torch.tensor([1, 2], dtype=torch.int32)), TypeError, "seeds"),
        (dict(seeds=torch.tensor([1, 2, 3])), ValueError, "seeds"),
        (dict(generator=3), TypeError, "generator"),
    ]
    for kw, exc, name in cases:
        with pytest.raises(exc, match=name):
            OP(x, **kw)
    with pytest.raises(ValueError, match="logits"):
        OP(torch.randn(10))
    with pytest.raises(TypeError, match="logits"):
        OP(torch.randn(2, 10).double())


def test_unchecked_bad_tensor_values_turn_the_filter_off(seed):
    """Without ASCEND_KERNELS_CHECK_BOUNDS no sync checks tensor values: a bad per-row value
    means 'off' for that row (never a NaN, never an id outside the vocabulary)."""
    torch.manual_seed(seed)
    logits = torch.randn(4, 30) * 2
    seeds = _seeds(4)
    # int64 top_k past int32 (2**32 + 5 must not wrap to 5): off, as any k >= vocab
    bad = dict(top_k=torch.tensor([-3, 2 ** 32 + 5, 4, 4]), top_p=torch.tensor([0.9, 0.0, float("nan"), 0.9]),
               temperature=torch.tensor([1.0, 1.0, 1.0, -2.0]))
    off = dict(top_k=torch.tensor([0, 0, 4, 4]), top_p=torch.tensor([0.9, 1.0, 1.0, 0.9]),
               temperature=torch.tensor([1.0, 1.0, 1.0, 1.0]))
    tok, probs = OP(logits, seeds=seeds, return_probs=True, **bad)
    want_tok, want = OP(logits, seeds=seeds, return_probs=True, **off)
    assert torch.equal(tok, want_tok) and torch.equal(probs, want)
    torch.testing.assert_close(probs.double(), _ref_probs(logits, **off), atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(_ref_probs(logits, **bad), _ref_probs(logits, **off))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_parameter_tensors_of_any_float_dtype(dtype, seed):
    torch.manual_seed(seed)
    logits = torch.randn(3, 40) * 2
    kw = dict(top_p=torch.tensor([0.5, 0.9, 1.0], dtype=dtype),
              temperature=torch.tensor([0.5, 1.0, 2.0], dtype=dtype))
    tok, probs = OP(logits, seeds=_seeds(3), return_probs=True, **kw)
    want = _ref_probs(logits, **{k: v.float() for k, v in kw.items()})
    torch.testing.assert_close(probs.double(), want, atol=2e-6, rtol=1e-5)


def test_explain():
    d = ascend_kernels.explain("topk_topp_sampling", torch.randn(2, 50), top_k=5, top_p=0.9)
    assert d.path == "triton" and d.backend == "cpu" and d.config["USE_POOL"]
    d = ascend_kernels.explain("topk_topp_sampling", torch.randn(2, 50).t().contiguous().t())
    assert d.path == "fallback" and "contiguous" in d.reason
    tok = OP(torch.randn(50, 2).t(), top_k=3, seeds=_seeds(2))  # the reference takes it
    assert ((tok >= 0) & (tok < 50)).all()


def test_empty_batch_and_vocab_one():
    assert OP(torch.randn(0, 7), top_k=3).shape == (0,)
    tok, probs = OP(torch.randn(3, 1), top_k=5, top_p=0.5, seeds=_seeds(3), return_probs=True)
    assert tok.tolist() == [0, 0, 0] and torch.equal(probs, torch.ones(3, 1))


@pytest.mark.gpu
def test_gpu_large_vocab_matches_reference(seed):
    torch.manual_seed(seed)
    for v in (128256, 151936):
        x = torch.randn(9, v, device="cuda") * 3  # 9 rows: SAMPLE_LAST False takes two launches
        for kw in (dict(top_k=50, top_p=0.9), dict(top_p=0.95, temperature=0.7), dict(top_k=700)):
            expected = _ref_probs(x, **kw)
            tokens = []
            for last in (True, False):  # one launch (the last group task samples), or two
                tok, probs = _launch(x, {"SAMPLE_LAST": last}, seeds=_seeds(9, "cuda"), return_probs=True, **kw)
                torch.testing.assert_close(probs.cpu().double(), expected, atol=2e-6, rtol=1e-4)
                assert (expected.gather(1, tok.cpu()[:, None]) > 0).all()
                tokens.append(tok)
            assert torch.equal(*tokens)


def test_ascend_compile_check_lowers_the_kernels(tmp_path, monkeypatch):
    from ascend_kernels import ascend_check as ac

    ok, why = ac.adapter_available()
    if not ok:
        pytest.skip(f"Ascend compile check unavailable: {why}")
    monkeypatch.setenv(ac.CACHE_ENV, str(tmp_path))
    # the Ascend default: the bounded-search path, int32 search math, no gathers or scatters
    cfg = configs.default_config("topk_topp_sampling", "npu", {})
    cases = ac.op_cases("topk_topp_sampling", {"batch": 64, "vocab": 128256, "dtype": "bfloat16",
                                               "per_row": True}, cfg)
    assert {c.kernel_name for c in cases} == {"sampling_kernel"}
    for res in ac.check_cases(cases, timeout=300, use_cache=False):
        assert res.passed, res.failures


def test_fallback_path_with_and_without_probs(monkeypatch, seed):
    """The PyTorch fallback draws the same tokens whether or not probabilities are asked for
    (they are only computed when asked)."""
    monkeypatch.setenv("ASCEND_KERNELS_BACKEND", "fallback")
    torch.manual_seed(seed)
    logits = torch.randn(3, 50) * 2
    kw = dict(top_k=7, top_p=0.8, temperature=0.7, seeds=_seeds(3))
    tok = OP(logits, **kw)
    tok2, probs = OP(logits, return_probs=True, **kw)
    assert torch.equal(tok, tok2) and tok.dtype == torch.int64 and tok.shape == (3,)
    torch.testing.assert_close(probs.double(), _ref_probs(logits, top_k=7, top_p=0.8, temperature=0.7))


def test_sample_last_is_one_launch():
    defn = ascend_kernels.launcher.op.get("topk_topp_sampling")
    for batch, launches in ((9, [2, 1]), (3, [1, 1])):  # at most 8 rows: one launch whatever the config
        p = defn.prepare(torch.randn(batch, 50), top_k=5, seeds=_seeds(batch))
        config = autotune.heuristic_config(defn, "cpu", p)
        assert [len(defn.launches(p, {**config, "SAMPLE_LAST": last}, "cpu")) for last in (False, True)] == launches
        # Ascend has no last-arrival launches: two
        assert len(defn.launches(p, {**config, "SAMPLE_LAST": True}, "npu")) == 2
