"""Exit-head training: distillation lowers held-out KL, the file round-trips, the decoder uses it with parity."""
from decoders.adadecode.decoder import AdaDecode
from harness.core.self_distillation import frequent_tokens
from decoders.vanilla import Vanilla
from harness.core.decoding import StopCondition
from harness.core.heads import load_heads
from tasks.base import encode_prompt

PROMPTS = ["Summarize in one sentence: the city council approved a new park after months of debate.",
           "Write a Python function that returns the sum of a list of numbers.",
           "Summarize in one sentence: heavy rain flooded roads across the region on Monday morning.",
           "Write a Python function that checks whether a string is a palindrome."]


def test_training_lowers_held_out_kl_and_the_heads_decode_with_parity(runner, tmp_path):
    ids = [encode_prompt(p, runner.tokenizer) for p in PROMPTS]
    path = AdaDecode.train_heads(runner, "toy", ids, exit_layers=[20], steps=40, max_new_tokens=12, lr=3e-4,
                                 candidates=512, path=tmp_path / "adadecode-toy.safetensors")
    tensors, meta = load_heads(path)
    assert set(tensors) == {"exit.20", "candidates"} and meta["layers"] == [20] and meta["held_out_prompts"] == 1
    held_out = meta["held_out"]["20"]
    assert held_out["kl_after"] < 0.9 * held_out["kl_before"]
    decoder = AdaDecode(runner, heads_path=path, gamma=0.3)
    stop = StopCondition(16, frozenset(runner.eos_token_ids))
    assert decoder.generate(ids[0], stop).tokens == Vanilla(runner).generate(ids[0], stop).tokens


def test_frequent_tokens_keeps_the_most_common_ids():
    assert frequent_tokens([5, 5, 5, 9, 9, 1], 2).tolist() == [5, 9]
