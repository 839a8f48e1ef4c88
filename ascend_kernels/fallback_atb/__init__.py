"""torch_npu (ATB / aclnn) wrappers: argument translation only, checked against strict fakes of
the operators' documented contracts (tests/npu_fakes.py), not on Ascend hardware.

Per module: one eligibility function per torch_npu operator (None, or the limit a call breaks)
and `route(...) -> (path, reason)` for the module's entry function. See docs/ascend_fallback.md.
"""
