"""torch_npu (ATB / aclnn) wrappers: argument translation only. Not run on Ascend hardware here."""
