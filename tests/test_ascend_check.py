"""The Ascend compile check (ascend_kernels/ascend_check/): the IR analysis on hand-written IR,
and the whole check on toy kernels.

Lowering needs triton-ascend's triton-adapter-opt (no CANN, no NPU); those tests are skipped in
the upstream-triton lane. The IR tests run everywhere.
"""
import pytest
import triton
import triton.language as tl

from ascend_kernels import ascend_check as ac
from ascend_kernels.ascend_check import cases as ac_cases
from ascend_kernels.ascend_check import ir

_OK, _WHY = ac.adapter_available()
needs_adapter = pytest.mark.skipif(not _OK, reason=f"Ascend compile check unavailable: {_WHY}")


def _func(body: str, args: str = "%arg0: memref<?xf32>, %arg1: memref<?xi32>, %arg2: i32") -> str:
    return ("module {\n  func.func @k(" + args + ") attributes {mix_mode = \"aiv\"} {\n"
            "    %c0 = arith.constant 0 : index\n    %c0_i32 = arith.constant 0 : i32\n"
            "    %c1_i32 = arith.constant 1 : i32\n    %c8_i32 = arith.constant 8 : i32\n"
            "    %c1 = arith.constant 1 : index\n    %c16 = arith.constant 16 : index\n"
            "    %cst = arith.constant 0.000000e+00 : f32\n"
            + body + "    return\n  }\n}\n")


_RC16 = ("memref.reinterpret_cast %arg0 to offset: [0], sizes: [16], strides: [1] : "
         "memref<?xf32> to memref<16xf32, strided<[1]>>")
_RC1 = ("memref.reinterpret_cast %arg1 to offset: [0], sizes: [1], strides: [1] : "
        "memref<?xi32> to memref<1xi32, strided<[1]>>")


def _load16(name: str, at: str = "%alloc") -> str:
    """A structured load of 16 fp32 into a staging buffer, as the adapter writes it."""
    return (f"      %reinterpret_cast = {_RC16}\n"
            f"      {at} = memref.alloc() : memref<16xf32>\n"
            f"      memref.copy %reinterpret_cast, {at} : memref<16xf32, strided<[1]>> to memref<16xf32>\n"
            f"      {name} = bufferization.to_tensor {at} restrict writable : memref<16xf32>\n")


def _loop(row_id: str, result: dict) -> dict:
    return next(lp for lp in result["loops"] if lp["id"] == row_id)


def test_names_resolve_per_region():
    # both loops define %reinterpret_cast: each access must see its own region's value
    body = ("    scf.for %arg3 = %c0_i32 to %arg2 step %c1_i32  : i32 {\n"
            f"      %reinterpret_cast = {_RC16}\n"
            "      %alloc = memref.alloc() : memref<16xf32>\n"
            "      memref.copy %reinterpret_cast, %alloc : memref<16xf32, strided<[1]>> to memref<16xf32>\n"
            "    }\n"
            "    scf.for %arg3 = %c0_i32 to %arg2 step %c1_i32  : i32 {\n"
            f"      %reinterpret_cast = {_RC1}\n"
            "      %0 = memref.load %reinterpret_cast[%c0] : memref<1xi32, strided<[1]>>\n"
            "    }\n")
    r = ir.analyse(_func(body))
    assert (r["structured"], r["scalar"], r["scalarised"]) == (1, 1, 0)
    assert _loop("L1", r)["ops"]["dma"] == 1 and _loop("L2", r)["ops"]["scalar_access"] == 1


