"""transformers' own `model.generate(do_sample=False)`: a yardstick for the harness's loop and for parity.

It does not use the model-runner core; it lets a user check, in one run, that `vanilla` is neither slower than
nor different from the library they would otherwise call. With `prompt_lookup_num_tokens` it runs transformers'
own prompt lookup decoding (assisted generation with n-gram candidates, matched up to `max_matching_ngram_size`
tokens), the implementation the harness's `pld` is measured against.
"""
from __future__ import annotations

import torch

from harness.core.decoding import DECODERS, Decoder, Generation, TokenSink


@DECODERS.register("hf_generate")
class HFGenerate(Decoder):
    """Settings: `prompt_lookup_num_tokens` (None: plain greedy; k: prompt lookup drafting k tokens per round),
    `max_matching_ngram_size` (transformers' default 2; used only with prompt lookup)."""

    def __init__(self, runner, task=None, prompt_lookup_num_tokens: int | None = None,
                 max_matching_ngram_size: int | None = None, **settings):
        super().__init__(runner, task, prompt_lookup_num_tokens=prompt_lookup_num_tokens,
                         max_matching_ngram_size=max_matching_ngram_size, **settings)
        self.lookup = {} if prompt_lookup_num_tokens is None else {
            "prompt_lookup_num_tokens": int(prompt_lookup_num_tokens),
            **({} if max_matching_ngram_size is None else {"max_matching_ngram_size": int(max_matching_ngram_size)})}

    def _generate(self, prompt_ids, stop, on_first_token):
        model = self.runner.model
        extra = {"stop_strings": list(stop.stop_strings), "tokenizer": stop.tokenizer} if stop.stop_strings else {}
        out = model.generate(torch.tensor([prompt_ids], device=self.runner.device), do_sample=False,
                             max_new_tokens=stop.max_new_tokens, eos_token_id=sorted(stop.eos_token_ids) or None,
                             pad_token_id=self.runner.tokenizer.pad_token_id, **extra, **self.lookup)
        sink = TokenSink(stop)  # generate has no first-token hook, so time to first token stays unmeasured
        sink.add(out[0, len(prompt_ids):].tolist())
        # Assisted generation does not report its forward passes; plain greedy makes one per token.
        return Generation(sink.tokens, {} if self.lookup else {"steps": len(sink.tokens)})
