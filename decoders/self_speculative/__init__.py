"""Draft & Verify self-speculative decoding: the decoder and its skip-set search."""
from decoders.self_speculative.decoder import SelfSpeculative

__all__ = ["SelfSpeculative"]
