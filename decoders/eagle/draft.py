"""EAGLE's draft model (Li et al. 2024): one decoder layer that predicts the target model's next last-layer feature.

Input at position t: the target's feature f_t (last layer's output, before the final norm) and the embedding of
token t+1, concatenated and projected back to d by `fc`; one decoder layer of the target's own architecture
(initialised as a copy of its last layer) turns them into a guess of f_{t+1}, whose tokens are read out through the
target's frozen final norm and lm head. The layer runs on its own `ModelRunner`, so its one-layer KV cache, tree
positions and chunk masks work as the target's do.

The draft may read tokens out over a reduced vocabulary (FR-Spec, Zhao et al. 2025): the `vocab` most frequent
tokens of its training data, the rows of the lm head it keeps. The lm head is the largest matrix a draft step
reads (SmolLM2: 49 152 × 576, 57 MB in bf16, against 5 MB for the draft's layer), and EAGLE-2 reads it once per
tree level; tokens outside the vocabulary are never drafted, which costs acceptance only where the model emits them.
Under greedy decoding and under sampling the tree is verified by the full model, so the output does not change.

Training is self-distillation on the target's own greedy continuations: for every continuation position (and, with
`prompt_positions`, every prompt position too) the draft, fed the true features, learns f_{t+1} (smooth L1, as the
paper) and the model's greedy token after it (cross-entropy; the paper weighs it 0.1, the recipe 1.0: under greedy
decoding the model's top token is what counts).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.core.kv_cache import LayeredKVCache
from harness.core.model_runner import ModelRunner
from harness.core.head_training import fit
from harness.core.self_distillation import collect_hidden_states, frequent_tokens, greedy_continuations

TOKEN_LOSS_WEIGHT = 0.1  # the paper's weight of the token cross-entropy beside the feature regression


class _OneLayerShell(torch.nn.Module):
    """What `ModelRunner` reads from a model: the target's embeddings, norm and rotary tables around one layer."""

    def __init__(self, target: ModelRunner, layer: torch.nn.Module, lm_head: torch.nn.Module) -> None:
        super().__init__()
        self.config = target.config
        self.generation_config = None
        self.model = torch.nn.Module()
        self.model.embed_tokens, self.model.norm, self.model.rotary_emb = target.embed_tokens, target.norm, \
            target.rotary_emb
        self.model.layers = torch.nn.ModuleList([layer])
        self.lm_head = lm_head


class FeatureDraft(torch.nn.Module):
    """fc: [feature ; token embedding] (2d) → d, then one decoder layer; state: `fc.*`, `layer.*` and, with a
    reduced vocabulary, `vocab` (token ids; the lm head's rows are the target's, frozen)."""

    def __init__(self, target: ModelRunner, vocab: torch.Tensor | None = None) -> None:
        super().__init__()
        d = target.hidden_size
        self.fc = torch.nn.Linear(2 * d, d, dtype=target.dtype, device=target.device)
        self.layer = copy.deepcopy(target.layers[-1])
        self.register_buffer("vocab", None if vocab is None else vocab.to(target.device, torch.long))
        self._index: torch.Tensor | None = None  # token id → its row in the draft's vocabulary (-100: none)
        head = target.lm_head
        if vocab is not None:  # not a submodule: the rows are the target's, not stored with the draft
            head = torch.nn.Linear(d, len(vocab), bias=False, dtype=target.dtype, device=target.device)
            head.weight = torch.nn.Parameter(target.lm_head.weight.detach()[self.vocab].clone(), requires_grad=False)
            self._index = torch.full((int(self.vocab.max()) + 1,), -100, dtype=torch.long, device=target.device)
            self._index[self.vocab] = torch.arange(len(self.vocab), device=target.device)
        self.runner = target.companion(_OneLayerShell(target, self.layer, head), f"{target.name} draft")

    def top_tokens(self, features: torch.Tensor, k: int) -> tuple[list[list[float]], list[list[int]]]:
        """Predicted features [q, d] → each row's `k` likeliest tokens over the draft's vocabulary: their
        log-probabilities and token ids."""
        top = torch.log_softmax(self.runner.logits(features[None]), dim=-1).topk(k, dim=-1)
        ids = top.indices if self.vocab is None else self.vocab[top.indices]
        return top.values.tolist(), ids.tolist()

    def vocab_index(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids → their index in the draft's vocabulary; -100 (cross-entropy's ignore index) outside it."""
        if self._index is None:
            return tokens
        index = self._index
        return torch.where(tokens < len(index), index[tokens.clamp(max=len(index) - 1)], -100)

    def new_cache(self, max_len: int) -> LayeredKVCache:
        return self.runner.new_cache(max_len)

    def forward(self, features: torch.Tensor, embeddings: torch.Tensor, cache: LayeredKVCache,
                positions: torch.Tensor | None = None, chunk_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Features and next-token embeddings [1, q, d] → predicted next features [1, q, d]; keys/values go to
        `cache` as the target's `run_layers` does (`positions`, `chunk_mask` alike)."""
        hidden = self.fc(torch.cat([features, embeddings], dim=-1))
        return self.runner.run_layers(hidden, cache, positions=positions, chunk_mask=chunk_mask)