def test_loops_trip_counts_growth_and_hot_rules():
    body = ("    scf.for %arg3 = %c0_i32 to %c8_i32 step %c1_i32  : i32 {\n"       # L1: 8 trips
            "      %0 = arith.addi %arg3, %c1_i32 : i32\n"
            "    }\n"
            "    scf.for %arg3 = %c0_i32 to %arg2 step %c1_i32  : i32 {\n"         # L2: grows
            "      %1 = arith.addi %arg3, %c8_i32 : i32\n"
            "      scf.for %arg4 = %arg3 to %1 step %c1_i32  : i32 {\n"            # L3: 8, hot
            "        %2 = tensor.empty() : tensor<16xi64>\n"
            "        %3 = arith.muli %2, %2 : tensor<16xi64>\n"
            "        %4 = arith.extsi %arg4 : i32 to i64\n"
            "        %5 = arith.muli %4, %4 : i64\n"
            "      }\n"
            f"      %reinterpret_cast = {_RC1}\n"
            "      %6 = memref.load %reinterpret_cast[%c0] : memref<1xi32, strided<[1]>>\n"
            "      scf.for %arg4 = %c0_i32 to %6 step %c1_i32  : i32 {\n"          # L4: data bound
            "        %7 = tensor.empty() : tensor<16xi32>\n"
            "        %8 = tensor.extract %7[%c0] {DiscreteMemAccess} : tensor<16xi32>\n"
            "        scf.for %arg5 = %c0 to %c16 step %c1 {\n"
            f"          %reinterpret_cast_1 = {_RC1}\n"
            "          %9 = memref.load %reinterpret_cast_1[%c0] : memref<1xi32, strided<[1]>>\n"
            "        } {ExtractedLoadOrStore}\n"
            "      }\n"
            "    }\n")
    r = ir.analyse(_func(body))
    l1, l2, l3, l4 = (_loop(f"L{i}", r) for i in range(1, 5))
    assert (l1["trip"], l1["grows"], l1["hot"]) == (8, False, False)
    assert (l2["trip"], l2["grows"], l2["hot"]) == (None, True, True)
    assert (l3["trip"], l3["grows"], l3["hot"], l3["parent"]) == (8, False, True, "L2")
    assert l3["ops"]["int64_vector"] == 1 and l3["ops"]["int64_scalar"] == 1
    assert l3["ops"]["vector"] == 1 and l3["ops"]["scalar"] == 2  # the extsi and the muli
    assert l4["grows"] and l4["ops"]["scalarised"] == 1 and l2["ops"]["scalar_access"] == 1
    assert len(r["loops"]) == 5  # the extraction loop is part of the access, not a loop row
    assert r["hot"]["scalarised"] == 1 and r["hot"]["int64_vector"] == 1
    res = ac.CaseResult(op="t", kernel="k", label="", config={}, lowered=True, loops=r["loops"],
                        hot=r["hot"], ub_bytes=0, ub_bytes_multibuffer=0)
    assert not res.passed and len(res.failures) == 2
    assert "L4" in res.failures[0] and "L3" in res.failures[1]


def _ub(body: str, args: str = "%arg0: memref<?xf32>, %arg1: memref<?xi32>, %arg2: i32") -> tuple:
    r = ir.analyse(_func(body, args))
    return r["ub_bytes"], r["ub_bytes_multibuffer"]


def test_ub_counts_live_buffers_not_their_sum():
    # a (64 B) dies before b (64 B) is made: peak 64 + the 64 B result alive with its input
    body = (_load16("%0").replace("      ", "    ")
            + "    %1 = math.exp %0 : tensor<16xf32>\n"
            "    %2 = math.exp %1 : tensor<16xf32>\n"
            "    %3 = math.exp %2 : tensor<16xf32>\n"
            "    bufferization.materialize_in_destination %3 in writable %reinterpret_cast : "
            "(tensor<16xf32>, memref<16xf32, strided<[1]>>) -> ()\n")
    assert _ub(body) == (128, 128)  # never more than an input and its output at once


def test_ub_loop_buffers_invariants_and_multibuffer():
    body = ("    %e = tensor.empty() : tensor<16xf32>\n"
            "    %big = linalg.fill ins(%cst : f32) outs(%e : tensor<16xf32>) -> tensor<16xf32>\n"
            "    scf.for %arg3 = %c0_i32 to %arg2 step %c1_i32  : i32 {\n"
            + _load16("%0")
            + "      %1 = arith.addf %0, %big : tensor<16xf32>\n"
            "      bufferization.materialize_in_destination %1 in writable %reinterpret_cast : "
            "(tensor<16xf32>, memref<16xf32, strided<[1]>>) -> ()\n"
            "    }\n")
    # %big (64, alive through the loop) + the staging buffer (64) + the sum (64); the
    # multibuffer figure counts the staging buffer twice
    assert _ub(body) == (192, 256)


def test_ub_skips_cube_operands_and_exclusive_branches():
    rc = ("memref.reinterpret_cast %arg0 to offset: [0], sizes: [16, 16], strides: [16, 1] : "
          "memref<?xf16> to memref<16x16xf16, strided<[16, 1]>>")
    body = ("    %cond = arith.cmpi slt, %arg2, %c1_i32 : i32\n"
            f"    %reinterpret_cast = {rc}\n"
            "    %alloc = memref.alloc() : memref<16x16xf16>\n"
            "    memref.copy %reinterpret_cast, %alloc : memref<16x16xf16, strided<[16, 1]>> to memref<16x16xf16>\n"
            "    %k = bufferization.to_tensor %alloc restrict writable : memref<16x16xf16>\n"
            "    %e = tensor.empty() : tensor<16x16xf16>\n"
            "    %kt = linalg.transpose ins(%k : tensor<16x16xf16>) outs(%e : tensor<16x16xf16>) permutation = [1, 0]\n"
            "    %acc0 = tensor.empty() : tensor<16x16xf32>\n"
            "    %s = linalg.matmul ins(%k, %kt : tensor<16x16xf16>, tensor<16x16xf16>) outs(%acc0 : tensor<16x16xf32>) -> tensor<16x16xf32>\n"
            "    scf.if %cond {\n"
            "      %a = math.exp %s : tensor<16x16xf32>\n"
            "    } else {\n"
            "      %b = math.exp %s : tensor<16x16xf32>\n"
            "    }\n")
    # K and its transpose feed only the matmul (L1); the scores (1 KB) and one branch's 1 KB
    assert _ub(body, "%arg0: memref<?xf16>, %arg2: i32") == (2048, 2048)


