"""EAGLE-2 (Li et al. 2024): a feature-level draft grows a dynamic tree, the model verifies it in one forward.

The draft (`decoders.eagle.draft.FeatureDraft`, trained per model and task) runs one layer over the model's
last-layer features and the next tokens' embeddings, so it keeps its own one-layer KV cache in step with the
model's. Each round, from the pending token (the root):
- depth 1: the draft's top-`top_k` tokens after the root, scored by their log-probability;
- each further level (up to `depth`): the `top_k` best-scored nodes of the last level are expanded (EAGLE-2's
  "most confident nodes"), each fed its parent's predicted feature and its own token, with the tree mask so that
  it sees only the cache and its ancestors; their top-`top_k` children are scored with the cumulative
  log-probability of their path;
- rerank: the `total_tokens` best-scored nodes of all drafted ones form the tree (a child never scores above its
  parent, so the choice is a tree).
The model runs the root and the tree in one forward (tree mask, positions by depth). Its greedy token at each node
comes from one lm-head call over all nodes (its weights, the largest matrix, are read once); the longest path it
agrees with is kept, plus its next token (the bonus), so the output is greedy decoding's. The accepted positions'
keys/values are moved into place, and the draft catches up on their true features in one chunk. Under sampling the
tree (a deterministic function of the context) is walked by recursive rejection sampling instead
(`CandidateTree.accept_sampled`), so the output keeps vanilla sampling's distribution.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness.core.decoding import CACHE_HEADROOM, DECODERS, Decoder, Generation, TokenSink
from harness.core.errors import HarnessError
from decoders.eagle.draft import FeatureDraft, train_feature_draft
from harness.core.heads import HeadsNeed, heads_file, load_heads, save_heads
from harness.core.model_runner import ModelRunner
from harness.core.speculation import SpeculationStats
from harness.core.tree import CandidateTree, ancestor_mask, verify_tree

KIND = "eagle"


@DECODERS.register(KIND)
class Eagle(Decoder):
    """Settings: `depth` (4), `top_k` (3), `total_tokens` (4, drafted nodes verified per round, the root aside):
    the fastest point of a sweep on this project's CPU, where a chunk of 17 positions costs 1.5 one position's (on a
    GPU, where it costs the same, larger trees pay). `draft` (a FeatureDraft) replaces the draft trained for the
    task."""
    exact_on_runner = False  # tree verification: see Decoder.exact_on_runner

    samples = True
    trains_heads = True

    def __init__(self, runner: ModelRunner, task: str | None = None, depth: int = 4, top_k: int = 3,
                 total_tokens: int = 4, draft: FeatureDraft | None = None) -> None:
        super().__init__(runner, task)
        self.check_ranges({"depth": depth, "top_k": top_k, "total_tokens": total_tokens})
        if draft is None:
            if task is None:
                raise HarnessError("eagle loads a draft trained for a task: build it with a task name")
            draft = load_draft(runner, heads_file(runner.name, KIND, task))
        self.draft = draft.eval()
        self.depth, self.top_k, self.total_tokens = depth, top_k, total_tokens

    def _generate(self, prompt_ids, stop, on_first_token):
        runner, draft = self.runner, self.draft
        cache = self.new_cache(prompt_ids, stop)
        draft_cache = draft.new_cache(cache.max_len)
        sink = TokenSink(stop, on_first_token)
        stats = SpeculationStats(steps=1)
        hidden = runner.run_layers(runner.embed(prompt_ids), cache)
        root = self.pick(runner.logits(hidden[:, -1:]))[0]
        guess = draft(hidden, runner.embed(prompt_ids[1:] + [root]), draft_cache)[:, -1:]
        sizes = []
        done = sink.add([root])
        while not done:
            tokens, parents = self._draft_tree(root, guess, draft_cache)
            tree, order = CandidateTree.from_parents(parents)
            tokens = [tokens[node] for node in order]
            new_tokens, path, out = verify_tree(runner, cache, tree, tokens, self.sampler)
            features = out[:, path]  # the model's features at the root and the accepted nodes
            guess = draft(features, runner.embed(new_tokens), draft_cache)[:, -1:]
            stats.record(tree.depth, len(new_tokens) - 1)
            sizes.append(tree.size)
            root = new_tokens[-1]
            done = sink.add(new_tokens)
        return Generation(sink.tokens, stats.as_dict() | {"mean_tree_size": sum(sizes) / len(sizes) if sizes else None})

    def _draft_tree(self, root: int, guess: torch.Tensor, draft_cache) -> tuple[list[int], list[int]]:
        """EAGLE-2's dynamic tree after `root`; `guess` [1, 1, d] is the draft's predicted feature after the root.
        Returns node tokens and parents (node 0 the root, every parent before its children)."""
        runner, k = self.runner, self.top_k
        committed = draft_cache.lengths[0]
        tokens, parents, depths, scores = [root], [-1], [0], [0.0]
        outputs = {0: guess[0, -1]}  # an expanded node's predicted feature, fed to its children
        frontier = self._children([0], guess[0], tokens, parents, depths, scores)
        expanded: list[int] = []
        for _ in range(1, self.depth):
            chosen = sorted(frontier, key=lambda n: -scores[n])[:k]
            expanded += chosen
            local = {node: i for i, node in enumerate(expanded)}
            draft_cache.crop(committed)  # every expanded node again, so that each sees only its own ancestors
            out = self.draft(torch.stack([outputs[parents[n]] for n in expanded])[None],
                             runner.embed([tokens[n] for n in expanded]), draft_cache,
                             positions=torch.tensor([committed + depths[n] - 1 for n in expanded], device=runner.device),
                             chunk_mask=ancestor_mask([local.get(parents[n], -1) for n in expanded], runner.device))
            for i, node in enumerate(chosen):
                outputs[node] = out[0, len(expanded) - len(chosen) + i]
            frontier = self._children(chosen, out[0, -len(chosen):], tokens, parents, depths, scores)
        draft_cache.crop(committed)
        kept = sorted(range(1, len(tokens)), key=lambda n: (-scores[n], depths[n]))[:self.total_tokens]
        renumber = {0: 0} | {node: i for i, node in enumerate(sorted(kept), 1)}  # parents stay before children
        return [tokens[n] for n in renumber], [-1] + [renumber[parents[n]] for n in sorted(kept)]

    def _children(self, nodes: list[int], features: torch.Tensor, tokens: list[int], parents: list[int],
                  depths: list[int], scores: list[float]) -> list[int]:
        """Adds the draft's top-k tokens after each of `nodes` (features [len(nodes), d]); returns the new nodes."""
        new = []
        for node, values, ids in zip(nodes, *self.draft.top_tokens(features, self.top_k)):
            for value, token in zip(values, ids):
                new.append(len(tokens))
                tokens.append(token)
                parents.append(node)
                depths.append(depths[node] + 1)
                scores.append(scores[node] + value)
        return new

    @classmethod
    def check_ranges(cls, settings: dict[str, Any]) -> None:
        depth, top_k, total_tokens = settings["depth"], settings["top_k"], settings["total_tokens"]
        if min(depth, top_k, total_tokens) < 1:
            raise HarnessError(f"eagle needs depth, top_k and total_tokens of 1 or more, got {depth}, {top_k}, "
                               f"{total_tokens}")
        if max(total_tokens + 1, top_k * (depth - 1) + depth + 1) > CACHE_HEADROOM:
            raise HarnessError(f"eagle's tree needs more than the {CACHE_HEADROOM} spare cache slots; lower "
                               "total_tokens, or top_k × depth")

    @classmethod
    def heads_needed(cls, model_name: str, task: str | None, settings: dict) -> HeadsNeed | None:
        if task is None or settings.get("draft") is not None:
            return None
        return HeadsNeed(KIND, task, heads_file(model_name, KIND, task))

    @classmethod
    def default_recipe(cls, runner: ModelRunner) -> dict:
        """`train-heads` settings of the draft measured in the README: every training row a task reserves (up to
        400), 64 tokens each, the token loss at full weight and an 8 192-token draft vocabulary."""
        return {"prompts": 400, "max_new_tokens": 64, "steps": 1200, "token_weight": 1.0, "draft_vocab": 8192}

    @classmethod
    def train_heads(cls, runner: ModelRunner, task_name: str, prompt_ids_list: list[list[int]], max_new_tokens: int = 96,
                    steps: int = 300, metadata: dict | None = None, **settings: Any) -> Path:
        """Trains the draft by self-distillation on the model's greedy continuations; saves it with its figures."""
        draft, figures = train_feature_draft(runner, prompt_ids_list, int(max_new_tokens), int(steps), **settings)
        meta = {**(metadata or {}), "model": runner.name, "kind": KIND, "task": task_name, **figures}
        return save_heads(heads_file(runner.name, KIND, task_name), draft.state_dict(), meta)


def load_draft(runner: ModelRunner, path: Path) -> FeatureDraft:
    """The draft stored at `path` (a missing file names the command that trains it)."""
    tensors = load_heads(path)[0]
    draft = FeatureDraft(runner, tensors.get("vocab"))
    draft.load_state_dict(tensors)
    draft.runner.repack()
    return draft
