"""transformers' own `model.generate(do_sample=False)`: a yardstick for the harness's loop and for parity.

It does not use the model-runner core; it lets a user check, in one run, that `vanilla` is neither slower than
nor different from the library they would otherwise call.
"""
from __future__ import annotations

import torch

from harness.core.decoding import DECODERS, Decoder, Generation, TokenSink


@DECODERS.register("hf_generate")
class HFGenerate(Decoder):
    def _generate(self, prompt_ids, stop, on_first_token):
        model = self.runner.model
        extra = {"stop_strings": list(stop.stop_strings), "tokenizer": stop.tokenizer} if stop.stop_strings else {}
        out = model.generate(torch.tensor([prompt_ids], device=self.runner.device), do_sample=False,
                             max_new_tokens=stop.max_new_tokens, eos_token_id=sorted(stop.eos_token_ids) or None,
                             pad_token_id=self.runner.tokenizer.pad_token_id, **extra)
        sink = TokenSink(stop)  # generate has no first-token hook, so time to first token stays unmeasured
        sink.add(out[0, len(prompt_ids):].tolist())
        return Generation(sink.tokens, {"steps": len(sink.tokens)})