@needs_adapter
def test_ub_of_a_lowered_kernel_is_its_live_tiles(monkeypatch, tmp_path):
    monkeypatch.setenv(ac.CACHE_ENV, str(tmp_path))
    r = ac.check_case(_case(_toy_scale, 1024), timeout=120)
    # the splat of 2.0 (4 KB, made before the loop and alive through it), x (4 KB staging,
    # doubled under multibuffer) and x * 2 (4 KB)
    assert (r.ub_bytes, r.ub_bytes_multibuffer) == (12288, 16384)


# --------------------------------------------------------------------------- lowered toys

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

@triton.jit
def _toy_wide(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + offs)
        wide = offs.to(tl.int64) * x.to(tl.int64)
        tl.store(y_ptr + offs, tl.where(wide < n, x, 0))

@triton.jit
def _toy_asm(x_ptr, y_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs)
    y = tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [x], dtype=tl.int32,
                                  is_pure=True, pack=1)
    tl.store(y_ptr + offs, y)

@triton.jit
def _toy_frontend_error(x_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.no_such_function(offs))


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(ac.CACHE_ENV, str(tmp_path / "cache"))


def _case(kernel, block, config=None, label="toy"):
    sig = {"x_ptr": "*fp32", "y_ptr": "*fp32", "n": "i32"}
    if kernel is _toy_gather:
        sig = {"x_ptr": "*fp32", "idx_ptr": "*i32", "y_ptr": "*fp32", "n": "i32"}
    if kernel is _toy_wide:
        sig = {"x_ptr": "*i32", "y_ptr": "*i32", "n": "i32"}
    return ac.KernelCase(op="toy", kernel=kernel, signature=sig, constexprs={"BLOCK": block},
                         config=config or {"BLOCK": block}, label=label)


@needs_adapter
def test_structured_scalarised_int64_and_broken(tmp_path):
    ok, gather, wide, broken = ac.check_cases(
        [_case(_toy_scale, 1024), _case(_toy_gather, 256), _case(_toy_wide, 256),
         _case(_toy_scale, 1 << 20)], timeout=120, dump_dir=str(tmp_path / "ir"))
    # structured: one strided load + one strided store, nothing scalarised, fits the UB
    assert ok.lowered and ok.passed, ok.failures
    assert ok.structured == 2 and ok.scalarised == 0 and ok.mix_mode == "aiv"
    assert [lp["grows"] for lp in ok.loops] == [False, True]  # kernel body, the grid-stride loop
    # a gather through loaded indices is scalarised inside the growing loop: the case fails
    assert gather.lowered and gather.scalarised >= 1 and not gather.passed
    assert any("per element in loop L1 (growing)" in w for w in gather.scalarised_where)
    assert "scalarised accesses in growing loops: L1" in gather.failures[0]
    # int64 vector math in the loop fails too
    assert wide.lowered and wide.hot["int64_vector"] >= 1 and not wide.passed, wide.loops
    # a 1M-element fp32 tile: 4 MB of buffers, far over the 192 KB unified buffer
    assert broken.lowered and broken.ub_bytes >= 4 << 20 and not broken.fits
    assert "UB" in broken.failures[0]
    table = ac.render_table([ok, gather, wide, broken])
    assert "| pass |" in table and "FAIL: " in table
    assert "| L1 | - |" in ac.render_loops(gather)
    # --dump-ir: TTIR and Linalg IR per case, and an index
    files = sorted(p.name for p in (tmp_path / "ir").iterdir())
    assert "index.txt" in files and sum(f.endswith(".ttir.mlir") for f in files) == 4
    assert "scf.for" in next((tmp_path / "ir").glob("*_toy_gather*.linalg.mlir")).read_text()

    configs = [{"BLOCK": 1024}, {"BLOCK": 1 << 20}, {"BLOCK": 4096}]
    assert ac.prune(configs, [ok, broken]) == [{"BLOCK": 1024}, {"BLOCK": 4096}]

    # ... and a second check of the same case is served from the cache
    again = ac.check_case(_case(_toy_scale, 1 << 20))
    assert again.cached and not again.passed and again.ub_bytes == broken.ub_bytes


