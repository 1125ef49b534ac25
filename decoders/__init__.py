"""Decoder plugins. Importing this package registers every decoder in `harness.core.decoding.DECODERS`."""
from decoders import adadecode, ctranslate2_peer, eagle, hf_generate, layerskip, medusa, pld, self_speculative, vanilla  # noqa: F401
