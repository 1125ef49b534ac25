"""Writes a run's report: Markdown (terminal, PR comment), CSV, PNG figures and one self-contained HTML page.

Both pages lead with the verdict: the warnings (parity mismatches, errors, too few samples, outliers, missing
telemetry), then per task one verdict table (`reports.verdict`). The HTML page follows with the figures; both then
carry the detailed tables, split per task into readable groups (speed and latency, parity and quality, decoder
statistics, memory), and the run's metadata as a table (command line first). The HTML page fits 1280 px: long
headers and values wrap instead of widening the page.
"""
from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.schema import REFERENCE_DECODER
from reports.aggregate import SPEEDUP_MEDIAN, SPEEDUP_TOTALS, quality_metrics, summarize
from reports.ladder import model_ladder
from reports.plots import all_figures
from reports.run_files import Run, load_run
from reports.spec_bench import category_tables
from reports.sweeps import settings_sweep
from reports.verdict import Warning, invalid, verdict, warnings

SPEED_COLUMNS = ("samples", "errors", "tok/s median", "tok/s IQR", SPEEDUP_MEDIAN, "speedup q25", "speedup q75",
                 SPEEDUP_TOTALS, "paired samples", "TTFT median ms")
GROUPS = ("speed and latency", "parity and quality", "decoder statistics", "memory")
META_SECTIONS = {  # the metadata table's sections, in order; keys the runner does not write are left out
    "command": ("command_lines", "command"),
    "model": ("model", "dtype"),
    "device": ("device", "device_name", "device_info", "world_size", "device_names"),
    "versions": ("torch", "transformers", "python", "git_commit"),
    "settings": ("decoders", "decoder_settings", "settings_used", "trained_heads", "max_new_tokens", "limit", "seed",
                 "warmup", "telemetry", "sweep"),
    "data splits": ("split", "tasks"),
}


@dataclass
class Report:
    markdown: Path
    csv: Path
    html: Path
    figures: list[Path]


def cell(value) -> str:
    """4 significant digits, without an exponent below a million; empty where nothing was measured."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if pd.isna(value):
        return ""
    return f"{value:.0f}" if 1e3 <= abs(value) < 1e6 else f"{value:.4g}"


def flat(table: pd.DataFrame) -> pd.DataFrame:
    """The index as leading columns, every value as its cell text, headers readable (underscores as spaces)."""
    cells = table.reset_index().map(cell)
    return cells.rename(columns=lambda c: str(c).replace("_", " "))


def column_group(name: str, quality: list[str]) -> str:
    if name.endswith("MiB"):
        return "memory"
    if name.startswith("parity") or name.split(" (")[0] in quality:
        return "parity and quality"
    return "speed and latency" if name in SPEED_COLUMNS else "decoder statistics"


def detail_tables(table: pd.DataFrame, quality: list[str]) -> dict[str, pd.DataFrame]:
    """Per task and group (`GROUPS`), the summary's columns that something measured: '<task>: <group>' → table."""
    out = {}
    for task in table.index.unique("task"):
        part = table.xs(task, level="task").dropna(axis=1, how="all")
        for group in GROUPS:
            columns = [c for c in part.columns if column_group(c, quality) == group]
            if columns and (group == "speed and latency" or part[columns].notna().any().any()):
                out[f"{task}: {group}"] = part[columns]
    return out


def _interval(value: float, low: float, high: float, signed: bool = False) -> str:
    fmt = "+.3f" if signed else ".3f"
    if value != value:
        return ""
    return format(value, fmt) + (f" ({format(low, fmt)} to {format(high, fmt)})" if low == low else "")


