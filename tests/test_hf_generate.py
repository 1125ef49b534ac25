"""transformers' generate, plain and with its own prompt lookup decoding, gives vanilla's tokens on real prompts."""
import pytest
from transformers.generation.candidate_generator import PromptLookupCandidateGenerator

from decoders.hf_generate import HFGenerate
from spec_planting import real_prompts, stop_after, vanilla_tokens

NEW_TOKENS = 24


@pytest.mark.parametrize("settings", [{}, {"prompt_lookup_num_tokens": 10, "max_matching_ngram_size": 3}])
def test_real_prompts_give_vanilla_tokens(runner, shared_data, monkeypatch, settings):
    lookups = []
    original = PromptLookupCandidateGenerator.get_candidates
    monkeypatch.setattr(PromptLookupCandidateGenerator, "get_candidates",
                        lambda self, *a, **k: lookups.append(self.max_matching_ngram_size) or original(self, *a, **k))
    decoder = HFGenerate(runner, **settings)
    for prompt in real_prompts(runner, shared_data, 2):
        assert decoder.generate(prompt, stop_after(runner, NEW_TOKENS)).tokens == \
            vanilla_tokens(runner, prompt, NEW_TOKENS)
    assert set(lookups) == ({3} if settings else set())  # transformers' prompt lookup ran only when asked for
