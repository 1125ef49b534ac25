"""Medusa: the decoder and its heads."""
from decoders.medusa.decoder import Medusa

__all__ = ["Medusa"]
