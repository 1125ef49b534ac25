"""Benchmark harness for fast LLM decoding.

`harness.core` is the model-runner core that decoders build on; the other modules of this package (timing,
telemetry, parity, results) form the benchmark runner that drives decoders.
"""