def verdict_cells(table: pd.DataFrame, task: str, mark_invalid) -> pd.DataFrame:
    """The verdict table of one task as text cells; `mark_invalid(text)` renders an invalid speed-up."""
    bad = invalid(table)
    records = []
    for decoder, r in table.xs(task, level="task").iterrows():
        reference = decoder == REFERENCE_DECODER
        speed = "reference" if reference else _interval(r["speed-up"], r["speed-up low"], r["speed-up high"])
        totals = "" if reference else cell(r["ratio of totals"])
        if (task, decoder) in bad:
            speed, totals = mark_invalid(speed), mark_invalid(totals)
        record = {"decoder": decoder, "samples (errors)": f"{int(r['samples'])} ({int(r['errors'])})",
                  "tok/s median": cell(r["tok/s median"]),
                  "speed-up: median of ratios (95 % CI)": speed, "ratio of totals": totals,
                  "parity exact / near-tie / mismatch": "" if reference else
                  f"{int(r['exact'])} / {int(r['near_tie'])} / {int(r['mismatch'])}"}
        if r.get("distribution passed") in (True, False):  # a sampled run: the distribution check replaces parity
            del record["parity exact / near-tie / mismatch"]
            record["distribution check (p)"] = f"{'pass' if r['distribution passed'] else 'FAIL'} " \
                                               f"({r['distribution p']:.3g})"
        if "quality metric" in r and isinstance(r["quality metric"], str):
            metric = r["quality metric"]
            record[metric] = cell(r["quality"])
            record[f"{metric} − vanilla's (95 % CI)"] = "" if reference else _interval(
                r.get("quality difference", float("nan")), r.get("quality difference low", float("nan")),
                r.get("quality difference high", float("nan")), signed=True)
        early, accepted = r.get("early rate", float("nan")), r.get("mean accepted tokens", float("nan"))
        record["early rate / mean accepted tokens"] = (f"early rate {early:.3f}" if early == early else
                                                       f"{accepted:.2f} tokens per step" if accepted == accepted else "")
        records.append(record)
    cells = pd.DataFrame(records)
    return cells.loc[:, (cells != "").any() | (cells.columns == "decoder")]


def _flatten(key: str, value) -> list[tuple[str, str]]:
    """A metadata value as (key, text) rows: dicts and lists of dicts one row per leaf, short lists joined."""
    if isinstance(value, dict) and value:
        return [row for k, v in value.items() for row in _flatten(f"{key}.{k}", v)]
    if isinstance(value, list) and value and (any(isinstance(v, (dict, list)) for v in value)
                                              or sum(len(str(v)) for v in value) > 80):
        return [row for i, v in enumerate(value) for row in _flatten(f"{key}[{i}]", v)]
    if isinstance(value, list):
        return [(key, ", ".join(map(str, value)))]
    return [(key, value if isinstance(value, str) else json.dumps(value))]


def meta_table(meta: dict) -> pd.DataFrame:
    """The run's metadata as (section, key, value) rows: command line first, then model, device, versions,
    settings, data splits, then anything else the runner wrote."""
    placed = {k for keys in META_SECTIONS.values() for k in keys}
    sections = {**META_SECTIONS, "other": tuple(k for k in meta if k not in placed)}
    rows = [(section, key, text) for section, keys in sections.items() for name in keys if name in meta
            for key, text in _flatten(name, meta[name])]
    return pd.DataFrame(rows, columns=["section", "key", "value"])


