"""Candidate trees: mask, positions, node tokens and the acceptance walk, on a small hand-built tree."""
import pytest
import torch

from harness.core.errors import HarnessError
from harness.core.tree import CandidateTree, ancestor_mask, parse_tree

# root ─ a(0,) ─ c(0,0) ─ f(0,0,0)
#      │       └ d(0,1)
#      └ b(1,) ─ e(1,0)
PATHS = [[1, 0], [0], [0, 0, 0], [1], [0, 1], [0, 0]]  # deliberately unordered


def test_nodes_are_ordered_by_depth_with_parents_and_depths():
    tree = CandidateTree.from_paths(PATHS)
    assert tree.paths == ((0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0))
    assert tree.parents == (-1, 0, 0, 1, 1, 2, 3)
    assert tree.depths == (0, 1, 1, 2, 2, 2, 3)
    assert (tree.size, tree.depth, tree.top_k) == (7, 3, 2)


def test_mask_lets_each_node_see_itself_and_its_ancestors_only():
    expected = torch.tensor([
        # r  a  b  c  d  e  f
        [1, 0, 0, 0, 0, 0, 0],  # root
        [1, 1, 0, 0, 0, 0, 0],  # a (0,)
        [1, 0, 1, 0, 0, 0, 0],  # b (1,)
        [1, 1, 0, 1, 0, 0, 0],  # c (0,0)
        [1, 1, 0, 0, 1, 0, 0],  # d (0,1)
        [1, 0, 1, 0, 0, 1, 0],  # e (1,0)
        [1, 1, 0, 1, 0, 0, 1],  # f (0,0,0)
    ], dtype=torch.bool)
    assert torch.equal(CandidateTree.from_paths(PATHS).mask(), expected)


def test_positions_follow_depth_from_the_root_slot():
    assert CandidateTree.from_paths(PATHS).positions(40).tolist() == [40, 41, 41, 42, 42, 42, 43]


def test_node_tokens_come_from_the_top_k_guesses_of_their_depth():
    candidates = [[10, 11], [20, 21], [30, 31]]
    assert CandidateTree.from_paths(PATHS).tokens(5, candidates) == [5, 10, 11, 20, 21, 20, 30]


def test_too_few_guesses_for_the_tree_is_a_clear_error():
    with pytest.raises(HarnessError, match="2 candidates at each of 3 positions"):
        CandidateTree.from_paths(PATHS).tokens(5, [[10, 11], [20, 21]])


@pytest.mark.parametrize("verified, accepted", [
    ([99, 0, 0, 0, 0, 0, 0], [0]),  # no guess matches
    ([10, 20, 0, 30, 0, 0, 0], [0, 1, 3, 6]),  # the whole top-1 chain
    ([10, 21, 0, 0, 0, 0, 0], [0, 1, 4]),  # second guess at depth 2
    ([11, 0, 20, 0, 0, 0, 0], [0, 2, 5]),  # second branch, then its child
    ([11, 0, 21, 0, 0, 0, 0], [0, 2]),  # second branch has no (1, 1) child
])
def test_acceptance_follows_the_verifier_down_the_tree(verified, accepted):
    tree = CandidateTree.from_paths(PATHS)
    assert tree.accept([5, 10, 11, 20, 21, 20, 30], verified) == accepted


def test_chain_is_top_one_at_every_depth():
    chain = CandidateTree.chain(3)
    assert chain.paths == ((0,), (0, 0), (0, 0, 0))
    assert torch.equal(chain.mask(), torch.ones(4, 4, dtype=torch.bool).tril())


def test_a_path_without_its_parent_is_rejected():
    with pytest.raises(HarnessError, match=r"lacks its parent \[0\]"):
        CandidateTree.from_paths([[1], [0, 1]])


def test_parse_tree_takes_names_chain_and_json():
    named = {"small": [(0,), (1,)]}
    assert parse_tree("small", named, 2).paths == ((0,), (1,))
    assert parse_tree("chain", named, 2).paths == ((0,), (0, 0))
    assert parse_tree("[[0],[0,0],[1]]", named, 2).paths == ((0,), (1,), (0, 0))
    with pytest.raises(HarnessError, match="unknown tree 'big'"):
        parse_tree("big", named, 2)


@torch.inference_mode()
def test_one_tree_forward_gives_every_path_its_left_to_right_logits(runner):
    """The mask and positions make each node see exactly its own path after the prompt."""
    tree = CandidateTree.from_paths(PATHS)
    prompt = runner.tokenizer("The capital of France is Paris. The capital of Italy is")["input_ids"]
    tokens = tree.tokens(4, [[2113, 3405], [314, 28], [1535, 30]])
    cache = runner.new_cache(64)
    runner.forward(prompt, cache)
    out = runner.run_layers(runner.embed(tokens), cache, positions=tree.positions(len(prompt)),
                            chunk_mask=tree.mask())
    tree_logits = runner.logits(out)
    for node in range(tree.size):
        path_nodes, n = [], node
        while n >= 0:
            path_nodes.insert(0, n)
            n = tree.parents[n]
        reference = runner.forward(prompt + [tokens[i] for i in path_nodes], runner.new_cache(64))[-1]
        assert (tree_logits[node] - reference).abs().max().item() < 2e-4


def test_a_tree_from_parents_maps_its_nodes_to_the_sorted_order():
    # given nodes 1, 2 under the root; 3 under 1; 4 and 6 under 2; 5 under 4 (siblings ranked in given order)
    parents = [-1, 0, 0, 1, 2, 4, 2]
    tree, order = CandidateTree.from_parents(parents)
    assert tree.paths == ((0,), (1,), (0, 0), (1, 0), (1, 1), (1, 0, 0))
    assert order == [0, 1, 2, 3, 4, 6, 5]  # tree node j is given node order[j]
    assert [parents[order[j]] for j in range(1, 7)] == [order[p] for p in tree.parents[1:]]
    assert tree.positions(40).tolist() == [40, 41, 41, 42, 42, 42, 43]
    assert CandidateTree.from_parents([-1])[0].size == 1
    with pytest.raises(HarnessError, match="parent 3 must be an earlier node"):
        CandidateTree.from_parents([-1, 0, 3, 0])


def test_ancestor_mask_treats_outside_parents_as_already_visible():
    # nodes 0 and 1 hang off the cache (parent -1); 2 is 0's child, 3 is 2's child
    assert ancestor_mask([-1, -1, 0, 2]).int().tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [1, 0, 1, 1]]