@dataclass
class _Sequence:
    features: torch.Tensor  # [len - 1, d]: f_0 … f_{len-2}
    tokens: torch.Tensor  # [len] token ids
    greedy: torch.Tensor  # [len - 1]: the model's greedy token after each position, read from f_0 … f_{len-2}
    first: int  # the first position t whose next feature is learnt (the prompt's last, or 0 with its positions)

    @property
    def targets(self) -> torch.Tensor:
        """The greedy tokens the draft learns to read out of its predictions f_{first+1} …"""
        return self.greedy[self.first + 1:]


def _sequences(target: ModelRunner, prompts: list[list[int]], continuations: list[list[int]]) -> list[_Sequence]:
    """Features along prompt + continuation; positions from the prompt's last one on are learnt."""
    sequences = [p + c for p, c in zip(prompts, continuations)]
    features = collect_hidden_states(target, sequences, [1] * len(sequences), [target.n_layers])[target.n_layers]
    out, at = [], 0
    with torch.inference_mode():
        for prompt, ids in zip(prompts, sequences):
            mine = features[at:at + len(ids) - 1].to(target.dtype).clone()
            greedy = torch.cat([target.logits(part[None]).argmax(-1) for part in mine.split(256)])
            out.append(_Sequence(mine, torch.tensor(ids, device=target.device), greedy.clone(), len(prompt) - 1))
            at += len(ids) - 1
    return [s for s in out if len(s.tokens) - 2 > s.first]  # at least one position with a next feature and token


def _pack(target: ModelRunner, batch: list[_Sequence]) -> tuple[torch.Tensor, ...]:
    """Several sequences as one chunk: inputs, positions, block-diagonal causal mask, and the learnt positions with
    their target features and tokens."""
    features, embeddings, positions, learnt, target_features, target_tokens = [], [], [], [], [], []
    offset = 0
    for s in batch:
        n = len(s.features)
        features.append(s.features)
        embeddings.append(target.embed_tokens(s.tokens[1:]))
        positions.append(torch.arange(n, device=target.device))
        learnt.append(torch.arange(s.first, n - 1, device=target.device) + offset)
        target_features.append(s.features[s.first + 1:])
        target_tokens.append(s.targets)
        offset += n
    blocks = torch.block_diag(*[torch.ones(len(s.features), len(s.features), dtype=torch.bool) for s in batch])
    mask = blocks.tril().to(target.device)
    return (torch.cat(features)[None], torch.cat(embeddings)[None], torch.cat(positions), mask, torch.cat(learnt),
            torch.cat(target_features), torch.cat(target_tokens))


def _agreement(draft: FeatureDraft, target: ModelRunner, sequences: list[_Sequence]) -> float:
    """Share of learnt positions where the draft's top token (fed the true features) is the model's greedy token."""
    hits = total = 0
    with torch.no_grad():
        for s in sequences:
            features, embeddings, positions, mask, learnt, _, tokens = _pack(target, [s])
            out = draft(features, embeddings, draft.new_cache(len(positions)), positions, mask)
            hits += sum(row[0] == token for row, token in zip(draft.top_tokens(out[0, learnt], 1)[1],
                                                               tokens.tolist()))
            total += len(tokens)
    return hits / total if total else float("nan")


