"""Medusa-style decoding: extra heads guess several tokens ahead, a candidate tree verifies them in one pass.

K heads sit on the last layer's hidden state; head i guesses the token i + 2 ahead of that position (the model's
own lm head gives the next one). Each head is a residual block x + SiLU(W x + b), W and b zero-initialised, in
front of the model's own final norm and lm head (shared, frozen). Each round the heads' top-k guesses fill a
candidate tree (`harness.core.tree`); one forward over the tree, with the tree attention mask and positions,
verifies every path at once. The longest path that greedy decoding agrees with is accepted, plus the token greedy
picks after it (the bonus), so the output is exactly greedy decoding's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from harness.core.decoding import CACHE_HEADROOM, DECODERS, Decoder, Generation, TokenSink
from harness.core.errors import HarnessError
from harness.core.heads import HeadsNeed, heads_file, load_heads
from harness.core.kv_cache import LayeredKVCache
from harness.core.model_runner import ModelRunner
from harness.core.speculation import SpeculationStats
from harness.core.tree import CandidateTree, parse_tree, verify_tree
from decoders.medusa.heads import MedusaHeads, train_medusa_heads

# Small trees for a CPU, where each extra node costs real time; paths are top-k indices per position.
TREES: dict[str, list[tuple[int, ...]]] = {
    "default": [(0,), (1,), (2,), (0, 0), (0, 1), (1, 0), (0, 0, 0)],
    "wide": [(0,), (1,), (2,), (3,), (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0), (0, 0, 0), (0, 0, 1),
             (0, 1, 0), (1, 0, 0), (0, 0, 0, 0)],
}


@DECODERS.register("medusa")
class Medusa(Decoder):
    """Settings: `tree` ("default", "wide", "chain" = top-1 at every head, or a JSON list of top-k index paths).
    `heads` (a MedusaHeads module) replaces the trained heads loaded for the task. Under sampling the tree is
    verified by recursive rejection sampling (lossless), not by Medusa's typical acceptance (lossy)."""
    exact_on_runner = False  # tree verification: see Decoder.exact_on_runner

    samples = True
    trains_heads = True

    def __init__(self, runner: ModelRunner, task: str | None = None,
                 tree: str | list[list[int]] | CandidateTree = "default", heads: MedusaHeads | None = None) -> None:
        super().__init__(runner, task)
        if heads is None:
            if task is None:
                raise HarnessError("medusa loads heads trained for a task: build it with a task name")
            heads = MedusaHeads.from_tensors(load_heads(heads_file(runner.name, "medusa", task))[0])
        self.heads = heads.to(device=runner.device, dtype=runner.dtype).eval()
        self.tree = parse_tree(tree, TREES, chain_depth=self.heads.n_heads)
        if self.tree.depth > self.heads.n_heads:
            raise HarnessError(f"tree depth {self.tree.depth} exceeds the {self.heads.n_heads} trained heads; "
                               "use a shallower tree or train more heads (--heads)")
        if self.tree.size > CACHE_HEADROOM:
            raise HarnessError(f"tree of {self.tree.size} nodes exceeds the {CACHE_HEADROOM} spare cache slots; "
                               "use a smaller tree")
        self._mask = self.tree.mask(runner.device)

    @classmethod
    def heads_needed(cls, model_name: str, task: str | None, settings: dict) -> HeadsNeed | None:
        if task is None or settings.get("heads") is not None:
            return None
        return HeadsNeed("medusa", task, heads_file(model_name, "medusa", task))

    @classmethod
    def default_recipe(cls, runner: ModelRunner) -> dict:
        """`train-heads` settings of the README's measured heads (150 prompts, 64 tokens each, 300 steps)."""
        return {"prompts": 150, "max_new_tokens": 64, "steps": 300}

    def _generate(self, prompt_ids, stop, on_first_token):
        runner = self.runner
        cache = self.new_cache(prompt_ids, stop)  # vanilla's length: the packed bf16 path is exact between equal lengths
        sink = TokenSink(stop, on_first_token)
        hidden = runner.run_layers(runner.embed(prompt_ids), cache)[:, -1:]
        root = self.pick(runner.logits(hidden))[0]
        lengths: list[int] = []  # tokens emitted per verification round, the bonus included
        done = sink.add([root])
        while not done:
            new_tokens, hidden = self.verify(cache, root, self.candidates(hidden, prompt_ids + sink.tokens))
            lengths.append(len(new_tokens))
            root = new_tokens[-1]
            done = sink.add(new_tokens)
        return Generation(sink.tokens, self._stats(lengths))

    def candidates(self, hidden: torch.Tensor, context: Sequence[int]) -> list[list[int]]:
        """The heads' top-k guesses, [depth][k], from the last hidden state [1, 1, d].

        `context` (prompt and tokens so far, the root last) is unused by trained heads, which read only the hidden
        state; it lets tests plant guesses.
        """
        guesses = self.runner.logits(self.heads(hidden[:, -1], self.tree.depth))
        return guesses.topk(self.tree.top_k, dim=-1).indices.tolist()

    def verify(self, cache: LayeredKVCache, root: int, candidates: Sequence[Sequence[int]]
               ) -> tuple[list[int], torch.Tensor]:
        """The candidate tree verified in one forward (`verify_tree`): the accepted candidates plus the bonus token,
        and the hidden state [1, 1, d] the bonus came from."""
        new_tokens, path, out = verify_tree(self.runner, cache, self.tree, self.tree.tokens(root, candidates),
                                            self.sampler, self._mask)
        return new_tokens, out[:, path[-1]:path[-1] + 1]

    def _stats(self, lengths: list[int]) -> dict[str, Any]:
        """vLLM-style counts. `drafted` is the tree depth per round (the most a round can accept), so chain and
        tree acceptance rates compare; `per_head_acceptance[i]`: share of rounds that accepted head i's guess."""
        rounds, depth = len(lengths), self.tree.depth
        stats = SpeculationStats(steps=1)
        for length in lengths:
            stats.record(depth, length - 1)
        return stats.as_dict() | {
            "per_head_acceptance": [sum(n > i + 1 for n in lengths) / rounds if rounds else None
                                    for i in range(depth)],
            "tree_size": self.tree.size,
        }

    @classmethod
    def train_heads(cls, runner: ModelRunner, task_name: str, prompt_ids_list: list[list[int]], **settings: Any) -> Path:
        """Trains the heads by self-distillation (`decoders.medusa.heads.train_medusa_heads`); returns the file."""
        return train_medusa_heads(runner, task_name, prompt_ids_list, **settings)
