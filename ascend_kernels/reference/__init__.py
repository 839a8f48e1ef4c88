"""Plain PyTorch implementations: the fallback off-NPU and the test oracle."""
