"""Reports from real summaries: Markdown/HTML tables, PNG plots, side-by-side runs, Chromium screenshots."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vigos.eval.compare import compare_runs
from vigos.eval.metrics import summarize, vilp_scores
from vigos.eval.report import results_table_markdown, write_report
from vigos.eval.report_plots import MISSING
from vigos.eval.screenshot import CHROMIUM_HINT, screenshot_html

K = 5
RESAMPLES = 200


def samples(n_correct: int, k: int = K) -> list[bool]:
    return [True] * n_correct + [False] * (k - n_correct)


def bench(name: str, counts: list[int], **fields) -> list[dict]:
    """One record per item, ``counts[i]`` of its k samples right."""
    return [{"benchmark": name, "id": str(i), "correct": samples(c), **fields} for i, c in enumerate(counts)]


def vilp(name: str, conflicting: list[int], agreeing: list[int]) -> list[dict]:
    return [{**r, "conflict": True, "split": "conflict"} for r in bench(name, conflicting)] + [
        {**r, "id": f"a{r['id']}", "conflict": False, "split": "agree"} for r in bench(name, agreeing)
    ]


def make_summary(records: list[dict], run_name: str = "vigos", k: int = K) -> dict:
    has_vilp = any("conflict" in record for record in records)
    return {
        "run_name": run_name,
        "model": "Qwen/Qwen2.5-VL-3B-Instruct",
        "k": k,
        "n_samples": k,
        "seed": 0,
        "sampling": {"temperature": 1.0, "top_p": 0.9, "top_k": 50, "max_new_tokens": 4096},
        "versions": {"vigos": "0.1.0", "torch": "2.14.1", "transformers": "5.23.0"},
        "metrics": summarize(records, k, n_resamples=RESAMPLES),
        "vilp": vilp_scores(records, k, n_resamples=RESAMPLES) if has_vilp else {},
        "created": "2026-11-24T10:00:00Z",
    }


def main_records() -> list[dict]:
    # mathvista: Pass@5 3/4 = 75.00, Avg@5 (1+0+5+2)/20 = 40.00
    # mmmu:      Pass@5 1/2 = 50.00, Avg@5 2/10 = 20.00 (Art: 100/40, Math: 0/0)
    # vilp-f:    all 4 items Pass@5 75.00, Avg@5 (1+0+4+5)/20 = 50.00;
    #            Score (conflicting) Pass@5 50.00, Avg@5 10.00; Prior (agreeing) Pass@5 100.00, Avg@5 90.00
    # mean over the three: Pass@5 200/3 = 66.67, Avg@5 110/3 = 36.67
    return (
        bench("mathvista", [1, 0, 5, 2])
        + [{**r, "category": cat} for r, cat in zip(bench("mmmu", [2, 0]), ["Art", "Math"], strict=True)]
        + vilp("vilp-f", [1, 0], [4, 5])
    )


def write_run(folder: Path, records: list[dict], run_name: str, k: int = K) -> Path:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(make_summary(records, run_name, k)), encoding="utf-8")
    return folder


def cells(markdown: str, *labels: str) -> list[str]:
    """The cells of the table row whose leading cells are ``labels``."""
    prefix = "| " + " | ".join(labels) + " |"
    rows = [line for line in markdown.splitlines() if line.startswith(prefix)]
    assert len(rows) == 1, f"expected one row {prefix!r}, found {rows}"
    return [cell.strip() for cell in rows[0].strip().strip("|").split(" | ")]


def ci(block: dict) -> str:
    return f"[{100 * block['low']:.1f}, {100 * block['high']:.1f}]"


def assert_real_png(path: Path, min_size: tuple[int, int] = (400, 300)) -> None:
    assert path.is_file()
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= min_size[0] and image.height >= min_size[1]
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 20, "the image is (almost) a single colour"


def referenced_files(html_path: Path) -> list[Path]:
    text = html_path.read_text(encoding="utf-8")
    return [html_path.parent / unquote(ref) for ref in re.findall(r'(?:src|href)="([^"]+)"', text)]


# --- write_report --------------------------------------------------------------------------------


def test_write_report_writes_every_file(tmp_path):
    run_dir = write_run(tmp_path / "vigos", main_records(), "vigos")
    (run_dir / "responses").mkdir()
    (run_dir / "responses" / "mathvista.jsonl").write_text('{"id": "0"}\n', encoding="utf-8")

    out = write_report(run_dir)

    assert out["html"] == run_dir / "report.html" and out["md"] == run_dir / "report.md"
    assert out["plots"] == [run_dir / "benchmarks.png", run_dir / "vilp.png"]
    for plot in out["plots"]:
        assert_real_png(plot)
    html_text = out["html"].read_text(encoding="utf-8")
    refs = referenced_files(out["html"])
    assert {ref.name for ref in refs} == {"benchmarks.png", "vilp.png", "mathvista.jsonl"}
    assert all(ref.is_file() for ref in refs)
    assert html_text.count("<img ") == 2 and re.search(r'<img src="benchmarks.png" alt="[^"]+"', html_text)
    # Self-contained: no script, no stylesheet or image from elsewhere.
    for forbidden in ("<script", "<link", "http://", "https://", "//cdn"):
        assert forbidden not in html_text
    markdown = out["md"].read_text(encoding="utf-8")
    assert "![" in markdown and "(benchmarks.png)" in markdown and "(vilp.png)" in markdown


def test_markdown_table_holds_the_summary_numbers(tmp_path):
    summary = make_summary(main_records())
    table = results_table_markdown(summary)
    benchmarks, mean = summary["metrics"]["benchmarks"], summary["metrics"]["mean"]

    assert cells(table, "MathVista") == [
        "MathVista",
        "4",
        f"75.00 {ci(benchmarks['mathvista']['pass@5'])}",
        f"40.00 {ci(benchmarks['mathvista']['avg@5'])}",
    ]
    assert cells(table, "MMMU")[1:] == [
        "2",
        f"50.00 {ci(benchmarks['mmmu']['pass@5'])}",
        f"20.00 {ci(benchmarks['mmmu']['avg@5'])}",
    ]
    assert cells(table, "ViLP-F", "4")[2:] == [
        f"75.00 {ci(benchmarks['vilp-f']['pass@5'])}",
        f"50.00 {ci(benchmarks['vilp-f']['avg@5'])}",
    ]
    assert cells(table, "Mean of 3 benchmarks")[1:] == [
        "10",
        f"66.67 {ci(mean['pass@5'])}",
        f"36.67 {ci(mean['avg@5'])}",
    ]
    assert "Pass@5 [95% CI]" in table and "Avg@5 [95% CI]" in table
    score = cells(table, "ViLP-F", "Score (prior-conflicting images)")
    prior = cells(table, "ViLP-F", "Prior (agreeing images)")
    assert score[2:4] == ["2", f"50.00 {ci(summary['vilp']['vilp-f']['score']['pass@5'])}"]
    assert score[4].startswith("10.00 [")
    assert prior[2:] == ["2", "100.00 [100.0, 100.0]", f"90.00 {ci(summary['vilp']['vilp-f']['prior']['avg@5'])}"]

    # report.md carries the same tables, plus the per-category breakdown and a sentence per ViLP benchmark.
    report = Path(write_report(tmp_path, summary)["md"]).read_text(encoding="utf-8")
    for part in table.split("\n\n")[:2]:
        assert part in report
    assert cells(report, "MMMU", "category: Art") == [
        "MMMU",
        "category: Art",
        "1",
        "100.00 [100.0, 100.0]",
        "40.00 [40.0, 40.0]",
    ]
    assert "ViLP-F: Score (prior-conflicting images): Pass@5 50.00 [" in report
    assert "Prior (agreeing): Pass@5 100.00 [100.0, 100.0], Avg@5 90.00 [" in report
    assert "Avg@5 is 80.00 points lower where the image contradicts the text prior" in report
    for header in (
        "Qwen/Qwen2.5-VL-3B-Instruct",
        "temperature 1.0, top_p 0.9, top_k 50, max_new_tokens 4096",
        "vigos 0.1.0, torch 2.14.1",
        "2026-11-24T10:00:00Z",
        "5 (n samples 5, seed 0)",
    ):
        assert header in report


def test_summary_without_vilp_has_no_vilp_plot_or_section(tmp_path):
    out = write_report(tmp_path, make_summary(bench("mathvista", [1, 0, 5]) + bench("cvbench", [0, 3])))
    assert out["plots"] == [tmp_path / "benchmarks.png"]
    assert not (tmp_path / "vilp.png").exists()
    report = out["md"].read_text(encoding="utf-8")
    assert "ViLP" not in report and "CV-Bench" in report
    assert "ViLP" not in results_table_markdown(make_summary(bench("mathvista", [1])))


def test_html_escapes_the_run_name(tmp_path):
    name = '<b>x</b> & "$y$"'
    out = write_report(tmp_path, make_summary(main_records(), run_name=name))
    html_text = out["html"].read_text(encoding="utf-8")
    assert "<b>x</b>" not in html_text
    assert "&lt;b&gt;x&lt;/b&gt; &amp; &quot;$y$&quot;" in html_text
    assert "<b>" not in out["md"].read_text(encoding="utf-8")
    # The dollar signs reach the plot titles as text, not as math.
    for plot in out["plots"]:
        assert_real_png(plot)


def test_title_and_reading_summary_json_from_the_run_folder(tmp_path):
    run_dir = write_run(tmp_path / "run", main_records(), "from-disk")
    out = write_report(run_dir, title="Qwen2.5-VL-3B after ViGOS")
    html_text = out["html"].read_text(encoding="utf-8")
    assert "<title>Qwen2.5-VL-3B after ViGOS</title>" in html_text and "from-disk" in html_text


def test_header_shows_engine_and_judge_when_the_runner_records_them(tmp_path):
    note = "2 items are judge-graded in the protocol, but no judge was used"
    summary = {**make_summary(main_records()), "engine": "hf", "judge": {"used": False, "model": None, "note": note}}
    report = write_report(tmp_path / "a", summary)["md"].read_text(encoding="utf-8")
    assert "- **Engine:** hf" in report and f"- **Judge:** none ({note})" in report
    summary["judge"] = {"used": True, "model": "judge-7b"}
    assert "- **Judge:** judge-7b" in write_report(tmp_path / "b", summary)["md"].read_text(encoding="utf-8")


def test_bad_summaries_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="summary.json"):
        write_report(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        write_report(tmp_path / "broken")

    summary = make_summary(main_records())
    with pytest.raises(ValueError, match="summarize"):
        results_table_markdown({**summary, "metrics": {"benchmarks": {}}})
    with pytest.raises(ValueError, match="k=3"):
        results_table_markdown({**summary, "k": 3})
    percent = json.loads(json.dumps(summary))
    percent["metrics"]["benchmarks"]["mmmu"]["pass@5"]["mean"] = 50.0
    with pytest.raises(ValueError, match=r"mmmu.*fractions in \[0, 1\]"):
        results_table_markdown(percent)
    # Without "k" the summary's own pass@k names it.
    without_k = {key: value for key, value in summary.items() if key != "k"}
    assert "Pass@5" in results_table_markdown(without_k)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=4, unique=True))
def test_any_benchmark_name_keeps_the_markdown_table_shape(names):
    records = [record for i, name in enumerate(names) for record in bench(name, [i % (K + 1), 1])]
    summary = {"k": K, "metrics": summarize(records, K, n_resamples=20)}
    table = results_table_markdown(summary).split("\n\n")[0]

    def separators(line: str) -> int:
        # A pipe separates cells unless an odd number of backslashes escapes it.
        return sum(1 for match in re.finditer(r"(\\*)\|", line) if len(match.group(1)) % 2 == 0)

    lines = table.splitlines()
    assert len(lines) == 2 + len(summary["metrics"]["benchmarks"]) + 1
    assert all(separators(line) == 5 for line in lines)


# --- compare_runs --------------------------------------------------------------------------------


@pytest.fixture
def three_runs(tmp_path) -> list[Path]:
    # mathvista Pass@5 / Avg@5: base 50/15, opsd 75/30, vigos 100/45; mmmu: base 50/10, opsd none, vigos 100/30.
    # ViLP-F Score Avg@5: base 0, opsd 10, vigos 30; Prior Avg@5: base 90, opsd 100, vigos 90.
    base = bench("mathvista", [0, 1, 0, 2]) + bench("mmmu", [1, 0]) + vilp("vilp-f", [0, 0], [5, 4])
    opsd = bench("mathvista", [1, 2, 0, 3]) + vilp("vilp-f", [1, 0], [5, 5])
    vigos = bench("mathvista", [2, 1, 3, 3]) + bench("mmmu", [2, 1]) + vilp("vilp-f", [2, 1], [5, 4])
    return [
        write_run(tmp_path / name, records, name)
        for name, records in (("base", base), ("opsd", opsd), ("vigos", vigos))
    ]


def test_compare_runs_marks_missing_and_bolds_the_best(tmp_path, three_runs):
    for run_dir in three_runs:
        write_report(run_dir)
    out = compare_runs(three_runs, tmp_path / "compare", title="3B: base vs OPSD vs ViGOS")

    assert out["md"] == tmp_path / "compare" / "compare.md"
    assert out["plots"] == [tmp_path / "compare" / "compare.png", tmp_path / "compare" / "compare_vilp.png"]
    for plot in out["plots"]:
        assert_real_png(plot)
    markdown = out["md"].read_text(encoding="utf-8")
    assert "| Benchmark | Metric | base | opsd | vigos |" in markdown

    mmmu = cells(markdown, "MMMU", "Pass@5")
    assert mmmu[3] == MISSING
    assert mmmu[2].startswith("50.00 [") and mmmu[4].startswith("**100.00 [")
    mathvista = cells(markdown, "MathVista", "Avg@5")
    assert [cell.startswith("**") for cell in mathvista[2:]] == [False, False, True]
    assert mathvista[4].startswith("**45.00 [")
    score = cells(markdown, "ViLP-F Score", "Avg@5")
    assert [cell.split(" [")[0] for cell in score[2:]] == ["0.00", "10.00", "**30.00"]
    # Ties at the shown precision are all bold.
    prior_pass = cells(markdown, "ViLP-F Prior", "Pass@5")
    assert all(cell.startswith("**100.00 [100.0, 100.0]**") for cell in prior_pass[2:])
    assert "opsd lacks MMMU" in markdown
    assert "ViLP-F Score (prior-conflicting images), Avg@5: base 0.00 [0.0, 0.0], opsd 10.00 [" in markdown

    html_text = out["html"].read_text(encoding="utf-8")
    assert '<td class="num"><strong>100.00 [' in html_text and f'<td class="num">{MISSING}</td>' in html_text
    refs = referenced_files(out["html"])
    assert {ref.name for ref in refs} == {"compare.png", "compare_vilp.png", "report.html"}
    assert all(ref.is_file() for ref in refs)
    assert "<script" not in html_text and "http" not in html_text


def test_compare_runs_names_and_their_errors(tmp_path, three_runs):
    out = compare_runs(three_runs, tmp_path / "named", names=["Base", "OPSD", "ViGOS"])
    assert "| Benchmark | Metric | Base | OPSD | ViGOS |" in out["md"].read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="2 names for 3 run folders"):
        compare_runs(three_runs, tmp_path / "x", names=["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        compare_runs(three_runs, tmp_path / "x", names=["a", "a", "b"])
    with pytest.raises(ValueError, match="list of run folders"):
        compare_runs(three_runs[0], tmp_path / "x")
    other_k = write_run(tmp_path / "k2", bench("mathvista", [1, 0]), "k2", k=2)
    with pytest.raises(ValueError, match="different k"):
        compare_runs([three_runs[0], other_k], tmp_path / "x")


def test_compare_runs_tells_apart_runs_with_the_same_name(tmp_path):
    runs = [
        write_run(tmp_path / "a", bench("mathvista", [1, 0]) + bench("cvbench", [2]), "vigos"),
        write_run(tmp_path / "b", bench("mathvista", [1, 5]), "vigos"),
    ]
    markdown = compare_runs(runs, tmp_path / "cmp")["md"].read_text(encoding="utf-8")
    assert "| vigos (a) | vigos (b) |" in markdown
    assert cells(markdown, "MathVista", "Avg@5")[2:] == ["10.00 [0.0, 20.0]", "**60.00 [20.0, 100.0]**"]
    # A figure only one run has is not "best" of anything.
    assert cells(markdown, "CV-Bench", "Pass@5")[2:] == ["100.00 [100.0, 100.0]", MISSING]
    assert not (tmp_path / "cmp" / "compare_vilp.png").exists()


# --- screenshots ---------------------------------------------------------------------------------


def test_screenshot_errors_name_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no HTML page"):
        screenshot_html(tmp_path / "absent.html", tmp_path / "shot.png")
    page = tmp_path / "page.html"
    page.write_text("<p>hi</p>", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=re.escape(CHROMIUM_HINT)):
        screenshot_html(page, tmp_path / "shot.png", chromium=tmp_path / "no-chromium")
    # A "browser" that fails, or exits cleanly without writing the image, is reported, not trusted.
    fake = tmp_path / "fake-chromium"
    for script, message in (("echo 'cannot open display' >&2; exit 3", "exit code 3"), ("exit 0", "exit code 0")):
        fake.write_text(f"#!/bin/sh\n{script}\n", encoding="utf-8")
        fake.chmod(0o755)
        with pytest.raises(RuntimeError, match=message):
            screenshot_html(page, tmp_path / "shot.png", chromium=fake)
    fake.write_text("#!/bin/sh\nsleep 30\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="within 0.5 s"):
        screenshot_html(page, tmp_path / "shot.png", chromium=fake, timeout=0.5)


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="needs Debian's chromium (apt-get install -y chromium, or scripts/screenshot_report.sh)",
)
def test_report_renders_in_headless_chromium(tmp_path):
    out = write_report(tmp_path, make_summary(main_records()))
    shot = screenshot_html(out["html"], tmp_path / "shot.png", width=1000, height=1400)

    assert_real_png(shot)
    with Image.open(shot) as image:
        assert image.size == (1000, 1400)
        pixels = image.convert("L")
        # The page is mostly white, with dark text near the top (title and header) and drawn content lower down.
        top, lower = pixels.crop((0, 0, 1000, 120)), pixels.crop((0, 600, 1000, 1400))
        assert top.getextrema()[0] < 80 and lower.getextrema()[0] < 80
        assert len(lower.getcolors(maxcolors=1 << 20) or range(1000)) > 50
