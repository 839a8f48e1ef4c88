"""Ascend compile check: lower every kernel x Ascend config x suite shape through triton-ascend's
adapter (``triton-adapter-opt``) on any host -- no CANN, no NPU -- and read the lowered IR.

Modules: ``toolchain`` (the adapter, the ttir + ttadapter stages), ``run`` (child processes in
parallel, timeouts), ``ir`` (the IR analysis), ``cache``, ``report``, ``cli`` (``ascend-kernels
check``) and ``cases`` (the op registry and bench suites: the only module that knows about ops).

How the stages are driven (triton-ascend 3.2.0, ``backends/ascend/compiler.py``):
``AscendBackend(GPUTarget("npu", "Ascend910B3", 0))`` and ``parse_options`` build ``NPUOptions``
without loading CANN; ``ASTSource(fn, signature, constants)`` runs the frontend; the ``ttir``
stage runs in process and ``ttadapter`` runs ``triton-adapter-opt --triton-to-linalg ...`` as a
subprocess. ``npubin`` (bishengir-compile) needs CANN and is not run. The adapter passes ops it
cannot convert through (``tt.*``, ``llvm.inline_asm``): such a case counts as not lowered.

What the analysis reads (ir.py):

* SSA names are resolved per region as MLIR scopes them: a region sees its own names and those of
  the regions around it up to its function; sibling regions reuse names (``%reinterpret_cast_22``
  in two loops are two values).
* Memory accesses reach global memory through ``memref.reinterpret_cast`` of a kernel argument
  (followed through subview/cast/reshape views). A load is ``memref.copy`` from such a view (or
  ``memref.load``), a store ``bufferization.materialize_in_destination`` / ``memref.store`` into
  one; atomics are ``GenericAtomicRMW`` generics. An access is *scalarised* when it sits in a loop
  the adapter marked ``{ExtractedLoadOrStore}`` (one DMA per element or row of a pointer tensor),
  a *scalar access* when its view has one element (``tl.load(ptr + i)``, e.g. one block-table
  entry: fine by design), else *structured* (one strided DMA, counted as ``dma``).
* Loops: every ``scf.for``/``scf.while`` except the extraction loops. The trip count is derived
  when the bounds fold to constants (or ub = lb + c, or min(lb + c, x)). A loop *grows* when its
  trip count is not constant and a bound depends on a kernel argument, on loaded data, on a
  loop-carried value or on the index of a growing loop; ``scf.while`` always grows. A loop is
  *hot* when it grows or is nested in a growing loop.
* Per loop, the ops directly in it (nested loops have their own row; a linalg op's scalar payload
  is part of that op): ``dma``, ``scalar_access``, ``scalarised``, ``vector`` (arith/math on
  tensors, linalg/hfusion/hivm ops, calls returning tensors), ``int64_vector`` (arithmetic or
  compares on i64 tensors, or a linalg op whose payload does i64 arithmetic; casts and selects are
  not arithmetic), ``cube`` (matmuls), ``scalar`` and ``int64_scalar`` (arith on scalars,
  tensor.extract/insert).

Verdict: a case fails when it does not lower, when its UB peak exceeds 192 KB (the multibuffer
figure when the config has multibuffer on, the Ascend default), or when a hot loop holds a
scalarised access or an int64 vector op. Scalar accesses and int64 scalar ops never fail a case.

The UB model (an estimate; the exact figure needs bishengir-compile's memory planner):

* A buffer is the storage of a statically shaped value: ``memref.alloc`` (a DMA staging buffer),
  ``bufferization.alloc_tensor``, and the tensor result of every compute op (arith/math on
  tensors, linalg ops, calls, tensor.insert/insert_slice, loop and if results). Views
  (subview, reshape, extract_slice, to_tensor, ...) alias their source; ``tensor.empty`` is a
  placeholder whose storage is the result of the op that fills it.
* Cube operands live in L1/L0, not UB: a loaded buffer (or its transpose) whose every use feeds
  a matmul's inputs is not counted. Matmul results and everything the vector unit computes
  (including the probabilities fed back into a matmul) are counted.
* Liveness: a buffer lives from its definition to its last use, uses inside nested regions
  counting at the op that holds them; a buffer used inside a loop lives through the whole loop;
  loop-carried tensors count once (the init handed to ``iter_args`` is not counted again).
  The UB figure is the peak, over every program point, of the bytes alive there. The branches
  of an ``scf.if`` are exclusive; sequential loops reuse each other's space.
* Multibuffer: a UB load buffer allocated inside a loop is counted twice (the next iteration's
  DMA fills the second copy), in the multibuffer figure only.

Results are cached (cache.py); the tuner's Ascend search space (launcher/autotune.py) reads the
per-config verdicts of the last ``check_ops``.
"""
from .cache import (CACHE_ENV, cache_dir, cache_path, case_key, kernel_source_hash,
                    record_op_results)
from .cases import cases_for_op, check_ops, failing_defaults, op_cases, prune, suite_shapes
from .cli import add_check_arguments, run_check
from .core import (DEFAULT_TIMEOUT_S, TARGET, UB_BYTES, CaseResult, KernelCase, config_key,
                   signature_of)
from .ir import analyse
from .report import render_loops, render_report, render_table
from .run import check_case, check_cases, lowered_ir
from .toolchain import adapter_available, adapter_path

__all__ = ["CACHE_ENV", "DEFAULT_TIMEOUT_S", "TARGET", "UB_BYTES", "CaseResult", "KernelCase",
           "adapter_available", "adapter_path", "add_check_arguments", "analyse", "cache_dir",
           "cache_path", "case_key", "cases_for_op", "check_case", "check_cases", "check_ops",
           "config_key", "kernel_source_hash", "lowered_ir", "op_cases", "failing_defaults",
           "prune", "record_op_results", "render_loops", "render_report", "render_table",
           "run_check", "signature_of", "suite_shapes"]
