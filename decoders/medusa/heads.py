"""Medusa's heads: K residual blocks on the last layer's hidden state, trained by self-distillation."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from harness.core.head_training import fit
from harness.core.heads import heads_file, save_heads
from harness.core.model_runner import ModelRunner
from harness.core.self_distillation import collect_hidden_states, greedy_continuations


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


def train_medusa_heads(runner: ModelRunner, task_name: str, prompt_ids_list: list[list[int]], n_heads: int = 3,
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

    def batch_loss() -> torch.Tensor:
        rows = torch.randint(len(hidden), (batch_size,), generator=generator).to(runner.device)
        logits = runner.lm_head(runner.final_norm(heads(hidden[rows]))).float()
        return F.cross_entropy(logits.flatten(0, 1), targets[rows].flatten(), ignore_index=-100)

    losses = fit(optimizer, steps, batch_loss, "medusa heads")
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
