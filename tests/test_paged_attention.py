import math

import pytest
import torch

import ascend_kernels as ak
from ascend_kernels.launcher import configs
from ascend_kernels.launcher.launch import zeroed_counters
from ascend_kernels.launcher.op import force_config
from ascend_kernels.kernels import paged_attention as pa_kern
from ascend_kernels.ops import paged_attention as pa_op
from ascend_kernels.reference.paged_attention import paged_attention as ref_pa

from .conftest import devices, poison_like, seed_of_test

TOL = {torch.float32: 2e-3, torch.float16: 4e-3, torch.bfloat16: 2e-2}


def _inputs(num_seqs, kv_heads, gqa, head_size, block_size, lens, dtype, device, max_blocks=None,
            num_blocks=None, seed=0):
    """Random q and caches, a shuffled block table; entries past each length are garbage
    (out-of-range ids, negatives); cache slots past each length hold NaN/inf."""
    g = torch.Generator().manual_seed(seed_of_test(seed))
    lens = torch.tensor(lens, dtype=torch.int32)
    need = int(((lens + block_size - 1) // block_size).max().item()) if num_seqs else 0
    max_blocks = max_blocks or max(1, need + 1)
    num_blocks = num_blocks or max(1, num_seqs * max_blocks)
    q = torch.randn(num_seqs, kv_heads * gqa, head_size, generator=g).to(dtype)
    kc = torch.randn(num_blocks, block_size, kv_heads, head_size, generator=g).to(dtype)
    vc = torch.randn(num_blocks, block_size, kv_heads, head_size, generator=g).to(dtype)
    bt = torch.randperm(num_blocks, generator=g)[: num_seqs * max_blocks] % num_blocks
    bt = bt.reshape(num_seqs, max_blocks).to(torch.int32) if num_seqs else \
        torch.zeros(0, max_blocks, dtype=torch.int32)
    garbage = torch.tensor([10 ** 6, -3, num_blocks, 2 ** 31 - 1], dtype=torch.int32)
    for i in range(num_seqs):
        used = (int(lens[i]) + block_size - 1) // block_size
        for j in range(used, max_blocks):
            bt[i, j] = garbage[(i + j) % len(garbage)]
        if int(lens[i]) % block_size and used:  # tail slots of the last page: NaN / inf
            page = int(bt[i, used - 1])
            kc[page, int(lens[i]) % block_size:] = float("nan")
            vc[page, int(lens[i]) % block_size:] = float("inf")
    to = lambda t: t.to(device)  # noqa: E731
    return to(q), to(kc), to(vc), to(bt), to(lens)


def _expect(q, kc, vc, bt, lens, **kw):
    scale = kw.get("scale") or 1.0 / math.sqrt(q.shape[-1])
    return ref_pa(q.cpu(), kc.cpu(), vc.cpu(), bt.cpu(), lens.cpu(), scale, kw.get("sliding_window") or 0,
                  kw.get("softcap", 0.0), None if kw.get("alibi_slopes") is None else kw["alibi_slopes"].cpu(),
                  compute_dtype=torch.float64)


def _close(out, expect, dtype):
    assert not torch.isnan(out).any(), "unwritten (NaN-poisoned) or NaN output"
    err = (out.double().cpu() - expect).norm() / expect.norm().clamp_min(1e-12)
    assert err < TOL[dtype], f"relative error {err:.2e}"
    assert (out.double().cpu() - expect).abs().max() < 10 * TOL[dtype] + 0.02


def _run(q, kc, vc, bt, lens, config=None, **kw):
    """Through the public op (config None) or one launch of a given config."""
    with force_config("paged_attention", config or {}):
        return ak.paged_attention(q, kc, vc, bt, lens, out=poison_like(q), **kw)


# --- matches the reference --------------------------------------------------------------------

@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("gqa,head_size,block_size,dtype", [
    (1, 64, 16, torch.bfloat16), (4, 96, 32, torch.float16), (8, 128, 128, torch.bfloat16),
    (7, 80, 16, torch.float32)])
def test_matches_reference(device, gqa, head_size, block_size, dtype):
    lens = [1, 0, 2 * block_size + 5, block_size, 3]
    q, kc, vc, bt, lens = _inputs(5, 2, gqa, head_size, block_size, lens, dtype, device)
    assert ak.explain("paged_attention", q, kc, vc, bt, lens).path == "triton"
    out = _run(q, kc, vc, bt, lens)
    _close(out, _expect(q, kc, vc, bt, lens), dtype)
    assert torch.equal(out[1], torch.zeros_like(out[1]))  # seq_len 0 -> 0


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("opts", [
    dict(sliding_window=7), dict(sliding_window=40, softcap=3.0), dict(softcap=2.0, scale=0.3),
    dict(alibi=True), dict(alibi=True, sliding_window=20, softcap=4.0)])
def test_window_softcap_alibi(device, opts):
    opts = dict(opts)
    q, kc, vc, bt, lens = _inputs(4, 2, 4, 64, 16, [50, 1, 0, 33], torch.bfloat16, device, seed=1)
    if opts.pop("alibi", False):
        opts["alibi_slopes"] = (torch.rand(q.shape[1]) * 0.5).to(device)
    expect = _expect(q, kc, vc, bt, lens, **opts)
    _close(_run(q, kc, vc, bt, lens, **opts), expect, torch.bfloat16)
    # split-KV and multi-page steps compute the same function
    cfg = {"grid_step_tokens": 32, "grid_num_splits": 3, "grid_programs_per_core": 1}
    _close(_run(q, kc, vc, bt, lens, config=cfg, **opts), expect, torch.bfloat16)


@pytest.mark.parametrize("device", devices())
def test_split_and_unsplit_agree(device):
    q, kc, vc, bt, lens = _inputs(3, 2, 4, 64, 16, [97, 0, 64], torch.float32, device, max_blocks=8,
                                  seed=2)
    expect = _expect(q, kc, vc, bt, lens)
    outs = []
    for cfg in ({"grid_step_tokens": 16, "grid_num_splits": 1},   # one page per step, no split
                {"grid_step_tokens": 64, "grid_num_splits": 1},   # 4 pages per step (gather)
                # even split of each sequence; more splits than some have pages (both merged by
                # the last split); merged by a second launch
                {"grid_step_tokens": 16, "grid_num_splits": 3, "MERGE_LAST": True},
                {"grid_step_tokens": 32, "grid_num_splits": 8, "MERGE_LAST": True},
                {"grid_step_tokens": 16, "grid_num_splits": 3, "MERGE_LAST": False}):
        out = _run(q, kc, vc, bt, lens, config={**cfg, "grid_programs_per_core": 1})
        _close(out, expect, torch.float32)
        outs.append(out)
    # the in-kernel merge leaves its arrival counters at 0 for the next call
    assert not zeroed_counters.buffers[q.device].any()
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], atol=2e-3 if device == "cuda" else 1e-5, rtol=1e-4)
    out = _run(q, kc, vc, bt, lens, split_size=32)  # fixed split size: 4 splits of 2 pages
    _close(out, expect, torch.float32)


