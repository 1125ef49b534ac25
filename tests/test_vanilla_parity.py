"""The vanilla decoder is the parity reference, so it must equal transformers' own greedy `generate`."""
import torch

from decoders.vanilla import Vanilla
from harness.core.decoding import StopCondition
from tasks.humaneval import HumanEval
from tasks.base import encode_prompt

NEW_TOKENS = 64


def test_vanilla_equals_model_generate_on_real_prompts(runner):
    prompts = [s.prompt for s in HumanEval().samples(3)] + [
        "Explain in detail how a hash map works and when its lookups become slow.",
        "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    ]
    decoder = Vanilla(runner)
    for prompt in prompts:
        ids = encode_prompt(prompt, runner.tokenizer)
        ours = decoder.generate(ids, StopCondition(NEW_TOKENS, frozenset(runner.eos_token_ids))).tokens
        with torch.inference_mode():
            out = runner.model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False)
        reference = out[0, len(ids):].tolist()
        assert len(reference) == NEW_TOKENS, "pick prompts whose answers run to the full budget"
        assert ours == reference
