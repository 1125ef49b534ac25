"""AdaDecode's exit heads: distilled from the final layer on the model's own greedy generations, with the candidate
vocabulary of the cheap exit test."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from harness.core.head_training import fit
from harness.core.heads import ExitHead, heads_file, save_heads
from harness.core.model_runner import ModelRunner
from harness.core.self_distillation import collect_hidden_states, frequent_tokens, greedy_continuations

KIND = "adadecode"


def train_exit_heads(runner: ModelRunner, task_name: str, prompt_ids_list: list[list[int]], **settings):
    """Distils exit heads at `exit_layers` from the final layer on the model's own greedy generations; saves them
    (with a candidate vocabulary of the most frequent generated tokens) and returns the file's path."""
    exit_layers = [int(e) for e in settings.get("exit_layers", default_exit_layers(runner.n_layers))]
    max_new_tokens = int(settings.get("max_new_tokens", 96))
    held_out = max(1, len(prompt_ids_list) // 10)
    continuations = greedy_continuations(runner, prompt_ids_list, max_new_tokens)
    sequences = [p + c for p, c in zip(prompt_ids_list, continuations)]
    states = collect_hidden_states(runner, sequences, [len(p) for p in prompt_ids_list],
                                   exit_layers + [runner.n_layers])
    split = sum(len(c) for c in continuations[:-held_out])
    candidates = frequent_tokens([t for c in continuations for t in c], int(settings.get("candidates", 4096)))
    heads, report = distill_exit_heads(runner, states, runner.n_layers, split, candidates,
                                       steps=int(settings.get("steps", 300)),
                                       batch_size=int(settings.get("batch_size", 32)),
                                       lr=float(settings.get("lr", 1e-3)))
    tensors = {f"exit.{e}": h.transform.weight for e, h in heads.items()} | {"candidates": candidates}
    metadata = {"model": runner.name, "kind": KIND, "task": task_name, "layers": exit_layers,
                "n_layers": runner.n_layers, "training_prompts": len(prompt_ids_list) - held_out,
                "held_out_prompts": held_out, "max_new_tokens": max_new_tokens,
                "training_tokens": split, "held_out_tokens": len(states[runner.n_layers]) - split,
                "candidates": len(candidates), **report, **settings.get("metadata", {})}
    path = settings.get("path") or heads_file(runner.name, KIND, task_name)
    return save_heads(path, tensors, metadata)


def default_exit_layers(n_layers: int) -> list[int]:
    """Three exits, as in the paper (3 heads on 32 layers), spread over the upper half of the model."""
    return [round(n_layers * f) for f in (0.5, 0.65, 0.8)]


class _Distillation:
    """Forward KL(final ‖ head) over the candidate vocabulary, the final layer's targets computed once for all rows.

    Restricting both softmaxes to the candidate rows of the lm head (a few thousand of 49 152) makes a training step
    an order of magnitude cheaper on a CPU and trains the heads for exactly the test they face at decoding time.
    Everything lives on the runner's device; the loss is computed in float32 whatever the model's dtype (float32
    copies of the final norm and of the candidate rows of the lm head), and the final layer's own top token is read
    in the model's dtype, as decoding computes it.
    """

    def __init__(self, runner: ModelRunner, states: dict[int, torch.Tensor], last: int, vocabulary: torch.Tensor,
                 chunk: int = 256) -> None:
        self.runner, self.states = runner, states
        self.vocabulary = vocabulary.to(runner.device)
        self.weight = runner.lm_head.weight.detach().index_select(0, self.vocabulary).float()
        self.norm = copy.deepcopy(runner.norm).float()
        with torch.no_grad():
            self.target = torch.cat([torch.log_softmax(F.linear(self.norm(part.float()), self.weight), dim=-1)
                                     for part in states[last].split(chunk)])
            self.final_top = torch.cat([runner.logits(part.to(runner.dtype)[None]).argmax(-1)
                                        for part in states[last].split(chunk)])

    def head_logp(self, head: ExitHead, layer: int, rows) -> torch.Tensor:
        normed = self.norm(head(self.states[layer][rows].float()))
        return torch.log_softmax(F.linear(normed, self.weight), dim=-1)

    def loss(self, head: ExitHead, layer: int, rows) -> torch.Tensor:
        return F.kl_div(self.head_logp(head, layer, rows), self.target[rows], log_target=True, reduction="batchmean")

    def evaluate(self, head: ExitHead, layer: int, rows: slice) -> tuple[float, float]:
        """Held-out KL and top-1 agreement of the head's candidate argmax with the final layer's full argmax."""
        with torch.no_grad():
            logp = self.head_logp(head, layer, rows)
            kl = F.kl_div(logp, self.target[rows], log_target=True, reduction="batchmean").item()
            agree = (self.vocabulary[logp.argmax(-1)] == self.final_top[rows]).float().mean().item()
        return kl, agree


def distill_exit_heads(runner: ModelRunner, states: dict[int, torch.Tensor], last: int, split: int,
                       vocabulary: torch.Tensor, steps: int = 300, batch_size: int = 64, lr: float = 1e-3,
                       seed: int = 0) -> tuple[dict[int, ExitHead], dict]:
    """Trains one identity-initialised head per layer in `states` (all but `last`) by forward KL from the final
    layer's distribution, the model frozen; rows [0, split) train, the rest are held out. Returns the heads and a
    report (held-out KL and top-1 agreement with the final layer per layer, before and after)."""
    for p in runner.model.parameters():
        p.requires_grad_(False)
    exits = [e for e in sorted(states) if e != last]
    heads = {e: ExitHead(runner.hidden_size).to(runner.device) for e in exits}  # float32, as the loss
    data = _Distillation(runner, states, last, vocabulary)
    held_out = slice(split, len(states[last]))
    before = {e: data.evaluate(heads[e], e, held_out) for e in exits}
    optimizer = torch.optim.Adam([p for h in heads.values() for p in h.parameters()], lr=lr)
    generator = torch.Generator().manual_seed(seed)

    def batch_loss() -> torch.Tensor:
        rows = torch.randint(0, split, (batch_size,), generator=generator).to(runner.device)
        return sum(data.loss(heads[e], e, rows) for e in exits)

    fit(optimizer, steps, batch_loss, "training exit heads")
    after = {e: data.evaluate(heads[e], e, held_out) for e in exits}
    report = {"steps": steps, "batch_size": batch_size, "lr": lr, "loss": "forward KL over the candidate vocabulary",
              "held_out": {str(e): {"kl_before": before[e][0], "kl_after": after[e][0],
                                    "agreement_before": before[e][1], "agreement_after": after[e][1]}
                           for e in exits}}
    return heads, report
