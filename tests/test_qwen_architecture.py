"""The Qwen2 architecture without a download: a random-weight Qwen2 of Qwen2.5-Coder-0.5B's shape ratios (q/k/v
biases, grouped heads 7:1 for 14:2, a tied lm head, the sliding window configured but off), on which the runner
computes what transformers computes and every decoder's output equals vanilla's (the device check's planted
settings, under which each decoder drafts, is rejected and rolls back)."""
import copy

import pytest
import torch

import decoders  # noqa: F401  (registers the decoders)
from benchmarks.device_check import planted_settings, random_prompts
from harness.core.decoding import DECODERS, StopCondition
from harness.core.loading import sliding_window
from harness.checks.parity import check

NEW_TOKENS = 24
PLAN = {"prompts": 2, "prompt_tokens": 16}
TREE_DECODERS = {"medusa", "eagle"}  # not bit-exact on the packed path (`Decoder.exact_on_runner`)


def test_the_random_qwen_has_the_real_architectures_traits(qwen):
    model = qwen.model
    attention = model.model.layers[0].self_attn
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert all(getattr(attention, f"{p}_proj").bias.abs().min() > 0 for p in "qkv") and attention.o_proj.bias is None
    assert (qwen.n_heads, qwen.n_kv_heads) == (7, 1)
    assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)  # tied (the runner keeps a copy)
    assert sliding_window(qwen.config) is None


@torch.inference_mode()
@pytest.mark.parametrize("fixture", ["qwen", "qwen_bf16"])
def test_the_runner_computes_the_models_own_logits(request, fixture):
    """Both arithmetics (eager float32, packed bf16) against transformers' forward of the same weights in float32."""
    runner = request.getfixturevalue(fixture)
    ids = random_prompts(runner, PLAN)[0]
    cache = runner.new_cache(len(ids))
    ours = runner.forward(ids, cache)
    theirs = copy.deepcopy(runner.model).float()(torch.tensor([ids])).logits[0]
    tolerance = 1e-4 if runner.dtype == torch.float32 else 0.1 * theirs.abs().max().item()
    assert (ours - theirs).abs().max().item() < tolerance


def _parity(runner, names) -> dict:
    prompts = random_prompts(runner, PLAN)
    stop = StopCondition(NEW_TOKENS, frozenset())
    vanilla = DECODERS.get("vanilla")(runner)
    references = [vanilla.generate(p, stop).tokens for p in prompts]
    settings = planted_settings(runner)
    verdicts = {}
    for name in names:
        decoder = DECODERS.get(name)(runner, **settings[name])
        generations = [decoder.generate(p, stop) for p in prompts]
        verdicts[name] = {"parity": [check(runner, decoder.exact_on_runner, p, r, g.tokens)["class"]
                                     for p, r, g in zip(prompts, references, generations)],
                          "drafted": sum(g.stats.get("drafted", 0) for g in generations),
                          "accepted": sum(g.stats.get("accepted", 0) for g in generations)}
    return verdicts


ALL = [name for name in DECODERS.names()  # the project's decoders, not those other test modules register, nor the
       if name != "vanilla" and DECODERS.get(name).__module__.startswith("decoders.")  # optional CTranslate2 peer
       and DECODERS.get(name).needs_package is None]  # (tests/test_ctranslate2_peer.py)


def test_every_decoder_equals_vanilla_on_the_random_qwen_in_float32(qwen):
    verdicts = _parity(qwen, ALL)
    assert {name: v["parity"] for name, v in verdicts.items()} == {name: ["exact"] * PLAN["prompts"] for name in ALL}
    rolled_back = {name for name, v in verdicts.items() if v["drafted"] > v["accepted"]}
    assert rolled_back >= {"layerskip", "self_speculative", "adadecode", "medusa", "eagle"}


def test_every_decoder_equals_vanilla_on_the_random_qwen_on_the_packed_bf16_path(qwen_bf16):
    """Causal-chunk decoders bit for bit; tree verifiers exact or at a numerical near-tie (never a mismatch)."""
    verdicts = _parity(qwen_bf16, ALL)
    for name, verdict in verdicts.items():
        allowed = {"exact", "near_tie"} if name in TREE_DECODERS | {"hf_generate"} else {"exact"}
        assert set(verdict["parity"]) <= allowed, (name, verdict)