def in_vocab_share(draft: FeatureDraft, sequences: list[_Sequence]) -> float:
    """Share of the held-out greedy tokens that the draft's vocabulary holds (1.0 with the model's)."""
    tokens = torch.cat([s.targets for s in sequences])
    return float((draft.vocab_index(tokens) >= 0).float().mean()) if len(tokens) else float("nan")


def train_feature_draft(target: ModelRunner, prompts: list[list[int]], max_new_tokens: int = 96, steps: int = 300,
                        batch_tokens: int = 1024, lr: float = 1e-3, seed: int = 0,
                        token_weight: float = TOKEN_LOSS_WEIGHT, draft_vocab: int = 0,
                        prompt_positions: bool = False) -> tuple[FeatureDraft, dict]:
    """Trains a draft on the target's greedy continuations of `prompts` (a tenth held out). `draft_vocab` > 0 keeps
    that many of the training data's most frequent target tokens as the draft's vocabulary (0: the model's).
    `prompt_positions` also learns along the training prompts' own text (the features are there anyway; the token
    targets are still the model's greedy tokens), as EAGLE learns along fixed conversations; held-out agreement is
    measured on continuations only. Returns the draft and its training figures: held-out top-1 agreement before
    and after, steps, time, final losses."""
    torch.manual_seed(seed)
    prepare = time.perf_counter()
    held_out = max(1, len(prompts) // 10)
    continuations = greedy_continuations(target, prompts, max_new_tokens)
    sequences = _sequences(target, prompts, continuations)
    train, test = sequences[:-held_out], sequences[-held_out:]
    if prompt_positions:
        train = [_Sequence(s.features, s.tokens, s.greedy, 0) for s in train]
    vocab = frequent_tokens(torch.cat([s.targets for s in train]).tolist(), draft_vocab) if draft_vocab else None
    draft = FeatureDraft(target, vocab)
    before = _agreement(draft, target, test)
    prepare = time.perf_counter() - prepare
    target.model.requires_grad_(False)
    draft.requires_grad_(True)
    optimizer = torch.optim.AdamW(draft.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    losses: list[tuple[float, float]] = []  # (feature, token) loss per step

    def batch_loss() -> torch.Tensor:
        order = torch.randperm(len(train), generator=generator).tolist()
        batch, size = [], 0
        for i in order:
            if batch and size + len(train[i].features) > batch_tokens:
                break
            batch.append(train[i])
            size += len(train[i].features)
        features, embeddings, positions, mask, learnt, target_features, target_tokens = _pack(target, batch)
        out = draft(features, embeddings, draft.new_cache(len(positions)), positions, mask)[0, learnt]
        feature_loss = F.smooth_l1_loss(out.float(), target_features.float())
        token_loss = F.cross_entropy(draft.runner.logits(out[None]), draft.vocab_index(target_tokens))
        losses.append((feature_loss.item(), token_loss.item()))
        return feature_loss + token_weight * token_loss

    start = time.perf_counter()
    fit(optimizer, steps, batch_loss, "eagle draft")
    seconds = time.perf_counter() - start
    draft.requires_grad_(False)
    draft.runner.repack()
    last = losses[-20:]
    figures = {"steps": steps, "train_seconds": round(seconds, 1),
               "data_seconds": round(prepare, 1), "batch_tokens": batch_tokens, "lr": lr, "token_weight": token_weight,
               "draft_vocab": len(vocab) if vocab is not None else target.config.vocab_size,
               "held_out_in_vocab": in_vocab_share(draft, test),
               "seed": seed, "max_new_tokens": max_new_tokens, "training_prompts": len(prompts) - held_out,
               "held_out_prompts": held_out, "prompt_positions": prompt_positions,
               "training_positions": sum(len(s.tokens) - 2 - s.first for s in train),
               "held_out_positions": sum(len(s.tokens) - 2 - s.first for s in test),
               "held_out_top1_before": before, "held_out_top1_after": _agreement(draft, target, test),
               "final_feature_loss": sum(f for f, _ in last) / len(last) if last else None,
               "final_token_loss": sum(t for _, t in last) / len(last) if last else None}
    return draft, figures
