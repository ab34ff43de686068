"""Tools around the training core: benchmarks, compile checks, a PyTorch reference, tokenizing."""