def figure_file(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") + ".png"


def warning_lines(found: list[Warning]) -> list[str]:
    return [f"**{w.level.upper()}** {w.text}" for w in found] or ["No warnings: no parity mismatch, no errors, "
                                                                  "every speed-up firm, telemetry present."]


def markdown(run: Run, verdicts: pd.DataFrame, found: list[Warning], details: dict[str, pd.DataFrame],
             figures: list[Path]) -> str:
    parts = [f"# Benchmark report: {run.path.name}", "", "## Warnings", "",
             *[f"- {line}" for line in warning_lines(found)], "", "## Verdict", ""]
    for task in verdicts.index.unique("task"):
        cells = verdict_cells(verdicts, task, lambda text: f"~~{text}~~ INVALID (parity mismatch)" if text else text)
        parts += [f"### {task}", "", cells.to_markdown(index=False, disable_numparse=True), ""]
    parts += ["## Details", ""]
    for title, table in details.items():
        cells = flat(table)
        align = ["left" if c in table.index.names else "right" for c in table.reset_index().columns]
        parts += [f"### {title}", "", cells.to_markdown(index=False, disable_numparse=True, colalign=align), ""]
    parts += ["## Figures", "", *[f"![{f.stem}](figures/{f.name})" for f in figures], "",
              "## Run metadata", "", meta_table(run.meta).to_markdown(index=False, disable_numparse=True), ""]
    return "\n".join(parts)


STYLE = """
body{font-family:sans-serif;margin:16px;max-width:1240px;color:#111}
table{border-collapse:collapse;font-size:13px;margin:4px 0 16px;max-width:100%}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;overflow-wrap:anywhere;vertical-align:top}
th{background:#f3f3f3;overflow-wrap:normal} td:first-child,th:first-child{text-align:left}
td:first-child{overflow-wrap:normal} table.meta td{text-align:left}
#warnings p{margin:4px 0;padding:6px 10px;border-left:8px solid}
#warnings p.failure{background:#ffd6d6;border-color:#b00020;font-weight:bold}
#warnings p.caution{background:#fff3cd;border-color:#c98a00}
#warnings p.note,#warnings p.none{background:#e6f4ea;border-color:#2e7d32}
.invalid{color:#777;text-decoration:line-through} .invalid-label{color:#b00020;font-weight:bold}
img{max-width:100%} figure{margin:8px 0}
"""


def html_table(cells: pd.DataFrame, css_class: str = "") -> str:
    return cells.to_html(index=False, escape=False, classes=css_class or None, border=0)


def escaped(cells: pd.DataFrame) -> pd.DataFrame:
    """Cell texts as HTML; the first column (names that must not break mid-word) may break after '@' and ','."""
    out = cells.map(lambda text: html.escape(str(text)))
    first = out.columns[0]
    out[first] = out[first].str.replace("@", "@<wbr>").str.replace(",", ",<wbr>")
    return out


def html_page(run: Run, verdicts: pd.DataFrame, found: list[Warning], details: dict[str, pd.DataFrame],
              figures: dict[str, bytes]) -> str:
    body = [f"<h1>Benchmark report: {html.escape(run.path.name)}</h1>", '<section id="warnings">']
    levels = [w.level for w in found] or ["none"]
    body += [f'<p class="{level}">{line.replace("**", "<b>", 1).replace("**", "</b>", 1)}</p>'
             for level, line in zip(levels, map(html.escape, warning_lines(found)))]
    body += ["</section>", '<section id="verdict"><h2>Verdict</h2>']
    invalid_html = (lambda text: f'<span class="invalid">{text}</span> <span class="invalid-label">INVALID: '
                                 f'parity mismatch</span>' if text else text)
    for task in verdicts.index.unique("task"):
        cells = escaped(verdict_cells(verdicts, task, lambda text: f"\0{text}"))
        cells = cells.map(lambda text: invalid_html(text[1:]) if text.startswith("\0") else text)
        body += [f"<h3>{html.escape(task)}</h3>", html_table(cells, "verdict")]
    body += ["</section>", "<h2>Figures</h2>"]
    for title, png in figures.items():
        data = base64.b64encode(png).decode("ascii")
        body.append(f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(title)}</figcaption></figure>")
    body.append("<h2>Details</h2>")
    for title, table in details.items():
        body += [f"<h3>{html.escape(title)}</h3>", html_table(escaped(flat(table)))]
    body += ["<h2>Run metadata</h2>", html_table(escaped(meta_table(run.meta)), "meta")]
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(run.path.name)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, sweep_runs: tuple = (),
                 model_runs: tuple = ()) -> Report:
    """Builds the report of a run folder into `out_dir` (default: `<run>/report`); `sweep_runs` are more run
    folders made with other decoder settings (e.g. γ), for the trade-off curves; `model_runs` are runs of other
    models, for the model ladder (`reports.ladder`), the first of the details."""
    run = load_run(run_dir)
    across_runs = settings_sweep([run, *map(load_run, sweep_runs)]) if sweep_runs else pd.DataFrame()
    out = Path(out_dir) if out_dir else run.path / "report"
    (out / "figures").mkdir(parents=True, exist_ok=True)
    table = summarize(run.rows)
    verdicts = verdict(run.rows, run.distribution)
    found = warnings(run.rows, verdicts, run.meta)
    details = detail_tables(table, quality_metrics(run.rows)) | category_tables(run.rows)
    if model_runs:
        details = {"model ladder": model_ladder([run, *map(load_run, model_runs)])} | details
    if len(across_runs):
        details["settings across runs"] = across_runs.set_index(["run", "task", "variant"])
    figures = all_figures(run.rows, run.path, across_runs)
    figure_paths = []
    for title, png in figures.items():
        path = out / "figures" / figure_file(title)
        path.write_bytes(png)
        figure_paths.append(path)
    report = Report(out / "report.md", out / "summary.csv", out / "report.html", figure_paths)
    report.markdown.write_text(markdown(run, verdicts, found, details, figure_paths), encoding="utf-8")
    table.to_csv(report.csv)
    report.html.write_text(html_page(run, verdicts, found, details, figures), encoding="utf-8")
    return report
