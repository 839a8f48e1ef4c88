"""The Ascend compile check (ascend_kernels/ascend_check.py) on toy kernels.

Needs triton-ascend's triton-adapter-opt (no CANN, no NPU); skipped in the upstream-triton lane.
"""

import pytest

from ascend_kernels import ascend_check as ac

_OK, _WHY = ac.adapter_available()
pytestmark = pytest.mark.skipif(not _OK, reason=f"Ascend compile check unavailable: {_WHY}")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402


@triton.jit
def _toy_scale(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    for start in range(pid * BLOCK, n, tl.num_programs(0) * BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask)
        tl.store(y_ptr + offs, x * 2.0, mask=mask)


@triton.jit
def _toy_gather(x_ptr, idx_ptr, y_ptr, n, BLOCK: tl.constexpr):
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        idx = tl.load(idx_ptr + offs)
        tl.store(y_ptr + offs, tl.load(x_ptr + idx))


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(ac.CACHE_ENV, str(tmp_path))


def _case(kernel, block, config=None, label="toy"):
    sig = {"x_ptr": "*fp32", "y_ptr": "*fp32", "n": "i32"}
    if kernel is _toy_gather:
        sig = {"x_ptr": "*fp32", "idx_ptr": "*i32", "y_ptr": "*fp32", "n": "i32"}
    return ac.KernelCase(op="toy", kernel=kernel, signature=sig, constexprs={"BLOCK": block},
                         config=config or {"BLOCK": block}, label=label)


def test_structured_and_scalarised_and_broken():
    ok, gather, broken = ac.check_cases([_case(_toy_scale, 1024), _case(_toy_gather, 256),
                                         _case(_toy_scale, 1 << 20)], timeout=120)
    # structured: one strided load + one strided store, nothing scalarised, fits the UB
    assert ok.lowered, ok.error
    assert ok.structured == 2 and ok.scalarised == 0
    assert ok.mix_mode == "aiv"
    assert 0 < ok.ub_bytes <= ac.UB_BYTES and ok.fits and ok.passed
    # gather through loaded indices: the adapter scalarises it inside the kernel loop
    assert gather.lowered, gather.error
    assert gather.scalarised_in_loop >= 1 and gather.scalarised_outside == 0
    assert any("per element" in w for w in gather.scalarised_where)
    # a 1M-element fp32 tile: 4 MB of buffers, far over the 192 KB unified buffer
    assert broken.lowered, broken.error
    assert broken.ub_bytes >= 4 << 20 and not broken.fits and not broken.passed
    table = ac.render_table([ok, gather, broken])
    assert "| NO / no |" in table

    # pruning: the launcher's filter drops the broken config once its failure is cached ...
    configs = [{"BLOCK": 1024}, {"BLOCK": 1 << 20}, {"BLOCK": 4096}]
    assert ac.prune(configs, [ok, broken]) == [{"BLOCK": 1024}, {"BLOCK": 4096}]
    assert ac.passing_configs("toy", configs) == configs  # nothing recorded yet: all kept
    ac.record_op_results("toy", "src-v1", [ok, broken])
    ac._source_memo["toy"] = "src-v1"
    try:
        assert ac.passing_configs("toy", configs) == [{"BLOCK": 1024}, {"BLOCK": 4096}]
        ac._source_memo["toy"] = "src-v2"  # the kernel changed: stale verdicts are ignored
        assert ac.passing_configs("toy", configs) == configs
    finally:
        ac._source_memo.pop("toy", None)

    # ... and a second check of the same cases is served from the cache
    again = ac.check_case(_case(_toy_scale, 1 << 20))
    assert again.cached and not again.passed and again.ub_bytes == broken.ub_bytes


@triton.jit
def _toy_asm(x_ptr, y_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs)
    y = tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [x], dtype=tl.int32, is_pure=True,
                                  pack=1)
    tl.store(y_ptr + offs, y)


@triton.jit
def _toy_frontend_error(x_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.no_such_function(offs))


def test_rejected_op_and_frontend_error_are_one_line_failures():
    sig = {"x_ptr": "*i32", "y_ptr": "*i32"}
    asm, front = ac.check_cases([
        ac.KernelCase(op="toy", kernel=_toy_asm, signature=sig, constexprs={"BLOCK": 64},
                      config={"BLOCK": 64}, label="asm"),
        ac.KernelCase(op="toy", kernel=_toy_frontend_error, signature={"x_ptr": "*i32"},
                      constexprs={"BLOCK": 64}, config={"BLOCK": 64}, label="typo"),
    ], timeout=120)
    assert not asm.lowered and not asm.passed and "llvm.inline_asm" in asm.error
    assert not front.lowered and front.error and "\n" not in front.error
    assert ac.prune([{"BLOCK": 64}, {"BLOCK": 32}], [asm]) == [{"BLOCK": 32}]


def test_check_ops_prunes_the_launchers_search_space(monkeypatch, tmp_path):
    from ascend_kernels.launcher import autotune, dispatch

    good, broken = {"BLOCK": 1024}, {"BLOCK": 1 << 20}  # 4 MB of fp32: overflows the UB

    def cases(shape, config):
        case = _case(_toy_scale, config["BLOCK"], config, label=f"n={shape['n']}")
        case.op = "toy_check"
        return [case]

    spec = dispatch.OpSpec(name="toy_check", prepare=None, capability=None,
                           configs={"npu": [good, broken]}, default_config=None, tuning_key=None,
                           launch=None, kernels=(_toy_scale,), ascend_cases=cases)
    monkeypatch.setitem(dispatch._REGISTRY, "toy_check", spec)
    monkeypatch.setattr(ac, "suite_shapes", lambda op, suite: [{"n": 4096}])
    monkeypatch.setattr(ac, "_source_memo", {})
    assert autotune.search_space(spec, "npu") == [good, broken]  # never checked: all kept

    results = ac.check_ops(["toy_check"], progress=False, timeout=120)
    assert [r.passed for r in results] == [True, False]
    assert autotune.search_space(spec, "npu") == [good]

    # the CLI: table on stdout, markdown report, non-zero exit for the failing config
    import argparse
    parser = argparse.ArgumentParser()
    ac.add_check_parser(parser.add_subparsers())
    report = tmp_path / "ascend_check.md"
    args = parser.parse_args(["check", "--op", "toy_check", "--report", str(report), "--quiet"])
    assert args.func(args) == 1
    text = report.read_text()
    assert "toy_check" in text and "BLOCK=1048576" in text and "estimate" in text


def test_multibuffer_configs_are_judged_by_the_doubled_estimate():
    r = ac.CaseResult(op="x", kernel="k", label="", config={}, lowered=True, ub_bytes=100 << 10,
                      ub_bytes_multibuffer=250 << 10, fits=True, fits_multibuffer=False)
    assert not r.passed  # multibuffer is on by default on Ascend
    r.multibuffer = False
    assert r.passed
