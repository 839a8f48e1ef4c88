"""@triton.jit kernels only: no torch, no dispatch, no I/O."""
