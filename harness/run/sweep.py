"""A settings sweep: one decoder under every point of a grid of settings, all points in one benchmark run.

Each point is a decoder variant `DECODER@KEY=VALUE,...` (`harness.run.results.variant_name`) with its own settings, so
the runner interleaves vanilla and every point on each sample: vanilla runs once per sample, and all points are
timed side by side with it on the same prompts.
"""
from __future__ import annotations

import itertools
from typing import Any

from harness.core.errors import HarnessError
from harness.schema import variant_name


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first key varying slowest."""
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def sweep_variants(decoder: str, grid: dict[str, list[Any]], fixed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{variant name: its settings} for every grid point, the `fixed` settings shared by all points."""
    overlap = sorted(set(grid) & set(fixed))
    if overlap:
        raise HarnessError(f"{', '.join(overlap)} is both swept (--grid) and fixed (--set); keep one")
    return {variant_name(decoder, point): {**fixed, **point} for point in grid_points(grid)}
