"""Every decoder's prefill computes the lm head on the last prompt position only (what it uses)."""
import pytest
import torch

import decoders  # noqa: F401  (registers the decoders)
from decoders.medusa.heads import MedusaHeads
from harness.core.decoding import DECODERS, StopCondition
from decoders.eagle.draft import FeatureDraft
from harness.core.heads import ExitHead
from harness.core.random_models import TINY, random_runner

PROMPT = list(range(10, 60))  # 50 positions
SETTINGS = {
    "vanilla": {}, "hf_generate": {},
    "layerskip": {"exit_layer": 3, "speculations": 2},
    "self_speculative": {"skip_attention": [2], "skip_mlp": [4], "threshold": 0.0},
    "adadecode": {"heads": {3: ExitHead(TINY["hidden_size"])}, "gamma": 0.0, "vocabulary": "full"},
    "medusa": {"heads": MedusaHeads(2, TINY["hidden_size"]), "tree": "chain"},
    "pld": {"k": 4},
    "eagle": {"draft": "untrained"},
}


@pytest.fixture(scope="module")
def tiny():
    return random_runner(TINY)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_prefill_runs_the_lm_head_on_the_last_position_only(tiny, name, monkeypatch):
    assert set(SETTINGS) == {n for n in DECODERS.names() if DECODERS.get(n).__module__.startswith("decoders.")
                             and DECODERS.get(n).needs_package is None}  # a peer's own engine has no lm head
    rows = []  # the rows of every lm-head pass: the runner's own (native kernels) or the module's (eager)
    hook = tiny.lm_head.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[-2]))
    logits = tiny.logits
    monkeypatch.setattr(tiny, "logits", lambda hidden: rows.append(hidden.shape[1]) or logits(hidden))
    try:
        settings = dict(SETTINGS[name])
        if settings.get("draft") == "untrained":
            settings["draft"] = FeatureDraft(tiny)
        decoder = DECODERS.get(name)(tiny, **settings)
        decoder.generate(PROMPT, StopCondition(4, frozenset()))
    finally:
        hook.remove()
    assert rows and max(rows) < 10, rows  # never the 50 prompt positions
    assert rows[0] == 1  # the prefill's logits: one position


def test_forward_last_only_gives_the_last_row_of_the_full_logits(tiny):
    full = tiny.forward(PROMPT, tiny.new_cache(64))
    last = tiny.forward(PROMPT, tiny.new_cache(64), last_only=True)
    assert last.shape == (1, TINY["vocab_size"]) and torch.allclose(last, full[-1:], atol=1e-5)
