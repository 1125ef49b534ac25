"""Autoregressive decoding, one token through all layers per step: the parity reference (greedy) and the reference
distribution (sampling, one draw per step from the sample's seeded sampler)."""
from __future__ import annotations

from harness.core.decoding import DECODERS, Decoder, Generation, TokenSink


@DECODERS.register("vanilla")
class Vanilla(Decoder):
    samples = True

    def _generate(self, prompt_ids, stop, on_first_token):
        cache = self.new_cache(prompt_ids, stop)
        sink = TokenSink(stop, on_first_token)
        token = self.pick(self.runner.forward(prompt_ids, cache, last_only=True))
        steps = 1
        while not sink.add(token):
            token = self.pick(self.runner.forward(token, cache))
            steps += 1
        return Generation(sink.tokens, {"steps": steps})
