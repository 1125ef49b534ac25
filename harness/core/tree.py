"""Candidate trees for verifying many drafted continuations in one forward pass.

A tree is given as paths of top-k indices, as Medusa's "choices" are: `(0,)` is the top-1 guess for the next
position, `(1,)` the top-2 guess, `(0, 1)` the top-2 guess for the position after that, following the top-1
guess. Node 0 is the root: the token already chosen by greedy decoding but not yet in the cache. Every node sees
only itself and its ancestors, and takes the position of its depth, so one forward over all nodes gives each
candidate path exactly the logits a plain left-to-right pass over that path would give.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from harness.core.decoding import greedy
from harness.core.errors import HarnessError
from harness.core.kv_cache import LayeredKVCache
from harness.core.model_runner import ModelRunner
from harness.core.sampling import Sampler


@dataclass(frozen=True)
class CandidateTree:
    paths: tuple[tuple[int, ...], ...]  # node i + 1 is paths[i]; sorted by depth, then by indices
    parents: tuple[int, ...] = field(init=False)  # parents[0] = -1 for the root
    depths: tuple[int, ...] = field(init=False)
    children: tuple[tuple[int, ...], ...] = field(init=False)

    def __post_init__(self) -> None:
        index = {path: i + 1 for i, path in enumerate(self.paths)}
        parents = (-1,) + tuple(index.get(p[:-1], 0) for p in self.paths)
        object.__setattr__(self, "parents", parents)
        object.__setattr__(self, "depths", (0,) + tuple(len(p) for p in self.paths))
        object.__setattr__(self, "children", tuple(tuple(c for c in range(1, len(parents)) if parents[c] == n)
                                                   for n in range(len(parents))))

    @classmethod
    def from_paths(cls, paths: Sequence[Sequence[int]]) -> "CandidateTree":
        """Builds a tree from top-k index paths; every prefix of a path must be a path too."""
        unique = sorted({tuple(int(i) for i in p) for p in paths}, key=lambda p: (len(p), p))
        if not unique:
            raise HarnessError("a candidate tree needs at least one path, e.g. [[0]]")
        known = set(unique)
        for path in unique:
            if not path or min(path) < 0:
                raise HarnessError(f"tree path {list(path)} must be a non-empty list of indices >= 0")
            if len(path) > 1 and path[:-1] not in known:
                raise HarnessError(f"tree path {list(path)} lacks its parent {list(path[:-1])}; add it to the tree")
        return cls(tuple(unique))

    @classmethod
    def chain(cls, depth: int) -> "CandidateTree":
        """The top-1 guess at each of `depth` positions: plain (chain) speculation."""
        return cls.from_paths([(0,) * d for d in range(1, depth + 1)])

    @property
    def size(self) -> int:
        """Nodes, the root included: the tokens one verification forward processes."""
        return len(self.depths)

    @property
    def depth(self) -> int:
        return max(self.depths)

    @property
    def top_k(self) -> int:
        """How many candidates per position the tree draws on."""
        return max(max(p) for p in self.paths) + 1

    @classmethod
    def from_parents(cls, parents: Sequence[int]) -> tuple["CandidateTree", list[int]]:
        """A tree from explicit parents (node 0 the root with parent -1, every parent before its children), as a
        dynamic tree (EAGLE-2) builds it. Returns the tree and `order`: tree node j is the given node `order[j]`."""
        paths: list[tuple[int, ...]] = [()]
        siblings = [0] * len(parents)
        for node, parent in enumerate(parents[1:], 1):
            if not 0 <= parent < node:
                raise HarnessError(f"node {node}'s parent {parent} must be an earlier node")
            paths.append(paths[parent] + (siblings[parent],))
            siblings[parent] += 1
        tree = cls.from_paths(paths[1:]) if len(paths) > 1 else cls(())
        index = {path: node for node, path in enumerate(paths)}
        return tree, [0] + [index[path] for path in tree.paths]

    def mask(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """[size, size] bool, True where node i may attend to node j: j is i or one of i's ancestors."""
        return ancestor_mask(self.parents, device)

    def positions(self, start: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Rotary positions of the nodes when the root sits at `start`: start + depth."""
        return torch.tensor(self.depths, device=device) + start

    def tokens(self, root: int, candidates: Sequence[Sequence[int]]) -> list[int]:
        """Node tokens: `candidates[d][k]` is the k-th guess for the position d + 1 after the root."""
        if len(candidates) < self.depth or any(len(c) < self.top_k for c in candidates[: self.depth]):
            raise HarnessError(f"the tree needs {self.top_k} candidates at each of {self.depth} positions; "
                               f"got {[len(c) for c in candidates]}: use a smaller tree or more heads")
        return [root] + [int(candidates[len(p) - 1][p[-1]]) for p in self.paths]

    def accept(self, node_tokens: Sequence[int], verified: Sequence[int]) -> list[int]:
        """The longest root-to-node path the verifier agrees with.

        `verified[n]` is the verifier's token after node n. Starting at the root, follow the child whose token is
        the verifier's choice while there is one. Returns the accepted nodes, the root first.
        """
        path = [0]
        while True:
            node = path[-1]
            child = next((c for c in self.children[node] if node_tokens[c] == verified[node]), None)
            if child is None:
                return path
            path.append(child)

    def accept_sampled(self, node_tokens: Sequence[int], logits_of: Callable[[int], torch.Tensor],
                       sampler: Sampler) -> tuple[list[int], int]:
        """Recursive rejection sampling down the tree (SpecInfer; EAGLE's sampling verification), lossless for
        candidates that are a deterministic function of the context: at each node its children's tokens are tried
        in turn against the model's distribution there (`Sampler.choose_among`, each a point mass), an accepted
        child is descended into, and the walk ends with a token drawn from the residual (all children rejected) or,
        at a leaf, from the model's distribution. `logits_of(node)`: the verifier's logits after a node. Returns the
        accepted nodes (the root first) and that token."""
        path = [0]
        while True:
            node = path[-1]
            children = self.children[node]
            token, index = sampler.choose_among([node_tokens[c] for c in children],
                                                sampler.probs(logits_of(node)).reshape(-1))
            if index is None:
                return path, token
            path.append(children[index])


def verify_tree(runner: ModelRunner, cache: LayeredKVCache, tree: CandidateTree, tokens: list[int],
                sampler: Sampler | None, chunk_mask: torch.Tensor | None = None
                ) -> tuple[list[int], list[int], torch.Tensor]:
    """One forward over the root and the tree's nodes (`tokens`, the root first), the tree mask (`chunk_mask`, or
    built from the tree) and positions by depth; keeps the accepted path's keys/values in place.

    The model's token at every node comes from one lm-head call (its weights, the largest matrix, are read once).
    Greedy: the longest path the model agrees with; under sampling, recursive rejection sampling
    (`CandidateTree.accept_sampled`). Returns the accepted tokens plus the bonus, the accepted nodes (the root first)
    and the model's output hidden states at every node [1, size, d]."""
    start = cache.lengths[0]
    mask = tree.mask(runner.device) if chunk_mask is None else chunk_mask
    out = runner.run_layers(runner.embed(tokens), cache, positions=tree.positions(start, runner.device),
                            chunk_mask=mask)
    logits = runner.logits(out)
    if sampler is None:
        verified = greedy(logits)
        path = tree.accept(tokens, verified)
        bonus = verified[path[-1]]
    else:
        path, bonus = tree.accept_sampled(tokens, lambda node: logits[node], sampler)
    cache.keep_slots(start, [start + node for node in path])
    return [tokens[node] for node in path[1:]] + [bonus], path, out


def ancestor_mask(parents: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """[n, n] bool, True where node i may attend to node j: j is i or one of i's ancestors. `parents[i]` is an
    earlier node, or -1 where i's parent lies outside (the root, or positions already in the cache)."""
    mask = torch.zeros(len(parents), len(parents), dtype=torch.bool)
    for node in range(len(parents)):
        ancestor = node
        while ancestor >= 0:
            mask[node, ancestor] = True
            ancestor = parents[ancestor]
    return mask.to(device)


def parse_tree(spec: "str | Sequence[Sequence[int]] | CandidateTree", named: dict[str, Sequence[Sequence[int]]],
               chain_depth: int) -> CandidateTree:
    """A tree from a setting: a name in `named`, "chain" (top-1 at each of `chain_depth` positions), a JSON list
    of paths such as "[[0],[1],[0,0]]", or a list of paths."""
    if isinstance(spec, CandidateTree):
        return spec
    if isinstance(spec, str):
        if spec == "chain":
            return CandidateTree.chain(chain_depth)
        if spec in named:
            return CandidateTree.from_paths(named[spec])
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError:
            raise HarnessError(f"unknown tree {spec!r}; use chain, one of {', '.join(named)}, "
                               "or a JSON list of paths such as [[0],[1],[0,0]]") from None
    return CandidateTree.from_paths(spec)
