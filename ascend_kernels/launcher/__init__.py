"""Backend detection, dispatch (Triton or fallback, with a reason) and autotuning."""
