"""EAGLE-2: vanilla's tokens with an untrained and a trained draft, a planted tree whose right path is not the first
branch, both caches exact after decoding, the reranked tree closed under parents, and the draft's storage."""
import pytest
import torch

from decoders.eagle.decoder import Eagle
from harness.core.errors import HarnessError, MissingHeads
from decoders.eagle.draft import FeatureDraft
from harness.core.heads import heads_file, load_heads
from spec_planting import assert_cache_holds_the_full_models_keys, real_prompts, stop_after, vanilla_tokens

NEW_TOKENS = 24
SPARE = 8  # reference tokens past the budget: the last round may accept beyond it


def untrained(runner) -> FeatureDraft:
    torch.manual_seed(0)
    return FeatureDraft(runner)


class Watched(Eagle):
    """Keeps both caches and each round's tree, for the checks after decoding."""

    def _generate(self, prompt_ids, stop, on_first_token):
        self.trees = []
        return super()._generate(prompt_ids, stop, on_first_token)

    def _draft_tree(self, root, guess, draft_cache):
        self.draft_cache = draft_cache
        tokens, parents = super()._draft_tree(root, guess, draft_cache)
        self.trees.append(parents)
        return tokens, parents

    def new_cache(self, prompt_ids, stop):
        self.cache = super().new_cache(prompt_ids, stop)
        return self.cache


class Planted(Watched):
    """A fixed tree from the known output: under the root a wrong token, then the right one with a right child that
    has a wrong sibling and a right child of its own; so each round accepts 3 tokens plus the bonus."""

    def __init__(self, runner, reference, prompt_len, **settings):
        super().__init__(runner, **settings)
        self.reference, self.prompt_len = reference, prompt_len

    def _draft_tree(self, root, guess, draft_cache):
        self.draft_cache = draft_cache
        i = draft_cache.lengths[0] - self.prompt_len  # the root's index in the output
        right = [self.reference[j] if j < len(self.reference) else 0 for j in range(i + 1, i + 4)]
        tokens = [root, right[0] + 1, right[0], right[1] + 1, right[1], right[2]]
        parents = [-1, 0, 0, 2, 2, 4]
        self.trees.append(parents)
        return tokens, parents


def check_caches(runner, decoder, prompt, reference):
    """The model's cache holds a full pass's keys/values; the draft's, a fresh draft pass over the true features."""
    full = prompt + reference
    assert_cache_holds_the_full_models_keys(runner, decoder.cache, full)
    n = decoder.cache.lengths[0]
    assert decoder.draft_cache.lengths == [n]
    with torch.inference_mode():
        features = runner.run_layers(runner.embed(full[:n]), runner.new_cache(n))
        fresh = decoder.draft.new_cache(n)
        decoder.draft(features, runner.embed(full[1:n + 1]), fresh)
    assert (decoder.draft_cache.k[:, :, :, :n] - fresh.k[:, :, :, :n]).abs().max().item() < 1e-3
    assert (decoder.draft_cache.v[:, :, :, :n] - fresh.v[:, :, :, :n]).abs().max().item() < 1e-3


@pytest.fixture(scope="module")
def cases(runner, shared_data):
    return [(p, vanilla_tokens(runner, p, NEW_TOKENS + SPARE)) for p in real_prompts(runner, shared_data, 2)]


def test_untrained_draft_gives_vanilla_tokens_with_exact_caches(runner, cases):
    decoder = Watched(runner, draft=untrained(runner), depth=4, top_k=3, total_tokens=10)
    for prompt, reference in cases:
        generation = decoder.generate(prompt, stop_after(runner, NEW_TOKENS))
        assert generation.tokens == reference[:NEW_TOKENS]
        check_caches(runner, decoder, prompt, reference)
        assert all(len(parents) == 11 for parents in decoder.trees)  # root + total_tokens
        assert generation.stats["steps"] == 1 + len(decoder.trees)


def test_planted_tree_accepts_the_right_path_whichever_branch_it_is(runner, cases):
    prompt, reference = cases[1]
    decoder = Planted(runner, reference, len(prompt), draft=untrained(runner))
    generation = decoder.generate(prompt, stop_after(runner, NEW_TOKENS))
    assert generation.tokens == reference[:NEW_TOKENS]
    lengths = generation.stats["acceptance_lengths"]
    assert lengths[:-1] == [4] * (len(lengths) - 1) and generation.stats["drafted"] == 3 * len(lengths)
    check_caches(runner, decoder, prompt, reference)


def test_the_reranked_tree_keeps_every_parent_and_the_best_scores(runner, cases):
    prompt, _ = cases[0]
    scored = []

    class Scores(Watched):
        def _children(self, nodes, features, tokens, parents, depths, scores):
            new = super()._children(nodes, features, tokens, parents, depths, scores)
            scored.append((list(tokens), list(parents), list(scores)))
            return new

    decoder = Scores(runner, draft=untrained(runner), depth=3, top_k=3, total_tokens=7)
    decoder.generate(prompt, stop_after(runner, 3))
    tokens, parents, scores = scored[2]  # the first round's whole draft: 3 + 3 × 3 + 3 × 3 nodes
    assert len(tokens) == 1 + 3 + 9 + 9
    kept = sorted(range(1, len(tokens)), key=lambda n: -scores[n])[:7]
    assert all(parents[n] == 0 or parents[n] in kept for n in kept)
    assert decoder.trees[0] == [-1] + [1 + sorted(kept).index(parents[n]) if parents[n] else 0 for n in sorted(kept)]


