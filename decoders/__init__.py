"""Decoder plugins. Importing this package registers every decoder in `harness.core.decoding.DECODERS`."""
from decoders import hf_generate, vanilla  # noqa: F401