@pytest.mark.parametrize("device", devices())
def test_fixed_split_size_is_batch_invariant(device, monkeypatch):
    q, kc, vc, bt, lens = _inputs(4, 1, 4, 64, 16, [90, 17, 61, 5], torch.bfloat16, device, seed=3)
    alone = _run(q[2:3], kc, vc, bt[2:3], lens[2:3], split_size=32)
    batch = _run(q, kc, vc, bt, lens, split_size=32)
    assert torch.equal(alone[0], batch[2])
    monkeypatch.setenv(pa_op.SPLIT_SIZE_ENV, "32")  # the env sets the same default
    assert torch.equal(_run(q, kc, vc, bt, lens), batch)
    _close(batch, _expect(q, kc, vc, bt, lens), torch.bfloat16)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("pages_per_step", [1, 2])
def test_bad_lengths_and_page_ids_read_nothing_outside(device, pages_per_step):
    """seq_lens past the block table's capacity and out-of-range page ids inside a sequence's
    length are user errors; the kernel must still stay inside every tensor: those keys are
    skipped, and the sequences with valid inputs in the same batch are unaffected."""
    bs = 16
    q, kc, vc, bt, lens = _inputs(4, 2, 2, 64, bs, [40, 20, 33, 17], torch.float16, device,
                                  max_blocks=3, num_blocks=12)
    good = [0, 2]
    want = _expect(q, kc, vc, bt, lens)
    lens[1] = 10 ** 6                    # far past max_blocks * block_size
    bt[3, 0] = 10 ** 6                   # inside the length: out of range
    bt[3, 1] = -2
    guarded = torch.full((q.shape[0] + 2, *q.shape[1:]), 7.0, dtype=q.dtype, device=device)
    with force_config("paged_attention", {"grid_step_tokens": pages_per_step * bs}):
        ak.paged_attention(q, kc, vc, bt, lens, out=guarded[:q.shape[0]])
    assert (guarded[q.shape[0]:] == 7.0).all(), "wrote past out"
    _close(guarded[good], want[good], torch.float16)


