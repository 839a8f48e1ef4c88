"""ascend_kernels: Triton kernels for LLM serving on Ascend NPUs (and NVIDIA GPUs).

Importing the package decides, once, whether CPU tensors may run the Triton kernels through
the interpreter (opt-in: ASCEND_KERNELS_INTERPRET=1 before import; see launcher/device.py).
"""
from .launcher import device as _device  # noqa: F401  (must run before anything imports triton)
from .launcher.device import backend_of, versions
from .launcher.dispatch import Decision
from .launcher.op import explain, op_names
from .ops.flash_attention import flash_attention
from .ops.paged_attention import paged_attention
from .ops.reshape_and_cache import reshape_and_cache
from .ops.topk_topp_sampling import topk_topp_sampling

__version__ = "0.1.0"

__all__ = ["reshape_and_cache", "flash_attention", "paged_attention", "topk_topp_sampling",
           "explain", "Decision", "op_names", "backend_of", "versions"]
