"""The runner's one primitive must give the same logits however positions and layers are scheduled."""
import torch

TOL = 2e-4  # max |Δlogit| in float32; logits are O(10), so this is ~1e-5 relative


def _prompt(runner):
    ids = runner.tokenizer("def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n")["input_ids"]
    return ids[:24]


def _one_at_a_time(runner, ids, cache):
    return torch.cat([runner.forward([t], cache) for t in ids])


@torch.inference_mode()
def test_one_token_at_a_time_equals_one_chunk(runner):
    ids = _prompt(runner)
    chunk = runner.forward(ids, runner.new_cache(64))
    single = _one_at_a_time(runner, ids, runner.new_cache(64))
    assert (chunk - single).abs().max().item() < TOL
    assert chunk.argmax(-1).tolist() == single.argmax(-1).tolist()


@torch.inference_mode()
def test_shallow_layers_ahead_then_deep_layers_catch_up_as_a_chunk(runner):
    ids, split, ahead = _prompt(runner), 11, 4
    reference = runner.forward(ids, runner.new_cache(64))
    cache = runner.new_cache(64)
    prefix = len(ids) - ahead
    logits = [runner.forward(ids[:prefix], cache)]
    # The last `ahead` positions run only the shallow layers, one at a time, leaving the deep layers behind ...
    pending = [runner.run_layers(runner.embed([t]), cache, 0, split) for t in ids[prefix:]]
    assert cache.lengths[split - 1] == len(ids) and cache.lengths[split] == prefix
    # ... then go through the deep layers together as one chunk.
    deep = runner.run_layers(torch.cat(pending, dim=1), cache, split, runner.n_layers)
    logits.append(runner.logits(deep))
    assert cache.lengths == [len(ids)] * runner.n_layers
    assert (torch.cat(logits) - reference).abs().max().item() < TOL


@torch.inference_mode()
def test_crop_and_recompute(runner):
    ids = _prompt(runner)
    reference = runner.forward(ids, runner.new_cache(64))
    cache = runner.new_cache(64)
    runner.forward(ids, cache)
    wrong = [13, 13, 13]
    runner.forward(wrong, cache)  # a rejected draft
    cache.crop(len(ids) - 5)
    assert cache.lengths == [len(ids) - 5] * runner.n_layers
    again = runner.forward(ids[-5:], cache)
    assert (again - reference[-5:]).abs().max().item() < TOL
