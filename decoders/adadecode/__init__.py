"""AdaDecode: the decoder and its exit heads' training."""
from decoders.adadecode.decoder import AdaDecode

__all__ = ["AdaDecode"]