@pytest.mark.parametrize("device", devices())
def test_block_size_not_a_power_of_two(device):
    """block_size 24 with multi-page steps: pages per step round down to a power of two."""
    q, kc, vc, bt, lens = _inputs(3, 2, 2, 64, 24, [50, 24, 7], torch.float16, device)
    for step_tokens in (24, 72, 96):
        _close(_run(q, kc, vc, bt, lens, config={"grid_step_tokens": step_tokens}), _expect(q, kc, vc, bt, lens), torch.float16)


def test_split_choice_depends_on_shapes_only():
    dims = dict(num_seqs=1, num_heads=32, num_kv_heads=8, head_size=128, block_size=16, max_blocks=2048)
    cfg = configs.default_config("paged_attention", "cuda", {})
    few = pa_kern.plan(dims, cfg, "cuda", 132)
    many = pa_kern.plan({**dims, "num_seqs": 64, "max_blocks": 256}, cfg, "cuda", 132)
    assert few["num_splits"] > 1 and many["num_splits"] == 1
    fixed = pa_kern.plan(dims, cfg, "cuda", 132, split_size=1024)
    assert fixed["num_splits"] == 2048 * 16 // 1024 and fixed["pages_per_split"] == 64
    for cfg in configs.search_space("paged_attention", "npu"):  # Ascend: one page per step (multi-page tiles are gathers)
        assert pa_kern.plan(dims, cfg, "npu", 20)["constexprs"]["PAGES_PER_STEP"] == 1


def test_all_empty_and_no_sequences():
    q, kc, vc, bt, lens = _inputs(3, 2, 2, 32, 16, [0, 0, 0], torch.float16, "cpu", max_blocks=2)
    out = _run(q, kc, vc, bt, lens, split_size=16)
    assert torch.equal(out, torch.zeros_like(out))
    q0 = torch.randn(0, 4, 32)
    out0 = ak.paged_attention(q0, kc.float(), vc.float(), bt[:0], lens[:0])
    assert out0.shape == (0, 4, 32)


# --- quantized caches: written by reshape_and_cache, read with k_scale / v_scale --------------

