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
import torch.nn.functional as F
from tqdm import tqdm

from harness.core.decoding import CACHE_HEADROOM, DECODERS, Decoder, Generation, TokenSink, greedy
from harness.core.errors import HarnessError
from harness.core.heads import HeadsNeed, heads_file, load_heads, save_heads
from harness.core.kv_cache import LayeredKVCache
from harness.core.model_runner import ModelRunner
from harness.core.self_distillation import collect_hidden_states, greedy_continuations
from harness.core.tree import CandidateTree, parse_tree

# Small trees for a CPU, where each extra node costs real time; paths are top-k indices per position.
TREES: dict[str, list[tuple[int, ...]]] = {
    "default": [(0,), (1,), (2,), (0, 0), (0, 1), (1, 0), (0, 0, 0)],
    "wide": [(0,), (1,), (2,), (3,), (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0), (0, 0, 0), (0, 0, 1),
             (0, 1, 0), (1, 0, 0), (0, 0, 0, 0)],
}


class MedusaHeads(torch.nn.Module):
    """K residual blocks, hidden [..., d] → [..., K, d], to be read through the model's final norm + lm head."""

    def __init__(self, n_heads: int, hidden_size: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(n_heads, hidden_size, hidden_size))
        self.bias = torch.nn.Parameter(torch.zeros(n_heads, hidden_size))

    @property
    def n_heads(self) -> int:
        return self.weight.shape[0]

    def forward(self, hidden: torch.Tensor, n_heads: int | None = None) -> torch.Tensor:
        """The first `n_heads` heads (all by default) on hidden states [..., d]."""
        weight, bias = self.weight[:n_heads], self.bias[:n_heads]
        return hidden.unsqueeze(-2) + F.silu(torch.einsum("...d,ked->...ke", hidden, weight) + bias)

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "MedusaHeads":
        heads = cls(*tensors["weight"].shape[:2])
        heads.load_state_dict(tensors)
        return heads


@DECODERS.register("medusa")
class Medusa(Decoder):
    """Settings: `tree` ("default", "wide", "chain" = top-1 at every head, or a JSON list of top-k index paths).
    `heads` (a MedusaHeads module) replaces the trained heads loaded for the task. Under sampling the tree is
    verified by recursive rejection sampling (lossless), not by Medusa's typical acceptance (lossy)."""
    exact_on_runner = False  # tree verification: see Decoder.exact_on_runner

    samples = True

    def __init__(self, runner: ModelRunner, task: str | None = None,
                 tree: str | list[list[int]] | CandidateTree = "default", heads: MedusaHeads | None = None) -> None:
        super().__init__(runner, task, tree=tree)
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
        """One forward over the root and the candidate tree; keeps the accepted path's keys/values in place.

        Returns the accepted candidates plus the bonus token, and the hidden state [1, 1, d] the bonus came from.
        """
        start = cache.lengths[0]
        tokens = self.tree.tokens(root, candidates)
        out = self.runner.run_layers(self.runner.embed(tokens), cache,
                                     positions=self.tree.positions(start, self.runner.device),
                                     chunk_mask=self._mask)
        logits = self.runner.logits(out)
        if self.sampler is None:
            verified = greedy(logits)
            path = self.tree.accept(tokens, verified)
            bonus = verified[path[-1]]
        else:
            path, bonus = self.tree.accept_sampled(tokens, lambda node: logits[node], self.sampler)
        cache.keep_slots(start, [start + node for node in path])
        last = path[-1]
        return [tokens[node] for node in path[1:]] + [bonus], out[:, last:last + 1]

    def _stats(self, lengths: list[int]) -> dict[str, Any]:
        """vLLM-style counts. `drafted` is the tree depth per round (the most a round can accept), so chain and
        tree acceptance rates compare; `per_head_acceptance[i]`: share of rounds that accepted head i's guess."""
        rounds, depth = len(lengths), self.tree.depth
        accepted = sum(lengths) - rounds
        return {
            "steps": 1 + rounds,
            "drafted": rounds * depth,
            "accepted": accepted,
            "acceptance_rate": accepted / (rounds * depth) if rounds else None,
            "mean_acceptance_length": 1 + accepted / rounds if rounds else None,
            "acceptance_lengths": lengths,
            "per_head_acceptance": [sum(n > i + 1 for n in lengths) / rounds if rounds else None
                                    for i in range(depth)],
            "tree_size": self.tree.size,
        }

    @classmethod
    def train_heads(cls, runner: ModelRunner, task_name: str, prompt_ids_list: list[list[int]], n_heads: int = 3,
                    steps: int = 300, batch_size: int = 64, lr: float = 1e-3, max_new_tokens: int = 128,
                    seed: int = 0, metadata: dict | None = None) -> Path:
        """Self-distillation: the heads learn the model's own greedy continuations of the training prompts.

        At the hidden state that predicts continuation token j, head i is taught token j + i + 1. The model (norm,
        lm head included) stays frozen; only the residual blocks learn. Returns the saved heads file.
        """
        n_heads, steps, batch_size, max_new_tokens = int(n_heads), int(steps), int(batch_size), int(max_new_tokens)
        continuations = greedy_continuations(runner, prompt_ids_list, max_new_tokens)
        sequences = [list(p) + c for p, c in zip(prompt_ids_list, continuations)]
        hidden = collect_hidden_states(runner, sequences, [len(p) for p in prompt_ids_list], [runner.n_layers])
        hidden = hidden[runner.n_layers].to(runner.dtype).clone()  # out of inference mode, for autograd
        targets = torch.cat([_shifted_targets(c, n_heads) for c in continuations]).to(runner.device)
        heads = MedusaHeads(n_heads, runner.hidden_size).to(device=runner.device, dtype=runner.dtype)
        runner.model.requires_grad_(False)
        optimizer = torch.optim.AdamW(heads.parameters(), lr=float(lr), weight_decay=0.0)
        generator = torch.Generator().manual_seed(int(seed))
        losses = []
        for _ in tqdm(range(steps), desc="medusa heads", unit="step"):
            rows = torch.randint(len(hidden), (batch_size,), generator=generator).to(runner.device)
            logits = runner.lm_head(runner.final_norm(heads(hidden[rows]))).float()
            loss = F.cross_entropy(logits.flatten(0, 1), targets[rows].flatten(), ignore_index=-100)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        metadata = {**(metadata or {}), "model": runner.name, "kind": "medusa", "task": task_name, "n_heads": n_heads,
                    "prompts": len(prompt_ids_list), "positions": len(hidden), "max_new_tokens": max_new_tokens,
                    "steps": steps, "batch_size": batch_size, "lr": float(lr), "seed": int(seed),
                    "final_loss": sum(losses[-20:]) / len(losses[-20:]) if losses else None}
        return save_heads(heads_file(runner.name, "medusa", task_name),
                          heads.state_dict(), metadata)


def _shifted_targets(continuation: list[int], n_heads: int) -> torch.Tensor:
    """[len, n_heads]: row j, column i holds continuation[j + i + 1] (-100, ignored, past the end)."""
    n = len(continuation)
    return torch.tensor([[continuation[j + i + 1] if j + i + 1 < n else -100 for i in range(n_heads)]
                         for j in range(n)], dtype=torch.long)
