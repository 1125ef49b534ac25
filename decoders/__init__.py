"""Decoder plugins. Importing this package registers every decoder in `harness.core.decoding.DECODERS`."""
from decoders import adadecode, vanilla  # noqa: F401
