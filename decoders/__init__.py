"""Decoder plugins. Importing this package registers every decoder in `harness.core.decoding.DECODERS`."""
from decoders import medusa, vanilla  # noqa: F401
