"""The model-runner core: loading, a layer-addressable model runner, a per-layer KV cache, and the decoder interface.

It knows no decoder, task or report.
"""
from harness.core.errors import HarnessError
from harness.core.kv_cache import LayeredKVCache
from harness.core.model_runner import ModelRunner

__all__ = ["HarnessError", "LayeredKVCache", "ModelRunner"]