def test_trained_draft_is_stored_loaded_and_gives_vanilla_tokens(runner, cases, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTDECODE_CACHE", str(tmp_path))
    # The held-out prompt (the last) is a training prompt again: this checks that training learns, not how well it
    # generalises (the README reports that, on held-out rows)
    prompts = [p for p, _ in cases] + [cases[0][0]]
    path = Eagle.train_heads(runner, "toy", prompts, max_new_tokens=12, steps=15, batch_tokens=512)
    tensors, meta = load_heads(path)
    assert path == heads_file(runner.name, "eagle", "toy") and {"fc.weight", "layer.mlp.up_proj.weight"} <= set(tensors)
    assert meta["steps"] == 15 and meta["held_out_prompts"] == 1 and meta["held_out_top1_after"] > \
        meta["held_out_top1_before"]
    decoder = Eagle(runner, task="toy")
    assert torch.equal(decoder.draft.fc.weight, tensors["fc.weight"])
    accepted = 0
    for prompt, reference in cases:
        generation = decoder.generate(prompt, stop_after(runner, NEW_TOKENS))
        assert generation.tokens == reference[:NEW_TOKENS]
        accepted += generation.stats["accepted"]
    assert accepted > 0  # the trained draft guesses right sometimes, so accepted paths are exercised


def test_bad_settings_and_a_missing_draft_are_clear_errors(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTDECODE_CACHE", str(tmp_path))
    with pytest.raises(MissingHeads, match="no trained eagle heads for nosuchtask at"):
        Eagle(runner, task="nosuchtask")
    with pytest.raises(HarnessError, match="depth, top_k and total_tokens of 1 or more"):
        Eagle(runner, draft=untrained(runner), top_k=0)
    with pytest.raises(HarnessError, match="spare cache slots"):
        Eagle(runner, draft=untrained(runner), total_tokens=200)


def test_a_bf16_draft_trains_every_weight_and_decodes_with_the_weights_it_was_given(runner_bf16, tmp_path, monkeypatch):
    """On the packed bf16 path the draft's layer runs on packed copies of its weights: training must reach the
    layer (autograd takes the eager path) and a trained or loaded draft must decode with its own weights."""
    from decoders.eagle.decoder import load_draft
    from harness.core.heads import save_heads
    from harness.core.random_models import CONFIGS, random_runner

    monkeypatch.setenv("FASTDECODE_CACHE", str(tmp_path))
    tiny = random_runner(CONFIGS["tiny"], torch.bfloat16)
    assert tiny.exact_chunks
    prompts = [[5 + i, 9, 40 + i, 7, 11] for i in range(4)]
    path = Eagle.train_heads(tiny, "toy", prompts, max_new_tokens=8, steps=3, batch_tokens=64)
    trained = load_heads(path)[0]
    assert not torch.equal(trained["layer.mlp.down_proj.weight"], tiny.layers[-1].mlp.down_proj.weight)

    draft = load_draft(tiny, path)
    with torch.no_grad():
        draft.layer.mlp.down_proj.weight.mul_(4)  # far from the stored weights and the target's last layer
    save_heads(path, draft.state_dict(), {})
    loaded = load_draft(tiny, path)
    features, embeddings = torch.randn(1, 6, 64, dtype=torch.bfloat16), tiny.embed([3, 4, 5, 6, 7, 8])
    with torch.inference_mode():
        packed = loaded(features, embeddings, loaded.new_cache(8))
    with torch.enable_grad():  # the eager path, on the module's weights themselves
        eager = loaded(features.clone().requires_grad_(), embeddings.detach(), loaded.new_cache(8)).detach()
    assert (packed.float() - eager.float()).abs().max() < 0.05 * eager.float().abs().max()


def test_a_reduced_draft_vocabulary_drafts_only_its_tokens_and_keeps_vanillas_output(tmp_path, monkeypatch):
    from decoders.eagle.decoder import load_draft
    from harness.core.decoding import DECODERS, StopCondition
    from harness.core.random_models import CONFIGS, random_runner

    monkeypatch.setenv("FASTDECODE_CACHE", str(tmp_path))
    tiny = random_runner(CONFIGS["tiny"], torch.float32)
    prompts = [[5 + i, 9, 40 + i, 7, 11, 5 + i, 9] for i in range(6)]
    path = Eagle.train_heads(tiny, "toy", prompts, max_new_tokens=10, steps=4, batch_tokens=64, draft_vocab=24)
    tensors, meta = load_heads(path)
    vocab = set(tensors["vocab"].tolist())
    assert len(vocab) <= 24 and meta["draft_vocab"] == len(vocab) and 0 <= meta["held_out_in_vocab"] <= 1
    assert "layer.mlp.up_proj.weight" in tensors and not any(k.startswith("head") for k in tensors)
    draft = load_draft(tiny, path)
    drafted = []

    class Recording(Eagle):
        def _draft_tree(self, root, guess, draft_cache):
            tokens, parents = super()._draft_tree(root, guess, draft_cache)
            drafted.extend(tokens[1:])
            return tokens, parents

    stop = StopCondition(16, frozenset())
    for prompt in prompts[:2]:
        reference = DECODERS.get("vanilla")(tiny).generate(prompt, stop).tokens
        assert Recording(tiny, draft=draft, depth=3, top_k=2, total_tokens=5).generate(prompt, stop).tokens == reference
    assert drafted and set(drafted) <= vocab
