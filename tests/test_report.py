"""The report files of a hand-made run: tables, figures present only where there is data, the HTML page as
headless Chromium renders it."""
import base64
import html
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
from report_rows import result_row, write_run

from reports.render import write_report

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1280,2000"]


class PageElements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables, self.images = 0, []

    def handle_starttag(self, tag, attrs):
        self.tables += tag == "table"
        if tag == "img":
            self.images.append(dict(attrs)["src"])


# AdaDecode's real statistics (one sample of a run), so the tables are as wide as a real report's
ADADECODE_STATS = {"steps": 12, "passes": 20, "drafted": 9, "accepted": 8, "rejected": 1, "discarded": 0,
                   "acceptance_rate": 0.889, "rejection_rate": 0.111, "mean_acceptance_length": 1.7, "early_rate": 0.4,
                   "early_rate_by_layer": {"24": 0.3, "28": 0.1}, "mean_exit_layer": 27.1, "layers_per_token": 26.2}


def rich_run(folder: Path, gamma: float = 0.75, ada_s: float = 1.4, mismatch: bool = False) -> Path:
    """Vanilla and two decoders on two tasks, with every optional field some decoder reports; `mismatch` plants a
    parity mismatch of adadecode on xsum's sample 2 (the runner's classification), medusa's humaneval rows are old
    ones (`match` only) and one of them is a near-tie."""
    rows = []
    for task, quality in (("xsum", "rougeL"), ("humaneval", "pass@1")):
        for i in range(4):
            nvml = {"nvml_samples": [[0.0, 1e9, 10], [0.1, 1.2e9 + i * 1e7, 80]], "nvml_peak_bytes": 1.2e9}
            rows.append(result_row("vanilla", task, i, 20 + i, 2.0 + i * 0.1, quality={quality: 0.5}, memory=nvml))
            planted = mismatch and (task, i) == ("xsum", 2)
            rows.append(result_row("adadecode", task, i, 20 + i, ada_s, quality={quality: 0.5}, memory=nvml,
                                   stats={**ADADECODE_STATS, "exit_layers": [12, 20, 30, 30, 12]},
                                   match=not planted, parity_class="mismatch" if planted else "exact"))
            rows.append(result_row("medusa", task, i, 20 + i, 1.2 + i * 0.2, quality={quality: 0.5},
                                   stats={"drafted": 30, "accepted": 12, "acceptance_lengths": [1, 2, 3, 2],
                                          "mean_acceptance_length": 1.8},
                                   match=(task, i) != ("xsum", 3), parity_class=None if task == "humaneval" else
                                   "exact" if i != 3 else "near_tie"))
    write_run(folder, rows, {"command_lines": ["python run.py --decoders adadecode,medusa --tasks xsum,humaneval"],
                             "model": "smollm2", "dtype": "float32", "decoder_settings": {"adadecode": {"gamma": gamma}},
                             "device_info": {"cpu": "Planted CPU 9000", "cores": 2, "bf16": False}})
    pd.DataFrame({"task": ["xsum"] * 3, "decoder": ["adadecode"] * 3, "gamma": [0.5, 0.75, 0.95],
                  "speedup": [1.4, 1.3, 1.1], "parity_rate": [1.0, 1.0, 1.0]}).to_csv(folder / "gamma_sweep.csv",
                                                                                    index=False)
    return folder


def test_report_files_tables_and_embedded_figures(tmp_path):
    report = write_report(rich_run(tmp_path / "run"))
    assert {f.name for f in report.figures} == {
        "speedup-over-vanilla.png", "tokens-s-distributions.png", "per-token-latency.png", "exit-layers.png",
        "acceptance-lengths.png", "memory-over-time.png", "sweep-gamma-sweep.png"}
    page = PageElements()
    page.feed(report.html.read_text())
    # per task: the verdict and 4 detail groups (speed and latency, parity and quality, statistics, memory); metadata
    assert page.tables == 2 * 5 + 1 and len(page.images) == 7
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    markdown = report.markdown.read_text()
    assert markdown.index("## Warnings") < markdown.index("## Verdict") < markdown.index("## Details")
    assert "### xsum" in markdown and "### humaneval: memory" in markdown and "| adadecode" in markdown
    assert "speed-up: median of ratios (95 % CI)" in markdown and "speedup (ratio of totals)" in markdown
    assert "| 4 / 0 / 0 " in markdown and "| 3 / 1 / 0 " in markdown  # medusa's xsum near-tie: not a mismatch
    assert "PARITY MISMATCH" not in markdown and "near-tie: medusa on xsum" in markdown
    meta = markdown[markdown.index("## Run metadata"):]
    assert meta.index("| command ") < meta.index("| model ") < meta.index("| device ")
    assert "| device_info.cpu | Planted CPU 9000 |" in " ".join(meta.split())
    table = pd.read_csv(report.csv, index_col=[0, 1])
    assert len(table) == 6 and table.loc[("xsum", "medusa"), "acceptance (pooled)"] == pytest.approx(0.4)


