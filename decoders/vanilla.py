"""Greedy autoregressive decoding, one token through all layers per step: the parity reference."""
from __future__ import annotations

from harness.core.decoding import DECODERS, Decoder, Generation, TokenSink, greedy


@DECODERS.register("vanilla")
class Vanilla(Decoder):
    def _generate(self, prompt_ids, stop, on_first_token):
        cache = self.new_cache(prompt_ids, stop)
        sink = TokenSink(stop, on_first_token)
        token = greedy(self.runner.forward(prompt_ids, cache, last_only=True))
        steps = 1
        while not sink.add(token):
            token = greedy(self.runner.forward(token, cache))
            steps += 1
        return Generation(sink.tokens, {"steps": steps})
