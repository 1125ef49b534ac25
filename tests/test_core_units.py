import pytest
import torch

from harness.core.decoding import StopCondition, TokenSink, accepted_prefix_length
from harness.core.errors import HarnessError
from harness.core.kv_cache import LayeredKVCache
from harness.core.registry import Registry


def test_cache_keeps_per_layer_lengths_and_rolls_back():
    cache = LayeredKVCache(3, 1, 2, 8, torch.float32, "cpu")
    kv = torch.arange(6, dtype=torch.float32).reshape(1, 1, 3, 2)
    for layer in range(3):
        cache.append(layer, kv, kv)
    cache.append(0, kv[:, :, :1], kv[:, :, :1])
    assert cache.lengths == [4, 3, 3]
    keys, _ = cache.append(1, kv[:, :, :2] + 100, kv[:, :, :2])
    assert keys.shape[2] == 5 and cache.lengths == [4, 5, 3]
    cache.crop(3)
    assert cache.lengths == [3, 3, 3]


def test_keep_slots_moves_the_accepted_path_into_place():
    cache = LayeredKVCache(1, 1, 1, 8, torch.float32, "cpu")
    cache.append(0, torch.arange(6.0).reshape(1, 1, 6, 1), torch.arange(6.0).reshape(1, 1, 6, 1))
    cache.keep_slots(2, [3, 5])
    assert cache.lengths == [4]
    assert cache.k[0, 0, 0, :4, 0].tolist() == [0, 1, 3, 5]


def test_cache_overflow_is_a_clear_error():
    cache = LayeredKVCache(1, 1, 1, 2, torch.float32, "cpu")
    with pytest.raises(HarnessError, match="KV cache full"):
        cache.append(0, torch.zeros(1, 1, 3, 1), torch.zeros(1, 1, 3, 1))


def test_stop_condition_keeps_the_stopping_token_and_the_budget():
    stop = StopCondition(5, frozenset({2}))
    assert stop.cut([7, 8, 2, 9]) == ([7, 8, 2], True)
    assert stop.cut([7, 8, 9]) == ([7, 8, 9], False)
    assert stop.cut([1, 1, 1, 1, 1, 1, 1]) == ([1] * 5, True)


class _CharTokenizer:
    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_stop_strings_cut_at_the_token_that_completes_them():
    stop = StopCondition(50, frozenset(), ("\nclass",), _CharTokenizer())
    text = [ord(c) for c in "x = 1\nclass A"]
    tokens, done = stop.cut(text)
    assert done and _CharTokenizer().decode(tokens) == "x = 1\nclass"


def test_sink_signals_first_token_once_and_applies_the_stop():
    calls = []
    sink = TokenSink(StopCondition(3, frozenset()), lambda: calls.append(1))
    assert not sink.add([5])
    assert sink.add([6, 7, 8])
    assert sink.tokens == [5, 6, 7] and calls == [1]


def test_accepted_prefix_length():
    assert accepted_prefix_length([1, 2, 3], [1, 2, 4, 5]) == 2
    assert accepted_prefix_length([], [1]) == 0
    assert accepted_prefix_length([1, 2], [1, 2, 9]) == 2


def test_registry_lists_known_names_on_a_typo():
    reg: Registry[type] = Registry("decoder")
    reg.register("vanilla")(type("V", (), {}))
    with pytest.raises(HarnessError, match="unknown decoder 'vanila'; known decoders: vanilla"):
        reg.parse_list("vanila")