def _quantized(q, kc, vc, bt, lens, cache_dtype, per_head, seed=0):
    """int8/fp8 caches holding the float caches' tokens of every sequence, written through
    reshape_and_cache; slots no sequence uses keep random garbage. Returns (kq, vq, scales)."""
    g = torch.Generator().manual_seed(seed_of_test(100 + seed))
    kvh, bs = kc.shape[2], kc.shape[1]
    # |x| of a randn stays under ~5: int8 steps of ~0.04 without saturation
    n = kvh if per_head else 1
    k_scale = (0.03 + 0.02 * torch.rand(n, generator=g)).to(q.device)
    v_scale = (0.03 + 0.02 * torch.rand(n, generator=g)).to(q.device)
    if cache_dtype == torch.int8:
        kq, vq = (torch.randint(-128, 128, kc.shape, generator=g, dtype=torch.int8).to(q.device) for _ in range(2))
    else:
        kq, vq = (torch.randn(kc.shape, generator=g).to(q.device).to(cache_dtype) for _ in range(2))
    slots = torch.cat([bt[i, t // bs].long() * bs + t % bs
                       for i, t in ((i, torch.arange(int(n_), device=q.device)) for i, n_ in enumerate(lens.tolist()))])
    key, value = kc.reshape(-1, kvh, kc.shape[3])[slots], vc.reshape(-1, kvh, vc.shape[3])[slots]
    ak.reshape_and_cache(key, value, kq, vq, slots, k_scale=k_scale, v_scale=v_scale)
    return kq, vq, dict(k_scale=k_scale, v_scale=v_scale)


def _check_quantized(q, kc, vc, bt, lens, cache_dtype, per_head, config=None, **opts):
    kq, vq, scales = _quantized(q, kc, vc, bt, lens, cache_dtype, per_head)
    out = _run(q, kq, vq, bt, lens, config=config, **opts, **scales)
    scale = opts.get("scale") or 1.0 / math.sqrt(q.shape[-1])
    dequant = ref_pa(q.cpu(), kq.cpu(), vq.cpu(), bt.cpu(), lens.cpu(), scale, opts.get("sliding_window") or 0,
                     opts.get("softcap", 0.0), compute_dtype=torch.float64,
                     **{k: v.cpu() for k, v in scales.items()})
    _close(out, dequant, q.dtype)
    truth = _expect(q, kc, vc, bt, lens, **opts)  # the unquantized caches: close, not equal
    err = (out.double().cpu() - truth).norm() / truth.norm()
    assert err < (0.03 if cache_dtype == torch.int8 else 0.1), f"{cache_dtype} vs unquantized: {err:.2e}"
    return out


@pytest.mark.parametrize("gqa,head_size,block_size,dtype,per_head", [
    (7, 80, 16, torch.float16, False), (4, 96, 32, torch.bfloat16, True), (1, 64, 16, torch.float16, True)])
def test_int8_cache_matches_dequantized_reference(gqa, head_size, block_size, dtype, per_head):
    q, kc, vc, bt, lens = _inputs(4, 2, gqa, head_size, block_size, [2 * block_size + 5, 0, 1, block_size],
                                  dtype, "cpu")
    out = _check_quantized(q, kc, vc, bt, lens, torch.int8, per_head)
    assert torch.equal(out[1], torch.zeros_like(out[1]))


@pytest.mark.parametrize("opts,config", [
    (dict(sliding_window=20, softcap=5.0), None),
    (dict(), {"grid_step_tokens": 32, "grid_num_splits": 3, "grid_programs_per_core": 1})])
def test_int8_cache_window_softcap_splits(opts, config):
    q, kc, vc, bt, lens = _inputs(3, 2, 4, 64, 16, [50, 7, 33], torch.bfloat16, "cpu", seed=1)
    _check_quantized(q, kc, vc, bt, lens, torch.int8, True, config=config, **opts)


@pytest.mark.gpu
@pytest.mark.parametrize("cache_dtype", [torch.int8, torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("per_head", [False, True])
def test_gpu_quantized_caches(cache_dtype, per_head):
    lens = [1, 0, 700, 4096, 33]
    q, kc, vc, bt, lens_t = _inputs(5, 8, 4, 128, 16, lens, torch.bfloat16, "cuda", seed=7)
    _check_quantized(q, kc, vc, bt, lens_t, cache_dtype, per_head)
    _check_quantized(q, kc, vc, bt, lens_t, cache_dtype, per_head, split_size=256)


def test_fp8_cache_on_cpu_falls_back_with_reason():
    q, kc, vc, bt, lens = _inputs(2, 2, 2, 32, 16, [5, 20], torch.float16, "cpu")
    s = torch.tensor([0.5])
    kq, vq = kc.nan_to_num().to(torch.float8_e4m3fn), vc.nan_to_num().to(torch.float8_e4m3fn)
    d = ak.explain("paged_attention", q, kq, vq, bt, lens, k_scale=s, v_scale=s)
    assert d.path == "fallback" and "fp8" in d.reason
    expect = ref_pa(q, kq, vq, bt, lens, 1 / math.sqrt(32), k_scale=s, v_scale=s, compute_dtype=torch.float64)
    _close(_run(q, kq, vq, bt, lens, k_scale=s, v_scale=s), expect, torch.float16)


def test_host_float_scales_equal_tensor_scales():
    q, kc, vc, bt, lens = _inputs(2, 2, 2, 32, 16, [5, 20], torch.float16, "cpu")
    kq = torch.randint(-128, 128, kc.shape, dtype=torch.int8)
    vq = torch.randint(-128, 128, kc.shape, dtype=torch.int8)
    a = _run(q, kq, vq, bt, lens, k_scale=0.02, v_scale=0.03)
    b = _run(q, kq, vq, bt, lens, k_scale=torch.tensor([0.02]), v_scale=torch.tensor([0.03]))
    assert torch.equal(a, b)


def test_check_bounds_reports_bad_lengths_and_page_ids(monkeypatch):
    q, kc, vc, bt, lens = _inputs(3, 2, 2, 32, 16, [5, 20, 17], torch.float32, "cpu", max_blocks=2,
                                  num_blocks=6)
    ak.paged_attention(q, kc, vc, bt, lens)  # garbage past each length is fine
    monkeypatch.setenv("ASCEND_KERNELS_CHECK_BOUNDS", "1")
    ak.paged_attention(q, kc, vc, bt, lens)
    for what, change, match in [
            ("negative length", lambda l, t: l.__setitem__(1, -1), r"seq_lens\[1\] = -1 is outside \[0, 32\]"),
            ("past the table", lambda l, t: l.__setitem__(2, 33), r"seq_lens\[2\] = 33"),
            ("page id too big", lambda l, t: t.__setitem__((1, 1), 6), r"block_table\[1, 1\] = 6 is outside"),
            ("negative page id", lambda l, t: t.__setitem__((0, 0), -1), r"block_table\[0, 0\] = -1")]:
        l2, t2 = lens.clone(), bt.clone()
        change(l2, t2)
        with pytest.raises(ValueError, match=match):
            ak.paged_attention(q, kc, vc, t2, l2)


# --- errors, dispatch, registration ------------------------------------------------------------

def _good_args():
    q, kc, vc, bt, lens = _inputs(2, 2, 2, 32, 16, [5, 20], torch.float32, "cpu")
    return dict(query=q, key_cache=kc, value_cache=vc, block_table=bt, seq_lens=lens)


_I8 = torch.zeros(3, 16, 2, 32, dtype=torch.int8)
_Q16 = torch.randn(2, 4, 32).half()


@pytest.mark.parametrize("bad,match,exc", [
    (dict(query=torch.randn(2, 4)), "query must have 3", ValueError),
    (dict(key_cache=_I8, value_cache=_I8, k_scale=0.5, v_scale=0.5), "fp16/bf16 query", TypeError),
    (dict(query=torch.randn(2, 4, 32).half()), "key_cache dtype", TypeError),
    (dict(query=torch.randn(2, 3, 32)), "multiple of key_cache's num_kv_heads", ValueError),
    (dict(query=torch.randn(2, 4, 16)), r"key_cache.shape\[3\]", ValueError),
    (dict(value_cache=torch.randn(3, 8, 2, 32)), "same shape", ValueError),
    (dict(block_table=torch.zeros(2, 3, dtype=torch.int64)), "block_table must have dtype", TypeError),
    (dict(block_table=torch.zeros(3, 3, dtype=torch.int32)), r"block_table.shape\[0\]", ValueError),
    (dict(seq_lens=torch.tensor([1, 2])), "seq_lens must have dtype", TypeError),
    (dict(seq_lens=torch.tensor([1, 2, 3], dtype=torch.int32)), r"seq_lens.shape\[0\]", ValueError),
    (dict(sliding_window=0), "sliding_window", ValueError),
    (dict(softcap=-1.0), "softcap", ValueError),
    (dict(alibi_slopes=torch.rand(3)), r"alibi_slopes.shape\[0\]", ValueError),
    (dict(alibi_slopes=torch.rand(4).double()), "alibi_slopes must have dtype", TypeError),
    (dict(out=torch.empty(2, 4, 16)), "out must have query's shape", ValueError),
    (dict(seq_lens_host=torch.tensor([1], dtype=torch.int32)), "seq_lens_host", ValueError),
    (dict(block_table_host=torch.zeros(2, 3)), "block_table_host", TypeError),
    (dict(split_size=24), "split_size", ValueError),
    (dict(scale="x"), "scale", TypeError),
    (dict(query=_Q16, key_cache=_I8, value_cache=_I8), "k_scale and v_scale", ValueError),
    (dict(query=_Q16, key_cache=_I8, value_cache=_I8, k_scale=torch.ones(3), v_scale=torch.ones(3)), r"k_scale must be .*\[2\]", ValueError),
    (dict(query=_Q16, key_cache=_I8, value_cache=_I8, k_scale=torch.ones(1).double(), v_scale=torch.ones(1)), "k_scale must have dtype", TypeError),
    (dict(query=_Q16, key_cache=_I8, value_cache=_I8, k_scale=torch.ones(1), v_scale=torch.ones(2)), "must both be per tensor", ValueError),
    (dict(query=_Q16, key_cache=_I8, value_cache=_I8, k_scale=torch.ones(1), v_scale=torch.ones(1, device="meta")), "v_scale", ValueError),
    (dict(key_cache=_I8, value_cache=_I8.float()), "one dtype", TypeError),
    (dict(k_scale=0.5, v_scale=0.5), "k_scale/v_scale apply", ValueError),
])
def test_bad_input_names_the_argument(bad, match, exc):
    args = _good_args()
    args.update(bad)
    pos = [args.pop(k) for k in ("query", "key_cache", "value_cache", "block_table", "seq_lens")]
    with pytest.raises(exc, match=match):
        ak.paged_attention(*pos, **args)


def test_explain_forced_backend_and_fallback(monkeypatch):
    a = _good_args()
    args = list(a.values())
    d = ak.explain("paged_attention", *args)
    assert d.path == "triton" and d.config is not None
    monkeypatch.setenv("ASCEND_KERNELS_BACKEND", "fallback")
    d = ak.explain("paged_attention", *args)
    assert d.path == "fallback" and "ASCEND_KERNELS_BACKEND=fallback" in str(d)
    _close(_run(*args), _expect(*args), torch.float32)
    # a page smaller than tl.dot's 16 rows: the kernel refuses, forcing triton raises
    q, kc, vc, bt, lens = _inputs(2, 1, 2, 32, 8, [5, 20], torch.float32, "cpu")
    monkeypatch.setenv("ASCEND_KERNELS_BACKEND", "triton")
    with pytest.raises(RuntimeError, match="block_size 8"):
        ak.paged_attention(q, kc, vc, bt, lens)
    monkeypatch.setenv("ASCEND_KERNELS_BACKEND", "auto")
    assert ak.explain("paged_attention", q, kc, vc, bt, lens).path == "fallback"
    _close(_run(q, kc, vc, bt, lens), _expect(q, kc, vc, bt, lens), torch.float32)


def test_registered_as_custom_op_with_fake():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q = torch.randn(2, 4, 32)
        kc = torch.randn(3, 16, 2, 32)
        out = torch.empty_like(q)
        # the custom op itself (eager public calls skip its dispatcher): its fake runs here
        torch.ops.ascend_kernels.paged_attention(q, kc, kc.clone(), torch.zeros(2, 2, dtype=torch.int32),
                                                 torch.tensor([3, 4], dtype=torch.int32), out,
                                                 0.125, 0, 0.0, None, None, None, 0, None, None)
        assert out.shape == (2, 4, 32)
    q, kc = torch.randn(2, 4, 32), torch.randn(3, 16, 2, 32)
    torch.library.opcheck(torch.ops.ascend_kernels.paged_attention.default,
                          (q, kc, kc.clone(), torch.tensor([[0, 1], [2, 0]], dtype=torch.int32),
                           torch.tensor([3, 20], dtype=torch.int32), torch.empty_like(q), 0.125, 0,
                           0.0, None, None, None, 0, None, None),
                          test_utils=("test_schema", "test_faketensor"))
    schema = str(torch.ops.ascend_kernels.paged_attention.default._schema)
    assert "Tensor(a5!) out" in schema


# --- Ascend compile check: every kept config lowers, nothing scalarised in the page loop ------

def test_ascend_compile_check(tmp_path, monkeypatch):
    from ascend_kernels import ascend_check as ac

    ok, why = ac.adapter_available()
    if not ok:
        pytest.skip(f"Ascend compile check unavailable: {why}")
    monkeypatch.setenv(ac.CACHE_ENV, str(tmp_path))
    shapes = [dict(seqs=64, heads=32, kv_heads=8, head_size=128, block_size=128, context=4096),
              dict(seqs=1, heads=32, kv_heads=8, head_size=128, block_size=16, context=32768),
              dict(seqs=4, heads=28, kv_heads=4, head_size=96, block_size=32, context=2048,
                   softcap=30.0, alibi=True, split_size=512, dtype="float16"),
              dict(seqs=8, heads=8, kv_heads=8, head_size=64, block_size=128, context=1000),
              dict(seqs=64, heads=32, kv_heads=8, head_size=128, block_size=128, context=4096, cache_dtype="int8"),
              dict(seqs=2, heads=28, kv_heads=4, head_size=96, block_size=16, context=4096, cache_dtype="int8",
                   dtype="float16")]
    cases = [c for s in shapes for cfg in configs.search_space("paged_attention", "npu")
             for c in ac.op_cases("paged_attention", s, cfg)]
    results = ac.check_cases(cases, timeout=180, use_cache=False)
    for r in results:
        assert r.lowered, (r.kernel, r.label, r.error)
        assert r.scalarised == 0, (r.kernel, r.label, r.scalarised_where)
        assert r.fits, (r.kernel, r.label, r.ub_bytes)


# --- GPU: large shapes, bf16 dots for real, graph capture (run on the device machine) ----------

@pytest.mark.gpu
@pytest.mark.parametrize("block_size", [16, 128])
def test_gpu_large_and_graph_replay(block_size):
    dev = "cuda"
    lens = torch.randint(1, 3000, (48,)).tolist()
    lens[:3] = [0, 1, 2999]
    q, kc, vc, bt, lens_t = _inputs(48, 8, 4, 128, block_size, lens, torch.bfloat16, dev, seed=5)
    _close(_run(q, kc, vc, bt, lens_t), _expect(q, kc, vc, bt, lens_t), torch.bfloat16)
    # few sequences: split-KV; captured once, replayed with new lengths and tables
    q, kc, vc, bt, lens_t = _inputs(2, 8, 4, 128, block_size, [6000, 4000], torch.bfloat16, dev, seed=6)
    out = torch.empty_like(q)
    static_bt, static_lens = bt.clone(), lens_t.clone()
    ak.paged_attention(q, kc, vc, static_bt, static_lens, out=out)  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ak.paged_attention(q, kc, vc, static_bt, static_lens, out=out)
    for new_lens in ([1, 5999], [0, 3333]):
        static_lens.copy_(torch.tensor(new_lens, dtype=torch.int32))
        static_bt.copy_(bt[torch.tensor([1, 0])])
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        _close(out, _expect(q, kc, vc, static_bt, static_lens), torch.bfloat16)


def test_ascend_cases_skip_shapes_sent_to_the_fallback():
    from ascend_kernels import ascend_check as ac

    big = dict(seqs=8, heads=16, kv_heads=8, head_size=256, block_size=128, context=4096)
    assert ac.op_cases("paged_attention", big, configs.search_space("paged_attention", "npu")[0]) == []


def test_cuda_default_config_fits_shared_memory(monkeypatch):
    """On CUDA the default config never stages more K/V tiles than a program's shared memory
    holds (227 KB on the H100: head 256 with 128-token pages took 268 KB in 3 stages), and a
    page too large for it goes to the fallback with the reason."""
    smem = 232448
    props = {**pa_op._device.properties(torch.device("cpu")), "smem_bytes": smem}
    monkeypatch.setattr(pa_op._device, "properties", lambda dev: props)
    monkeypatch.setattr(pa_op._device, "grid_cap", lambda dev, cube: 132)
    for seqs, kv_heads, gqa, head_size, block_size in [(8, 8, 2, 256, 128), (64, 8, 2, 256, 128),
                                                       (48, 8, 4, 128, 16), (1, 8, 4, 128, 16),
                                                       (64, 8, 4, 128, 256)]:
        q, kc, vc, bt, lens = _inputs(seqs, kv_heads, gqa, head_size, block_size,
                                      [3 * block_size] * seqs, torch.bfloat16, "cpu")
        p = pa_op.paged_attention.defn.prepare(q, kc, vc, bt, lens)
        cfg = pa_kern.fit_shared_memory(p.dims, configs.default_config("paged_attention", "cuda", pa_op.features(p)),
                                        smem, kc.element_size())
        # at most grid_step_tokens (at least one page) of K and V, bf16, per staged step
        step_bytes = 2 * max(cfg["grid_step_tokens"], block_size) * head_size * 2
        assert (cfg["num_stages"] - 1) * step_bytes + pa_kern.SMEM_RESERVE <= smem, (head_size, block_size, cfg)
        assert pa_op.capability("cuda", p)[0]
    q, kc, vc, bt, lens = _inputs(2, 2, 1, 256, 256, [300, 20], torch.float32, "cpu")
    ok, why = pa_op.capability("cuda", pa_op.paged_attention.defn.prepare(q, kc, vc, bt, lens))
    assert not ok and "shared memory" in why