def test_figures_without_data_are_left_out(tmp_path):
    rows = [result_row(d, "xsum", i, 10, 1.0) for i in range(2) for d in ("vanilla", "layerskip")]
    report = write_report(write_run(tmp_path / "run", rows))
    assert {f.name for f in report.figures} == {"speedup-over-vanilla.png", "tokens-s-distributions.png",
                                                "per-token-latency.png"}
    assert "exit layer" not in report.markdown.read_text() and "NVML" not in report.markdown.read_text()


def test_gamma_curve_across_runs_made_with_different_gamma(tmp_path):
    sweep = [rich_run(tmp_path / f"g{g}", gamma=g, ada_s=s) for g, s in ((0.5, 1.2), (0.95, 1.8))]
    report = write_report(rich_run(tmp_path / "run"), sweep_runs=tuple(sweep))
    assert "sweep-across-runs.png" in {f.name for f in report.figures}
    markdown = report.markdown.read_text()
    assert "## settings across runs" in markdown and "| g0.95 " in markdown and "| g0.5 " in markdown
    assert "sweep-across-runs" not in {f.stem for f in write_report(tmp_path / "g0.5").figures}


def test_report_command_prints_markdown_and_names_a_missing_run(tmp_path):
    run = rich_run(tmp_path / "run")
    out = subprocess.run([sys.executable, "run.py", "report", str(run), "--out", str(tmp_path / "r")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| medusa" in out.stdout and (tmp_path / "r" / "report.html").is_file()
    missing = subprocess.run([sys.executable, "run.py", "report", str(tmp_path / "none")], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "results.jsonl not found" in missing.stderr


def render_with_chromium(page: Path, screenshot: Path, profile: Path) -> None:
    subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={screenshot}",
                    page.resolve().as_uri()], capture_output=True, timeout=120, check=True)


# Measures the laid-out page in Chromium: the page's width, and where the warnings, the verdict and the figures start.
PROBE = """<script>window.addEventListener("load", () => {
  const top = (selector) => document.querySelector(selector).getBoundingClientRect().top;
  document.title = JSON.stringify({width: document.documentElement.scrollWidth, warnings: top("#warnings"),
                                   verdict: top("#verdict"), figures: top("figure")});
});</script>"""


def layout_in_chromium(page: Path, profile: Path) -> dict:
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return json.loads(html.unescape(re.search(r"<title>(.*?)</title>", dom, re.S).group(1)))


def failure_pixels(pixels, rows: int) -> int:
    """Pixels of the failure warnings' background (#ffd6d6) in the top `rows` of a screenshot."""
    rgb = (pixels[:rows, :, :3] * 255).round()
    return int((abs(rgb - [255, 214, 214]).max(axis=-1) <= 2).sum())


def with_long_variant(run: Path) -> Path:
    """Adds a sweep variant with a long name (adadecode's rows renamed), as `run.py sweep` writes them."""
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    extra = [{**r, "decoder": "adadecode@gamma=0.9,exit_layers=24+28,max_pending=5,vocabulary=candidates"}
             for r in rows if r["decoder"] == "adadecode"]
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + extra))
    return run


def test_html_page_renders_in_headless_chromium(tmp_path):
    """Screenshots at 1280 px: the warnings, then the verdict, at the top; no horizontal scrolling; a planted
    parity mismatch shows its red warning (and a run without one shows none)."""
    if shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing; .ci/run installs it")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    for name, mismatch in (("clean", False), ("mismatch", True)):
        report = write_report(with_long_variant(rich_run(tmp_path / name, mismatch=mismatch)))
        screenshot = tmp_path / f"{name}.png"
        render_with_chromium(report.html, screenshot, tmp_path / "profile")
        pixels = matplotlib.image.imread(screenshot)
        assert pixels.shape[:2] == (2000, 1280)
        assert pixels[:, :, :3].std() > 0.05  # a page with tables and plots, not a blank or error page
        assert (pixels[:, :, :3] < 0.5).mean() > 0.01  # dark pixels: text, table borders, axes
        layout = layout_in_chromium(report.html, tmp_path / "profile")
        assert layout["width"] <= 1280, layout  # nothing wider than the window: no horizontal scrolling
        assert layout["warnings"] < layout["verdict"] < 500 < layout["figures"], layout
        red = failure_pixels(pixels, 300)
        assert (red > 2000) if mismatch else (red == 0), red
        text = report.html.read_text()
        assert ("PARITY MISMATCH: adadecode on xsum" in text) == mismatch
        assert text.count("INVALID: parity mismatch") == (4 if mismatch else 0)  # speed-up, ratio of totals; 2 decoders
