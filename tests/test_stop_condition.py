"""The stop condition: the earliest stop of any kind wins, and stop strings are checked over new text only."""
from harness.core.decoding import StopCondition, TokenSink
from harness.core.loading import checkpoint_folder

EOS = 0


class CharTokenizer:
    """Token i is the character chr(i) (EOS, 0, decodes to "<eos>"); counts the tokens it decodes."""

    def __init__(self):
        self.decoded = 0

    def decode(self, ids):
        self.decoded += len(ids)
        return "".join("<eos>" if i == EOS else chr(i) for i in ids)


def chars(text):
    return [ord(c) for c in text]


def test_a_stop_string_before_an_eos_in_the_same_chunk_wins():
    stop = StopCondition(50, frozenset({EOS}), ("\n\n",), CharTokenizer())
    tokens, done = stop.cut(chars("plan.\n\nIt will") + [EOS])
    assert done and tokens == chars("plan.\n\n")


def test_an_eos_before_a_stop_string_wins():
    stop = StopCondition(50, frozenset({EOS}), ("\n\n",), CharTokenizer())
    assert stop.cut(chars("plan.") + [EOS] + chars("\n\n")) == (chars("plan.") + [EOS], True)


def test_one_chunk_stops_where_one_token_at_a_time_stops():
    tokens = chars("a\nb\n\nc d") + [EOS] + chars("zz")
    one_by_one = TokenSink(StopCondition(50, frozenset({EOS}), ("\n\n",), CharTokenizer()))
    for token in tokens:
        if one_by_one.add([token]):
            break
    chunked = TokenSink(StopCondition(50, frozenset({EOS}), ("\n\n",), CharTokenizer()))
    chunked.add(tokens[:2])
    chunked.add(tokens[2:])
    assert chunked.tokens == one_by_one.tokens == chars("a\nb\n\n")


def test_a_stop_string_across_two_adds_is_found():
    sink = TokenSink(StopCondition(50, frozenset(), ("STOP",), CharTokenizer()))
    assert not sink.add(chars("xxST"))
    assert sink.add(chars("OPyy")) and sink.tokens == chars("xxSTOP")


def test_stop_strings_cost_the_new_tokens_not_the_whole_output():
    tokenizer = CharTokenizer()
    sink = TokenSink(StopCondition(2000, frozenset(), ("\n\n",), tokenizer))
    for _ in range(1000):
        sink.add(chars("a"))
    assert len(sink.tokens) == 1000
    assert tokenizer.decoded < 10 * 1000  # the whole output at every step would be ~500 000


def test_smollm2_tokens_stop_at_the_blank_line_not_at_the_eos():
    """The issue's reproduction with the real tokenizer: one accepted chunk holding "\\n\\n", more text and EOS."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint_folder("smollm2"))
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = tokenizer("The council approved the plan.\n\nIt will", add_special_tokens=False)["input_ids"] + [eos]
    stop = StopCondition(64, frozenset({eos}), ("\n\n",), tokenizer)
    tokens, done = stop.cut(ids)
    assert done and tokenizer.decode(tokens).endswith("plan.\n\n") and eos not in tokens
