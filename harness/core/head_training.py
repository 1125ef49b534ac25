"""The optimisation loop every trained head shares (AdaDecode's exit heads, Medusa's heads, EAGLE's draft): the model
stays frozen, a fresh batch's loss is taken at each step, and a progress bar counts the steps."""
from __future__ import annotations

from typing import Callable

import torch
from tqdm import tqdm


def fit(optimizer: torch.optim.Optimizer, steps: int, batch_loss: Callable[[], torch.Tensor],
        desc: str) -> list[float]:
    """`steps` optimizer steps, each on `batch_loss()` (which draws its own batch); returns the losses."""
    losses = []
    for _ in tqdm(range(steps), desc=desc, unit="step"):
        loss = batch_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
