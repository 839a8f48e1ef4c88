"""ascend_kernels: Triton kernels for LLM serving on Ascend NPUs (and NVIDIA GPUs).

Importing the package decides, once, whether CPU tensors may run the Triton kernels through
the interpreter (opt-in: ASCEND_KERNELS_INTERPRET=1 before import; see launcher/device.py).
"""
from .launcher import device as _device  # noqa: F401  (must run before anything imports triton)
from .launcher.device import backend_of, versions
from .launcher.dispatch import Decision
from .launcher.op import explain, force_config, op_names, runner
from . import ops  # noqa: F401  (registers every op module in ops/)

__version__ = "0.1.0"

# the public functions: one per registered op (reshape_and_cache, flash_attention,
# paged_attention, topk_topp_sampling)
globals().update({name: runner(name) for name in op_names()})
__all__ = op_names() + ["explain", "force_config", "Decision", "op_names", "backend_of", "versions"]
