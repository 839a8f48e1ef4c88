"""flash_attention: Triton kernel (interpreter on CPU) against the float64 reference, argument
errors, dispatch reasons, the custom op (the ATB fallback: tests/test_fallback_atb.py)."""
import math

import pytest
import torch

import ascend_kernels
from ascend_kernels.backends.npu import UB_BYTES as NPU_UB_BYTES
from ascend_kernels.launcher import configs
from ascend_kernels.launcher.op import force_config
from ascend_kernels.kernels import flash_attention as fa_kern
from ascend_kernels.ops import flash_attention as fa
from ascend_kernels.reference import flash_attention as ref

from .conftest import poison_like, seed_of_test

I32 = torch.int32


def _cu(lens, device):
    return torch.tensor([0] + list(torch.tensor(lens).cumsum(0).tolist()), dtype=I32, device=device)


def make_case(lens_q, lens_k, heads, kv_heads, head_size, dtype=torch.float16, block_size=None,
              device="cpu", seed=0, cache_dtype=None, per_head=False):
    """Fresh random inputs (never zeros). Paged: shuffled pages plus spare ones, block-table
    entries past a sequence's pages point at a real page too (they must not be read).
    cache_dtype int8/fp8: the paged cache quantized with k_scale/v_scale (per kv head or per
    tensor); case["k_true"]/["v_true"] keep the unquantized values."""
    g = torch.Generator().manual_seed(seed_of_test(seed))

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(dtype=dtype, device=device)

    case = {"q": rnd(sum(lens_q), heads, head_size), "cu_seqlens_q": _cu(lens_q, device),
            "max_seqlen_q": max(lens_q)}
    if block_size:
        nbs = [-(-n // block_size) for n in lens_k]
        nb = sum(nbs) + 2
        case["k"] = rnd(nb, block_size, kv_heads, head_size)
        case["v"] = rnd(nb, block_size, kv_heads, head_size)
        perm = torch.randperm(nb, generator=g).to(I32)
        bt = torch.full((len(lens_q), max(max(nbs), 1) + 1), int(perm[-1]), dtype=I32)
        i = 0
        for b, n in enumerate(nbs):
            bt[b, :n] = perm[i:i + n]
            i += n
        case["block_table"] = bt.to(device)
        case["seqused_k"] = torch.tensor(lens_k, dtype=I32, device=device)
        if cache_dtype is not None:
            quantize(case, cache_dtype, per_head, g)
    else:
        # a few extra tokens past the last sequence: they must not be read
        case["k"] = rnd(sum(lens_k) + 3, kv_heads, head_size)
        case["v"] = rnd(sum(lens_k) + 3, kv_heads, head_size)
        case["cu_seqlens_k"] = _cu(lens_k, device)
    return case


def quantize(case, cache_dtype, per_head, g):
    """Quantize case's k/v cache in place of the originals: stored = x / scale (int8 rounded and
    saturated, as reshape_and_cache writes it); the scales differ per kv head when per_head."""
    kv_heads = case["k"].shape[2]
    top = 127.0 if cache_dtype == torch.int8 else torch.finfo(cache_dtype).max
    for name in ("k", "v"):
        dev = case[name].device
        x = case[name].float().cpu()  # the generator is a CPU one
        amax = x.abs().amax(dim=(0, 1, 3)) * (1 + torch.rand(kv_heads, generator=g))  # some headroom
        scale = (amax if per_head else amax.max().reshape(1)) / top
        y = x / scale.reshape(-1, 1)
        if cache_dtype == torch.int8:
            y = y.round().clamp(-128, 127)
        case[name + "_true"] = case[name]
        case[name] = y.to(cache_dtype).to(dev)
        case[name + "_scale"] = scale.to(dev)


def run_and_check(case, *, causal=True, window_left=-1, window_right=-1, sliding_window=None,
                  softcap=0.0, check_lse=True, config=None):
    """Through the public op, or (config given) one launch of the default config updated by it."""
    q = case["q"]
    out = poison_like(q)
    kw = dict(cu_seqlens_q=case["cu_seqlens_q"], max_seqlen_q=case["max_seqlen_q"],
              cu_seqlens_k=case.get("cu_seqlens_k"), seqused_k=case.get("seqused_k"),
              block_table=case.get("block_table"), causal=causal, window_left=window_left,
              window_right=window_right, sliding_window=sliding_window, softcap=softcap, out=out,
              return_lse=True, k_scale=case.get("k_scale"), v_scale=case.get("v_scale"))
    with force_config("flash_attention", config or {}):
        o, lse = ascend_kernels.flash_attention(q, case["k"], case["v"], **kw)
    assert o is out
    wl, wr = fa.resolve_window(causal, window_left, window_right, sliding_window)
    ro, rl = ref.flash_attention(q, case["k"], case["v"], case["cu_seqlens_q"], case.get("cu_seqlens_k"),
                                 case.get("seqused_k"), case.get("block_table"),
                                 1.0 / math.sqrt(q.shape[-1]), wl, wr, softcap,
                                 k_scale=case.get("k_scale"), v_scale=case.get("v_scale"),
                                 out=torch.empty(q.shape, dtype=torch.float64, device=q.device),
                                 return_lse=True, compute_dtype=torch.float64)
    assert not torch.isnan(o).any(), "NaN in the output (unwritten rows or 0/0)"
    tol = 2e-2 if q.dtype == torch.bfloat16 else 3e-3
    torch.testing.assert_close(o.double(), ro, atol=tol, rtol=tol)
    assert lse.shape == (q.shape[1], q.shape[0]) and lse.dtype == torch.float32
    if check_lse:
        assert torch.equal(torch.isneginf(lse), torch.isneginf(rl))
        torch.testing.assert_close(lse.nan_to_num(0.0, 0.0, 0.0), rl.nan_to_num(0.0, 0.0, 0.0),
                                   atol=1e-4, rtol=1e-4)
    return o, lse


# ---------------------------------------------------------------- varlen kernel, interpreter

VARLEN_CASES = [
    # id, lens_q, lens_k, heads, kv_heads, head_size, kwargs
    ("causal-d64-lens1..150", [1, 37, 150], [1, 37, 150], 1, 1, 64, {}),
    ("causal-sk>sq-d64", [40, 3], [300, 90], 2, 2, 64, {}),
    ("noncausal-gqa4-d80", [5, 70], [9, 120], 4, 1, 80, {"causal": False}),
    ("causal-gqa7-d128", [30], [75], 7, 1, 128, {}),
    ("left-only", [50, 90], [70, 90], 1, 1, 64, {"causal": False, "window_left": 20}),
    ("right-only", [50, 90], [70, 90], 1, 1, 64, {"causal": False, "window_right": 7}),
    ("left-and-right", [50, 90], [70, 90], 1, 1, 80, {"causal": False, "window_left": 15, "window_right": 9}),
    ("causal-left", [64, 33], [100, 33], 2, 1, 64, {"window_left": 31}),
    ("softcap-causal", [45, 60], [45, 100], 2, 1, 64, {"softcap": 2.5}),
]


@pytest.mark.parametrize("lens_q,lens_k,heads,kv_heads,head_size,kwargs",
                         [c[1:] for c in VARLEN_CASES], ids=[c[0] for c in VARLEN_CASES])
def test_varlen(lens_q, lens_k, heads, kv_heads, head_size, kwargs):
    run_and_check(make_case(lens_q, lens_k, heads, kv_heads, head_size), **kwargs)


@pytest.mark.parametrize("io_blocks", [False, True])
@pytest.mark.parametrize("heads_per_task", [1, 2, 4])
@pytest.mark.parametrize("block_size", [None, 16])
def test_gqa_group_packed_into_the_m_tile(heads_per_task, io_blocks, block_size):
    """CUDA gives each query head its own task by default, Ascend packs a kv head's whole group
    into the M tile (the default here): any packing matches, with Q/out moved per row (CUDA) or
    as blocks (Ascend), and the persistent loop runs the extra tasks."""
    run_and_check(make_case([20, 45], [33, 45], 8, 2, 64, block_size=block_size),
                  config={"HEADS_PER_TASK": heads_per_task, "IO_BLOCKS": io_blocks})


@pytest.mark.parametrize("io_blocks", [False, True])
def test_gqa7_pads_the_group_to_8_rows(io_blocks):
    run_and_check(make_case([9, 30], [40, 30], 7, 1, 80, block_size=16),
                  config={"IO_BLOCKS": io_blocks}, sliding_window=20)


def test_heads_per_task():
    assert fa_kern.heads_per_task({}, 7, 32) == 7              # the whole group, padded to 8 rows
    assert fa_kern.heads_per_task({"HEADS_PER_TASK": 1}, 8, 64) == 1
    assert fa_kern.heads_per_task({"HEADS_PER_TASK": 8}, 6, 64) == 6  # a divisor of the group
    assert fa_kern.heads_per_task({}, 12, 8) == 6              # padding (8) fits the tile's rows
    assert fa_kern.heads_per_task({}, 7, 4) == 1


def test_bf16_varlen():
    run_and_check(make_case([33, 70], [50, 70], 2, 1, 80, dtype=torch.bfloat16))


def test_sliding_window_forms_bit_identical():
    case = make_case([60, 100], [60, 130], 2, 1, 64)
    a, la = run_and_check(case, sliding_window=25)
    b, lb = run_and_check(case, window_left=24, window_right=0, causal=False)
    c, lc = run_and_check(case, sliding_window=25, window_left=24, window_right=0)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert torch.equal(la, lb) and torch.equal(la, lc)


def test_rows_that_see_no_key():
    # causal with fewer keys than queries: the first rows see nothing; a sequence with no keys;
    # an empty query sequence in the middle
    case = make_case([50, 4, 0, 7], [20, 0, 5, 7], 2, 1, 64)
    o, lse = run_and_check(case)
    assert torch.equal(o[:30], torch.zeros_like(o[:30]))
    assert torch.isneginf(lse[:, :30]).all() and torch.isneginf(lse[:, 50:54]).all()
    assert torch.isfinite(lse[:, 30:50]).all()


def test_out_none_and_no_lse():
    case = make_case([20], [20], 1, 1, 64)
    o = ascend_kernels.flash_attention(case["q"], case["k"], case["v"], cu_seqlens_q=case["cu_seqlens_q"],
                                       max_seqlen_q=20, cu_seqlens_k=case["cu_seqlens_k"])
    assert isinstance(o, torch.Tensor) and o.shape == case["q"].shape
    ro, _ = ref.flash_attention(case["q"], case["k"], case["v"], case["cu_seqlens_q"], case["cu_seqlens_k"],
                                None, None, 0.125, -1, 0, 0.0, out=torch.empty(o.shape, dtype=torch.float64),
                                compute_dtype=torch.float64)
    torch.testing.assert_close(o.double(), ro, atol=3e-3, rtol=3e-3)


def test_strided_q_and_kv():
    # q/k/v as slices of a fused qkv tensor: token strides larger than heads * head_size
    g = torch.Generator().manual_seed(seed_of_test(3))
    qkv = torch.randn(70, 4, 64, generator=g).half()
    q, k, v = qkv[:, :2], qkv[:, 2:3], qkv[:, 3:4]
    case = {"q": q, "k": k, "v": v, "cu_seqlens_q": _cu([30, 40], "cpu"), "max_seqlen_q": 40,
            "cu_seqlens_k": _cu([30, 40], "cpu")}
    run_and_check(case)


# ---------------------------------------------------------------- paged kernel, interpreter

PAGED_CASES = [
    ("bs16-causal", 16, [10, 90], [40, 200], 2, 1, 64, {}),
    ("bs32-window", 32, [70, 1], [100, 65], 2, 2, 80, {"sliding_window": 40}),
    ("bs128-causal-gqa4", 128, [3, 60], [130, 300], 4, 1, 64, {}),
    ("bs16-noncausal-softcap", 16, [20], [45], 1, 1, 128, {"causal": False, "softcap": 4.0}),
]


@pytest.mark.parametrize("block_size,lens_q,lens_k,heads,kv_heads,head_size,kwargs",
                         [c[1:] for c in PAGED_CASES], ids=[c[0] for c in PAGED_CASES])
def test_paged(block_size, lens_q, lens_k, heads, kv_heads, head_size, kwargs):
    run_and_check(make_case(lens_q, lens_k, heads, kv_heads, head_size, block_size=block_size), **kwargs)


MULTI_PAGE_CASES = [
    # id, lens_q, lens_k, heads, kv_heads, head_size, cache dtype, kwargs; pages of 16
    ("causal-partial-last-page", [10, 90], [43, 200], 2, 1, 64, None, {}),
    ("window-softcap-int8-gqa3", [70, 5], [100, 37], 3, 1, 80, torch.int8,
     {"sliding_window": 40, "softcap": 6.0}),
    ("noncausal", [20], [45], 2, 2, 64, None, {"causal": False}),
]


@pytest.mark.parametrize("block_n", [32, 64])
@pytest.mark.parametrize("lens_q,lens_k,heads,kv_heads,head_size,cache_dtype,kwargs",
                         [c[1:] for c in MULTI_PAGE_CASES], ids=[c[0] for c in MULTI_PAGE_CASES])
def test_paged_multi_page_tiles(block_n, lens_q, lens_k, heads, kv_heads, head_size, cache_dtype, kwargs):
    """MULTI_PAGE: a K/V tile of several pages, gathered row by row through the block table
    (garbage entries past each sequence's pages are never read)."""
    case = make_case(lens_q, lens_k, heads, kv_heads, head_size, block_size=16,
                     cache_dtype=cache_dtype, per_head=True)
    config = {"MULTI_PAGE": True, "BLOCK_N": block_n}
    run_and_check(case, config=config, **kwargs)
    # the launch took tiles of block_n // 16 pages; Ascend never does (a gather there)
    defn = fa.flash_attention.defn
    p = defn.prepare(case["q"], case["k"], case["v"], cu_seqlens_q=case["cu_seqlens_q"],
                     max_seqlen_q=case["max_seqlen_q"], seqused_k=case["seqused_k"],
                     block_table=case["block_table"], k_scale=case.get("k_scale"),
                     v_scale=case.get("v_scale"))
    full = {**configs.default_config("flash_attention", "cpu", defn.features(p)), **config}
    (launch,) = defn.launches(p, full, "cpu")
    assert launch.constexprs["MULTI_PAGE"] and launch.constexprs["BLOCK_N"] == block_n
    (launch,) = defn.launches(p, {**full, "multibuffer": True}, "npu")
    assert not launch.constexprs["MULTI_PAGE"] and launch.constexprs["BLOCK_N"] <= 16


@pytest.mark.parametrize("paged,config", [(False, {}), (True, {}), (True, {"MULTI_PAGE": True, "BLOCK_N": 32})],
                         ids=["varlen", "paged", "paged-multi-page"])
def test_bad_lengths_and_page_ids_stay_inside_the_tensors(paged, config):
    """cu_seqlens past the tensors, seqused_k past the block table and out-of-range page ids are
    user errors: the kernel stays inside every tensor (no fault, no write outside `out`), and
    the well-formed first sequence still gets its exact result."""
    case = make_case([20, 30, 9], [40, 30, 9], 2, 1, 64, block_size=16 if paged else None, seed=5)
    good, _ = run_and_check(case, config=config)
    good = good[:20].clone()
    q = case["q"]
    out = torch.empty(q.shape[0] + 8, *q.shape[1:], dtype=q.dtype)  # a guard band past `out`
    out.fill_(7.0)
    cu_q = case["cu_seqlens_q"].clone()
    cu_q[2], cu_q[3] = 50, 10 ** 6          # last sequence past total_q, then decreasing
    kw = dict(cu_seqlens_k=case.get("cu_seqlens_k"), seqused_k=case.get("seqused_k"),
              block_table=case.get("block_table"))
    if paged:
        kw["seqused_k"] = kw["seqused_k"].clone()
        kw["seqused_k"][1] = 10 ** 6           # past the block table's capacity
        kw["block_table"] = kw["block_table"].clone()
        kw["block_table"][2, 0] = -5           # out of range inside the length
        kw["block_table"][1, 1] = 10 ** 7
    else:
        kw["cu_seqlens_k"] = kw["cu_seqlens_k"].clone()
        kw["cu_seqlens_k"][2] = 10 ** 6        # past total_k
    with force_config("flash_attention", config):
        ascend_kernels.flash_attention(q, case["k"], case["v"], cu_seqlens_q=cu_q,
                                       max_seqlen_q=case["max_seqlen_q"], out=out[:q.shape[0]], **kw)
    assert torch.equal(out[q.shape[0]:], torch.full_like(out[q.shape[0]:], 7.0))
    assert torch.equal(out[:20], good)


def test_paged_matches_varlen():
    """The same keys in a paged cache and contiguous give the same output."""
    paged = make_case([30, 50], [60, 50], 2, 1, 64, block_size=16, seed=5)
    bt, used = paged["block_table"], paged["seqused_k"]
    ks, vs = [], []
    for b in range(2):
        n = int(used[b])
        pages = bt[b, : -(-n // 16)].long()
        ks.append(paged["k"][pages].reshape(-1, 1, 64)[:n])
        vs.append(paged["v"][pages].reshape(-1, 1, 64)[:n])
    varlen = dict(paged, k=torch.cat(ks), v=torch.cat(vs), cu_seqlens_k=_cu([60, 50], "cpu"))
    del varlen["block_table"], varlen["seqused_k"]
    a, _ = run_and_check(paged)
    b, _ = run_and_check(varlen)
    torch.testing.assert_close(a, b, atol=2e-3, rtol=0)


# ---------------------------------------------------------------- arguments

def _args(**over):
    case = make_case([8, 8], [8, 8], 2, 1, 64)
    kw = dict(cu_seqlens_q=case["cu_seqlens_q"], max_seqlen_q=8, cu_seqlens_k=case["cu_seqlens_k"])
    kw.update(over)
    return case["q"], case["k"], case["v"], kw


@pytest.mark.parametrize("over,name", [
    ({"cu_seqlens_q": torch.tensor([0, 8, 16], dtype=torch.int64)}, "cu_seqlens_q"),
    ({"cu_seqlens_k": torch.tensor([0, 8], dtype=I32)}, "cu_seqlens_k"),
    ({"max_seqlen_q": 8.0}, "max_seqlen_q"),
    ({"window_left": -2}, "window_left"),
    ({"sliding_window": 0}, "sliding_window"),
    ({"sliding_window": 8, "window_left": 3}, "sliding_window"),
    ({"window_right": 4}, "window_right"),          # causal=True with a look-ahead window
    ({"softcap": -1.0}, "softcap"),
    ({"softmax_scale": float("nan")}, "softmax_scale"),
    ({"softmax_scale": -0.1}, "softmax_scale"),
    ({"out": torch.empty(16, 2, 32, dtype=torch.float16)}, "out"),
    ({"seqused_k": torch.tensor([8], dtype=I32)}, "seqused_k"),
])
def test_bad_arguments_name_the_argument(over, name):
    q, k, v, kw = _args(**over)
    with pytest.raises((ValueError, TypeError), match=name):
        ascend_kernels.flash_attention(q, k, v, **kw)


def test_bad_tensors_name_the_argument():
    q, k, v, kw = _args()
    with pytest.raises(TypeError, match="k must have q's dtype"):
        ascend_kernels.flash_attention(q, k.float(), v, **kw)
    with pytest.raises(ValueError, match="num_kv_heads"):
        ascend_kernels.flash_attention(q, torch.cat([k, k, k], 1), torch.cat([v, v, v], 1), **kw)
    with pytest.raises(ValueError, match="head_size"):
        ascend_kernels.flash_attention(q, k[..., :32], v[..., :32], **kw)
    with pytest.raises(ValueError, match="block_table"):
        ascend_kernels.flash_attention(q, k, v, **dict(kw, block_table=torch.zeros(3, 2, dtype=I32)))
    paged = make_case([8, 8], [8, 8], 2, 1, 64, block_size=16)
    with pytest.raises(ValueError, match="seqused_k"):
        ascend_kernels.flash_attention(paged["q"], paged["k"], paged["v"], cu_seqlens_q=paged["cu_seqlens_q"],
                                       max_seqlen_q=8, block_table=paged["block_table"])


@pytest.mark.parametrize("name", ["q", "k", "v", "cu_seqlens_q", "block_table"])
def test_a_non_tensor_is_named(name):
    q, k, v, kw = _args()
    args = dict(q=q, k=k, v=v, **kw)
    args[name] = [0, 1]
    with pytest.raises(TypeError, match=f"{name} must be a torch.Tensor"):
        ascend_kernels.flash_attention(args.pop("q"), args.pop("k"), args.pop("v"), **args)


def test_resolve_window():
    assert fa.resolve_window(True, -1, -1, None) == (-1, 0)
    assert fa.resolve_window(False, -1, -1, None) == (-1, -1)
    assert fa.resolve_window(False, -1, -1, 4096) == (4095, 0)
    assert fa.resolve_window(True, 4095, 0, 4096) == (4095, 0)
    assert fa.resolve_window(False, 7, 3, None) == (7, 3)
    with pytest.raises(ValueError, match="sliding_window"):
        fa.resolve_window(False, 7, 3, 8)


def test_explain_and_fallback_reasons():
    q, k, v, kw = _args()
    d = ascend_kernels.explain("flash_attention", q, k, v, **kw)
    assert d.path == "triton" and d.backend == "cpu"
    d = ascend_kernels.explain("flash_attention", q.float(), k.float(), v.float(), **kw)
    assert d.path == "fallback" and "fp16/bf16" in d.reason
    paged = make_case([8], [20], 2, 1, 64, block_size=8)
    d = ascend_kernels.explain("flash_attention", paged["q"], paged["k"], paged["v"],
                               cu_seqlens_q=paged["cu_seqlens_q"], max_seqlen_q=8,
                               seqused_k=paged["seqused_k"], block_table=paged["block_table"])
    assert d.path == "fallback" and "block_size 8" in d.reason


def test_fallback_path_runs_reference():
    """fp32 is not the kernel's: the call goes to the reference and is still right."""
    case = make_case([20, 9], [30, 9], 2, 1, 64, dtype=torch.float32)
    d = ascend_kernels.explain("flash_attention", case["q"], case["k"], case["v"],
                               cu_seqlens_q=case["cu_seqlens_q"], max_seqlen_q=case["max_seqlen_q"],
                               cu_seqlens_k=case["cu_seqlens_k"])
    assert d.path == "fallback" and "fp16/bf16" in d.reason
    run_and_check(case)  # against the float64 reference


def test_custom_op_fake_and_schema():
    q, k, v, kw = _args()
    out = torch.empty_like(q)
    torch.library.opcheck(torch.ops.ascend_kernels.flash_attention.default,
                          (q, k, v, kw["cu_seqlens_q"], 8, kw["cu_seqlens_k"], None, None, 0.125,
                           -1, 0, 0.0, out, True, None, None, torch.empty(q.shape[1], q.shape[0])),
                          test_utils=("test_schema", "test_faketensor"))


# ---------------------------------------------------------------- quantized paged cache

QUANT_CASES = [
    # id, block_size, lens_q, lens_k, heads, kv_heads, head_size, per_head, kwargs
    ("int8-per-tensor-gqa7-d80", 16, [9, 40], [50, 40], 7, 1, 80, False, {}),
    ("int8-per-head-d96-window-softcap", 32, [30, 3], [70, 35], 4, 2, 96, True,
     {"sliding_window": 24, "softcap": 8.0}),
    ("int8-per-head-noncausal", 16, [17], [33], 2, 2, 64, True, {"causal": False}),
]


@pytest.mark.parametrize("block_size,lens_q,lens_k,heads,kv_heads,head_size,per_head,kwargs",
                         [c[1:] for c in QUANT_CASES], ids=[c[0] for c in QUANT_CASES])
def test_int8_paged_cache(block_size, lens_q, lens_k, heads, kv_heads, head_size, per_head, kwargs):
    """Chunked prefill over an int8 cache: matches the dequantizing reference, and stays close
    to attention over the unquantized keys/values."""
    case = make_case(lens_q, lens_k, heads, kv_heads, head_size, block_size=block_size,
                     cache_dtype=torch.int8, per_head=per_head)
    o, _ = run_and_check(case, **kwargs)
    truth, _ = run_and_check(dict(case, k=case["k_true"], v=case["v_true"], k_scale=None, v_scale=None),
                             **kwargs)
    torch.testing.assert_close(o.float(), truth.float(), atol=0.05, rtol=0.05)


def test_int8_host_float_scales():
    """A host float scale gives what the same scale as a 1-element tensor gives."""
    case = make_case([12], [40], 2, 1, 64, block_size=16, cache_dtype=torch.int8)
    o, _ = run_and_check(case)
    f = ascend_kernels.flash_attention(case["q"], case["k"], case["v"], cu_seqlens_q=case["cu_seqlens_q"],
                                       max_seqlen_q=12, seqused_k=case["seqused_k"],
                                       block_table=case["block_table"],
                                       k_scale=float(case["k_scale"]), v_scale=float(case["v_scale"]))
    assert torch.equal(f, o)


def _quant_args(**over):
    case = make_case([8], [20], 4, 2, 64, block_size=16, cache_dtype=torch.int8, per_head=True)
    kw = dict(cu_seqlens_q=case["cu_seqlens_q"], max_seqlen_q=8, seqused_k=case["seqused_k"],
              block_table=case["block_table"], k_scale=case["k_scale"], v_scale=case["v_scale"])
    kw.update(over)
    return case["q"], kw.pop("k", case["k"]), kw.pop("v", case["v"]), kw


@pytest.mark.parametrize("over,match", [
    ({"k_scale": None}, "needs k_scale and v_scale"),
    ({"k_scale": torch.ones(3)}, "k_scale must be one per-tensor scale or fp32 \\[num_kv_heads\\]"),
    ({"v_scale": torch.ones(2, dtype=torch.float64)}, "v_scale must have dtype"),
    ({"v_scale": torch.ones(1)}, "per tensor or both per kv head"),
    ({"k_scale": 0.0, "v_scale": 0.1}, "k_scale must be a finite float > 0"),
    ({"k_scale": float("inf"), "v_scale": 0.1}, "k_scale must be a finite float > 0"),
    ({"k_scale": [1.0, 1.0]}, "k_scale must be a torch.Tensor"),
])
def test_bad_scales_name_the_argument(over, match):
    q, k, v, kw = _quant_args(**over)
    with pytest.raises((ValueError, TypeError), match=match):
        ascend_kernels.flash_attention(q, k, v, **kw)


def test_bad_quantized_kv_name_the_argument():
    q, k, v, kw = _quant_args()
    with pytest.raises(TypeError, match="k and v must have one dtype"):
        ascend_kernels.flash_attention(q, k, v.to(torch.float16), **dict(kw, k_scale=None, v_scale=None))
    with pytest.raises(TypeError, match="k must have q's dtype .* int8/fp8 paged cache"):
        ascend_kernels.flash_attention(q.float(), k, v, **kw)
    varlen = make_case([8], [8], 2, 1, 64)  # an int8 varlen k/v is not a cache
    with pytest.raises(TypeError, match="k must have q's dtype"):
        ascend_kernels.flash_attention(varlen["q"], varlen["k"].to(torch.int8), varlen["v"].to(torch.int8),
                                       cu_seqlens_q=varlen["cu_seqlens_q"], max_seqlen_q=8,
                                       k_scale=1.0, v_scale=1.0)
    case = make_case([8], [8], 2, 1, 64, block_size=16)
    with pytest.raises(ValueError, match="k_scale/v_scale apply to int8/fp8 caches only"):
        ascend_kernels.flash_attention(case["q"], case["k"], case["v"], cu_seqlens_q=case["cu_seqlens_q"],
                                       max_seqlen_q=8, seqused_k=case["seqused_k"],
                                       block_table=case["block_table"], k_scale=1.0, v_scale=1.0)


def test_fp8_cache_takes_the_reference_on_cpu():
    q, k, v, kw = _quant_args()
    d = ascend_kernels.explain("flash_attention", q, k.to(torch.float8_e4m3fn), v.to(torch.float8_e4m3fn), **kw)
    assert d.path == "fallback" and "fp8" in d.reason


def test_int8_cache_takes_the_reference_on_npu_fallback(monkeypatch):
    """FIA documents no antiquant with page attention for Q_S > 1: the Ascend fallback routes an
    int8 cache to the reference (no torch_npu call)."""
    import sys

    from ascend_kernels.fallback_atb import _npu
    from ascend_kernels.fallback_atb import flash_attention as atb_fa

    from .npu_fakes import FakeTorchNpu

    fake = FakeTorchNpu("2.7.1.post2", "Ascend910B3")
    monkeypatch.setitem(sys.modules, "torch_npu", fake)
    _npu.reset()
    try:
        case = make_case([8, 5], [130, 5], 2, 1, 128, dtype=torch.bfloat16, block_size=128,
                         cache_dtype=torch.int8)
        args = (case["q"], case["k"], case["v"], case["cu_seqlens_q"], None, case["seqused_k"],
                case["block_table"], 0.1, -1, 0, 0.0)
        path, reason = atb_fa.route(*args, k_scale=case["k_scale"], v_scale=case["v_scale"])
        assert path == "reference" and "antiquant" in reason
        out, _ = atb_fa.flash_attention(*args, k_scale=case["k_scale"], v_scale=case["v_scale"])
        ro, _ = ref.flash_attention(*args, k_scale=case["k_scale"], v_scale=case["v_scale"])
        assert torch.equal(out, ro) and fake.calls == []
    finally:
        _npu.reset()


# ---------------------------------------------------------------- ASCEND_KERNELS_CHECK_BOUNDS=1

def _bounds_case(paged):
    case = make_case([6, 9], [20, 9], 2, 1, 64, block_size=16 if paged else None,
                     cache_dtype=torch.int8 if paged else None)
    kw = dict(cu_seqlens_q=case["cu_seqlens_q"].clone(), max_seqlen_q=9,
              cu_seqlens_k=case.get("cu_seqlens_k"), seqused_k=case.get("seqused_k"),
              block_table=case.get("block_table"), k_scale=case.get("k_scale"),
              v_scale=case.get("v_scale"))
    return case, {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}


def _set(name, index, value):
    def change(kw):
        kw[name][index] = value
    return change


@pytest.mark.parametrize("paged,change,match", [
    (False, _set("cu_seqlens_q", 0, 1), r"cu_seqlens_q\[0\] = 1: must start at 0"),
    (False, _set("cu_seqlens_q", 1, 16), r"cu_seqlens_q\[2\] = 15 is below the entry before it \(16\)"),
    (False, _set("cu_seqlens_q", 2, 99), r"cu_seqlens_q\[2\] = 99 is past the 15 tokens"),
    (False, lambda kw: kw.update(max_seqlen_q=8), r"sequence 1 9 queries, more than max_seqlen_q=8"),
    (False, _set("cu_seqlens_k", 2, 40), r"cu_seqlens_k\[2\] = 40 is past the 32 tokens"),
    (False, lambda kw: kw.update(seqused_k=torch.tensor([20, 30], dtype=I32)),
     r"seqused_k\[1\] = 30 is outside \[0, 12\]"),
    (True, _set("seqused_k", 0, -1), r"seqused_k\[0\] = -1 is outside \[0, 48\]"),
    (True, _set("seqused_k", 1, 49), r"seqused_k\[1\] = 49 is outside \[0, 48\] \(the block table's 3 pages"),
    (True, _set("block_table", (0, 1), 5), r"block_table\[0, 1\] = 5 is outside the cache's 5 blocks"),
    (True, _set("block_table", (1, 0), -1), r"block_table\[1, 0\] = -1 is outside"),
    (True, _set("k_scale", 0, 0.0), r"k_scale\[0\] = 0.0: a scale must be finite and > 0"),
])
def test_check_bounds_names_the_bad_value(monkeypatch, paged, change, match):
    case, kw = _bounds_case(paged)
    change(kw)
    monkeypatch.setenv("ASCEND_KERNELS_CHECK_BOUNDS", "1")
    with pytest.raises(ValueError, match=match):
        ascend_kernels.flash_attention(case["q"], case["k"], case["v"], **kw)


@pytest.mark.parametrize("paged", [False, True])
def test_check_bounds_passes_good_inputs(monkeypatch, paged):
    """Entries past a sequence's pages are not checked (make_case fills them with a real page,
    a garbage id there is allowed)."""
    case, kw = _bounds_case(paged)
    if paged:
        kw["block_table"][0, -1] = 10 ** 6
    monkeypatch.setenv("ASCEND_KERNELS_CHECK_BOUNDS", "1")
    ascend_kernels.flash_attention(case["q"], case["k"], case["v"], **kw)


# ---------------------------------------------------------------- GPU (device machine)

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_size", [64, 80, 128, 256])
def test_gpu_varlen_and_paged(dtype, head_size):
    case = make_case([1, 77, 300], [1, 200, 300], 7, 1, head_size, dtype=dtype, device="cuda")
    run_and_check(case)
    run_and_check(case, causal=False, window_left=40, window_right=3)
    paged = make_case([5, 130], [300, 130], 4, 2, head_size, dtype=dtype, block_size=32, device="cuda")
    run_and_check(paged, sliding_window=64, softcap=20.0)


@pytest.mark.gpu
def test_gpu_torch_compile_fullgraph():
    case = make_case([100, 300], [100, 300], 4, 2, 128, dtype=torch.bfloat16, device="cuda")

    def f(q, k, v, cu):
        o, lse = ascend_kernels.flash_attention(q, k, v, cu_seqlens_q=cu, max_seqlen_q=300, return_lse=True)
        return o * 2, lse

    got = torch.compile(f, fullgraph=True)(case["q"], case["k"][:400], case["v"][:400], case["cu_seqlens_q"])
    want = f(case["q"], case["k"][:400], case["v"][:400], case["cu_seqlens_q"])
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.gpu
@pytest.mark.parametrize("cache_dtype", [torch.int8, torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("per_head", [False, True])
def test_gpu_quantized_cache(cache_dtype, per_head):
    case = make_case([5, 130], [300, 130], 7, 1, 128, dtype=torch.bfloat16, block_size=16,
                     device="cuda", cache_dtype=cache_dtype, per_head=per_head)
    run_and_check(case)
    run_and_check(case, sliding_window=64, softcap=20.0, config={"HEADS_PER_TASK": 8})


@pytest.mark.parametrize("head_size", [16, 64, 128, 256])
@pytest.mark.parametrize("softcap,quantized", [(False, False), (True, False), (False, True)])
def test_npu_tiles_shrink_to_fit_the_unified_buffer(head_size, softcap, quantized):
    """Every Ascend config, whatever the head size, launches tiles whose estimated unified-buffer
    use fits (tests/test_ascend_check.py checks the estimate against lowered kernels)."""
    for config in configs.search_space("flash_attention", "npu"):
        m, n = fa_kern.tiles("npu", config, head_size, 0, softcap, quantized)
        assert 16 <= m <= config["BLOCK_M"] and 16 <= n <= config["BLOCK_N"]
        assert fa_kern.npu_ub_bytes(m, n, max(16, head_size), softcap, quantized) <= NPU_UB_BYTES
        if (m, n) != (config["BLOCK_M"], config["BLOCK_N"]):  # halved only when the config did not fit
            assert fa_kern.npu_ub_bytes(config["BLOCK_M"], config["BLOCK_N"], max(16, head_size), softcap,
                                        quantized) > NPU_UB_BYTES
        assert fa_kern.tiles("cuda", config, head_size, 0, softcap, quantized) == (config["BLOCK_M"], config["BLOCK_N"])
    assert fa_kern.tiles("npu", {"BLOCK_M": 64, "BLOCK_N": 128}, 64, 32)[1] <= 32  # one page at most
