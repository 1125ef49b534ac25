"""The report files of a hand-made run: tables, figures present only where there is data, the HTML page as
headless Chromium renders it."""
import base64
import os
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


def rich_run(folder: Path, gamma: float = 0.75, ada_s: float = 1.4) -> Path:
    """Vanilla and two decoders on two tasks, with every optional field some decoder reports."""
    rows = []
    for task, quality in (("xsum", "rougeL"), ("humaneval", "pass@1")):
        for i in range(4):
            nvml = {"nvml_samples": [[0.0, 1e9, 10], [0.1, 1.2e9 + i * 1e7, 80]], "nvml_peak_bytes": 1.2e9}
            rows.append(result_row("vanilla", task, i, 20 + i, 2.0 + i * 0.1, quality={quality: 0.5}, memory=nvml))
            rows.append(result_row("adadecode", task, i, 20 + i, ada_s, quality={quality: 0.5}, memory=nvml,
                                   stats={"steps": 12, "exit_layers": [12, 20, 30, 30, 12]}))
            rows.append(result_row("medusa", task, i, 20 + i, 1.2 + i * 0.2, quality={quality: 0.5},
                                   stats={"drafted": 30, "accepted": 12, "acceptance_lengths": [1, 2, 3, 2]}))
    write_run(folder, rows, {"model": "smollm2", "dtype": "float32", "decoder_settings": {"adadecode": {"gamma": gamma}}})
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
    assert page.tables == 2 and len(page.images) == 7
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    markdown = report.markdown.read_text()
    assert "## xsum" in markdown and "## humaneval" in markdown and "| adadecode" in markdown
    assert "speedup (median of ratios)" in markdown and "speedup (ratio of totals)" in markdown
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


def test_html_page_renders_in_headless_chromium(tmp_path):
    if shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing; .ci/run installs it")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    report = write_report(rich_run(tmp_path / "run"))
    screenshot = tmp_path / "report.png"
    render_with_chromium(report.html, screenshot, tmp_path / "profile")
    pixels = matplotlib.image.imread(screenshot)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels[:, :, :3].std() > 0.05  # a page with tables and plots, not a blank or error page
    assert (pixels[:, :, :3] < 0.5).mean() > 0.01  # dark pixels: text, table borders, axes