@needs_adapter
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


@needs_adapter
def test_check_ops_prunes_the_launchers_search_space(monkeypatch, tmp_path, capsys):
    import types

    from ascend_kernels import cli
    from ascend_kernels.launcher import autotune, configs as _configs, op as _op

    good, broken = {"BLOCK": 1024}, {"BLOCK": 1 << 20}  # 4 MB of fp32: overflows the UB

    def cases(op, suite=None):
        made = [_case(_toy_scale, c["BLOCK"], c, label="n=4096") for c in (good, broken)]
        for case in made:
            case.op = "toy_check"
        return made, []

    defn = types.SimpleNamespace(name="toy_check")
    monkeypatch.setitem(_op._REGISTRY, "toy_check", defn)
    monkeypatch.setattr(ac_cases, "cases_for_op", cases)
    monkeypatch.setattr(autotune, "source_hash", lambda d, backend: "toy-v1")
    monkeypatch.setattr(_configs, "search_space", lambda op, backend: [good, broken])
    monkeypatch.setattr(_configs, "default_config", lambda op, backend, features: dict(broken))
    assert autotune.search_space(defn, "npu") == [good, broken]  # never checked: all kept

    results = ac.check_ops(["toy_check"], progress=False, timeout=120)
    assert [r.passed for r in results] == [True, False]
    assert autotune.search_space(defn, "npu") == [good]
    monkeypatch.setattr(autotune, "source_hash", lambda d, backend: "toy-v2")  # the kernel changed
    assert autotune.search_space(defn, "npu") == [good, broken]  # stale verdicts are ignored
    monkeypatch.setattr(autotune, "source_hash", lambda d, backend: "toy-v1")

    # the CLI: the report on stdout, nothing written to the working directory ...
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli.main(["check", "--op", "toy_check", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "# Ascend compile check" in out and "BLOCK=1048576" in out and "## Loops" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    # ... and the markdown file only with --out
    report = tmp_path / "sub" / "report.md"
    assert cli.main(["check", "--op", "toy_check", "--quiet", "--out", str(report)]) == 1
    assert "2 cases, 1 failing" in capsys.readouterr().out
    text = report.read_text()
    assert "toy_check" in text and "FAIL: UB" in text and "docs/ascend_check.md" in text
    # a failing case of a config the launcher never runs fails the command only with --strict
    monkeypatch.setattr(_configs, "default_config", lambda op, backend, features: dict(good))
    assert cli.main(["check", "--op", "toy_check", "--quiet", "--out", str(report)]) == 0
    assert cli.main(["check", "--op", "toy_check", "--quiet", "--strict", "--out", str(report)]) == 1


@needs_adapter
@pytest.mark.parametrize("shape", [
    dict(batch=2, seqlen=24, heads=4, kv_heads=2, head_size=32),                           # small head: M x N bound
    dict(batch=1, seqlen=40, heads=3, kv_heads=1, head_size=64, softcap=30.0, window=16),  # softcap temporaries
    dict(batch=2, seqlen=8, context=40, heads=8, kv_heads=2, head_size=128, block_size=16,
         cache_dtype="int8"),                                                              # paged int8: M x D bound
    dict(batch=1, seqlen=20, heads=2, kv_heads=1, head_size=256, softcap=20.0),
], ids=["d32", "d64-softcap-window", "d128-paged-int8", "d256-softcap"])
def test_flash_tiles_fit_the_unified_buffer_as_lowered(shape):
    """The host's estimate (kernels/flash_attention.npu_ub_bytes) bounds the check's UB figure of
    the lowered kernel, so the tiles the op launches on Ascend pass: for the largest config of
    the search space (the op shrinks it) and a small one (launched as it is)."""
    from ascend_kernels.kernels import flash_attention as fa_kern

    for tile, multibuffer in ((128, False), (16, True)):
        config = {"BLOCK_M": tile, "BLOCK_N": max(tile, 32), "multibuffer": multibuffer, "IO_BLOCKS": True,
                  "grid_programs_per_core": 1}
        (case,) = ac_cases.op_cases("flash_attention", dict(shape, dtype="bfloat16"), config)
        c = case.constexprs
        r = ac.check_case(case, timeout=120)
        estimate = fa_kern.npu_ub_bytes(c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_D"], c["SOFTCAP"] > 0, c["QUANT"] != 0)
        assert r.lowered and r.passed, (config, r.failures or r.error)
        assert r.ub_used <= estimate <= fa_kern.NPU_UB_BYTES, (c["BLOCK_M"], c["BLOCK_N"], r.ub_used, estimate)
