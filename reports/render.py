"""Writes a run's report: Markdown (terminal, PR comment), CSV, PNG figures and one self-contained HTML page."""
from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reports.aggregate import summarize
from reports.plots import all_figures
from reports.run_files import Run, load_run
from reports.spec_bench import category_tables
from reports.sweeps import settings_sweep

META_KEYS = ("model", "dtype", "device", "device_name", "world_size", "device_names", "torch", "transformers",
             "git_commit", "split", "limit", "tasks", "command")


@dataclass
class Report:
    markdown: Path
    csv: Path
    html: Path
    figures: list[Path]


def task_tables(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """One table per task, without the columns nothing measured for that task."""
    return {task: table.xs(task, level="task").dropna(axis=1, how="all")
            for task in table.index.unique("task")}


def cell(value) -> str:
    """4 significant digits, without an exponent below a million; empty where nothing was measured."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if pd.isna(value):
        return ""
    return f"{value:.0f}" if 1e3 <= abs(value) < 1e6 else f"{value:.4g}"


def flat(table: pd.DataFrame) -> pd.DataFrame:
    """The index as leading columns, every value as its cell text."""
    return table.reset_index().map(cell)


def meta_lines(meta: dict) -> list[str]:
    """The run's environment, as `key: value` lines (the keys the runner wrote, known ones first)."""
    keys = [k for k in META_KEYS if k in meta] + [k for k in meta if k not in META_KEYS]
    return [f"{k}: {v if isinstance(v, str) else json.dumps(v)}" for k, v in ((k, meta[k]) for k in keys)]


def figure_file(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") + ".png"


def markdown(run: Run, tables: dict[str, pd.DataFrame], figures: list[Path]) -> str:
    parts = [f"# Benchmark report: {run.path.name}", "", *[f"- {line}" for line in meta_lines(run.meta)], ""]
    for task, table in tables.items():
        cells = flat(table)
        align = ["left" if c in table.index.names else "right" for c in cells.columns]
        parts += [f"## {task}", "", cells.to_markdown(index=False, disable_numparse=True, colalign=align), ""]
    parts += [f"![{f.stem}](figures/{f.name})" for f in figures]
    return "\n".join(parts) + "\n"


def html_page(run: Run, tables: dict[str, pd.DataFrame], figures: dict[str, bytes]) -> str:
    body = [f"<h1>Benchmark report: {html.escape(run.path.name)}</h1>",
            "<pre>" + html.escape("\n".join(meta_lines(run.meta))) + "</pre>"]
    for task, table in tables.items():
        cells = flat(table).to_html(index=False)
        body += [f"<h2>{html.escape(task)}</h2>", cells]
    body.append("<h2>Figures</h2>")
    for title, png in figures.items():
        data = base64.b64encode(png).decode("ascii")
        body.append(f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(title)}</figcaption></figure>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1250px} table{border-collapse:collapse;font-size:13px}"
             "th,td{border:1px solid #ccc;padding:3px 6px;text-align:right} img{max-width:100%} pre{white-space:pre-wrap}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(run.path.name)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, sweep_runs: tuple = ()) -> Report:
    """Builds the report of a run folder into `out_dir` (default: `<run>/report`); `sweep_runs` are more run
    folders made with other decoder settings (e.g. γ), for the trade-off curves."""
    run = load_run(run_dir)
    across_runs = settings_sweep([run, *map(load_run, sweep_runs)]) if sweep_runs else pd.DataFrame()
    out = Path(out_dir) if out_dir else run.path / "report"
    (out / "figures").mkdir(parents=True, exist_ok=True)
    table = summarize(run.rows)
    tables = task_tables(table) | category_tables(run.rows)
    if len(across_runs):
        tables["settings across runs"] = across_runs.set_index(["run", "task", "variant"])
    figures = all_figures(run.rows, run.path, across_runs)
    figure_paths = []
    for title, png in figures.items():
        path = out / "figures" / figure_file(title)
        path.write_bytes(png)
        figure_paths.append(path)
    report = Report(out / "report.md", out / "summary.csv", out / "report.html", figure_paths)
    report.markdown.write_text(markdown(run, tables, figure_paths), encoding="utf-8")
    table.to_csv(report.csv)
    report.html.write_text(html_page(run, tables, figures), encoding="utf-8")
    return report
