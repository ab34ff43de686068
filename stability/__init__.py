"""stability: small-scale proxies for large-scale Transformer training instabilities, in JAX."""

import os

# TensorFlow (data and TensorBoard only) would otherwise fill the console with CUDA probing.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
