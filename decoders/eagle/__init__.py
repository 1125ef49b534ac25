"""EAGLE-2: the decoder and its feature-level draft model."""
from decoders.eagle.decoder import Eagle

__all__ = ["Eagle"]
