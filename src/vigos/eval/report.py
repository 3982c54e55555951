"""Reports a person can look at: Markdown and HTML result tables with PNG plots.

The evaluation runner leaves ``summary.json`` in each run folder: the run's
settings and versions, the output of :func:`vigos.eval.metrics.summarize`
under ``"metrics"`` and of :func:`vigos.eval.metrics.vilp_scores` under
``"vilp"``. :func:`write_report` turns it into ``report.md`` and
``report.html`` next to ``benchmarks.png`` (Pass@k and Avg@k per benchmark
with their intervals) and, for ViLP, ``vilp.png`` (Score against Prior).
:func:`compare_runs` puts several runs (say base, OPSD and ViGOS) in one
table and one plot. :func:`screenshot_html` renders a page with headless
Chromium.

The HTML is self-contained: inline CSS, no script, nothing fetched; the
plots are PNG files beside it, referenced by relative path. Figures are
percent correct with two decimals and their interval with one:
``71.97 [69.1, 74.5]``. A summary may carry ``"confidence"`` (the interval's
level; default 0.95, that of ``summarize``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigos.eval.documents import Block, Table, markdown_table, write_documents
from vigos.eval.metrics import metric_names
from vigos.eval.report_plots import MISSING, BarSeries, Interval, ScorePriorPoint, grouped_bar_chart, score_prior_chart

__all__ = ["MISSING", "compare_runs", "results_table_markdown", "screenshot_html", "write_report"]

# How the paper writes the built-in suites; other names are shown as they are.
DISPLAY_NAMES = {
    "mmvet": "MM-Vet", "mmmu": "MMMU", "mmmu-pro": "MMMU-Pro", "mathverse": "MathVerse",
    "mathvista": "MathVista", "mmsi": "MMSI", "realworldqa": "RealWorldQA", "cvbench": "CV-Bench",
    "vilp-f": "ViLP-F", "vilp-p": "ViLP-P",
}
VILP_SIDES = (("score", "Score", "prior-conflicting images"), ("prior", "Prior", "agreeing images"))
CHROMIUM_HINT = "install Debian's chromium: apt-get install -y chromium"


# --- Reading summaries --------------------------------------------------------------------------

@dataclass
class _Run:
    """One run's summary, checked: ``benchmarks``/``mean`` from summarize, ``vilp`` from vilp_scores."""

    name: str
    summary: Mapping[str, Any]
    k: int
    benchmarks: Mapping[str, Mapping[str, Any]]
    mean: Mapping[str, Any]
    vilp: Mapping[str, Mapping[str, Any]]
    folder: Path | None = None

    @property
    def metrics(self) -> tuple[str, str]:
        return metric_names(self.k)


def _check_block(block: Any, k: int, label: str) -> None:
    if not isinstance(block, Mapping):
        raise ValueError(f"{label} must be a dict with {metric_names(k)}, got {type(block).__name__}")
    for metric in metric_names(k):
        figure = block.get(metric)
        if not isinstance(figure, Mapping) or any(
            not isinstance(figure.get(key), (int, float)) for key in ("mean", "low", "high", "n")
        ):
            raise ValueError(
                f"{label} lacks {metric!r} as {{mean, low, high, n}} (it holds {sorted(block)}); "
                f"the summary's k={k} must be the k the metrics were computed with"
            )
        if not all(0.0 <= figure[key] <= 1.0 for key in ("mean", "low", "high")):
            raise ValueError(f"{label}[{metric!r}] = {dict(figure)}: figures must be fractions in [0, 1] "
                             "as summarize writes them, not percentages")


def _infer_k(mean: Mapping[str, Any], where: str) -> int:
    found = [int(match.group(1)) for key in mean if (match := re.fullmatch(r"pass@(\d+)", str(key)))]
    if len(found) != 1:
        raise ValueError(f"{where}: no 'k' field and metrics.mean holds no single pass@k; add \"k\" to the summary")
    return found[0]


def _parse_summary(summary: Any, where: str, folder: Path | None = None) -> _Run:
    if not isinstance(summary, Mapping):
        raise TypeError(f"{where}: a summary must be a dict (the contents of summary.json), "
                        f"got {type(summary).__name__}")
    metrics = summary.get("metrics")
    if not isinstance(metrics, Mapping) or not isinstance(metrics.get("benchmarks"), Mapping) \
            or not isinstance(metrics.get("mean"), Mapping):
        raise ValueError(f"{where}: 'metrics' must be the output of vigos.eval.metrics.summarize "
                         "(a dict with 'benchmarks' and 'mean')")
    benchmarks, mean = metrics["benchmarks"], metrics["mean"]
    if not benchmarks:
        raise ValueError(f"{where}: metrics.benchmarks is empty; there is nothing to report")
    k = summary.get("k")
    if k is None:
        k = _infer_k(mean, where)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{where}: 'k' must be a positive integer, got {k!r}")
    _check_block(mean, k, f"{where}: metrics.mean")
    for name, block in benchmarks.items():
        _check_block(block, k, f"{where}: metrics.benchmarks[{name!r}]")
        for field_name in ("by_category", "by_split"):
            for value, group in (block.get(field_name) or {}).items():
                _check_block(group, k, f"{where}: metrics.benchmarks[{name!r}][{field_name!r}][{value!r}]")
    vilp = summary.get("vilp") or {}
    if not isinstance(vilp, Mapping):
        raise ValueError(f"{where}: 'vilp' must be the output of vigos.eval.metrics.vilp_scores or {{}}")
    for name, sides in vilp.items():
        if not isinstance(sides, Mapping) or set(sides) - {"score", "prior"}:
            raise ValueError(f"{where}: vilp[{name!r}] must be {{'score': block or None, 'prior': block or None}}")
        for side, block in sides.items():
            if block is not None:
                _check_block(block, k, f"{where}: vilp[{name!r}][{side!r}]")
    name = str(summary.get("run_name") or (folder.name if folder else "run"))
    return _Run(name, summary, k, benchmarks, mean, vilp, folder)


def _load_run(run_dir: str | Path) -> _Run:
    folder = Path(run_dir)
    path = folder / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the evaluation into {folder} first, "
                                "or pass the summary dict to write_report")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from error
    return _parse_summary(summary, str(path), folder)


# --- Text ---------------------------------------------------------------------------------------

def _display(benchmark: str) -> str:
    return DISPLAY_NAMES.get(benchmark, benchmark)


def _percent(figure: Mapping[str, Any]) -> str:
    return f"{100 * figure['mean']:.2f} [{100 * figure['low']:.1f}, {100 * figure['high']:.1f}]"


def _ci_label(summary: Mapping[str, Any]) -> str:
    return f"{100 * float(summary.get('confidence', 0.95)):g}% CI"


def _metric_label(metric: str) -> str:
    return metric.capitalize()


# --- Tables -------------------------------------------------------------------------------------

def _metric_columns(run: _Run) -> list[str]:
    ci = _ci_label(run.summary)
    return [f"{_metric_label(metric)} [{ci}]" for metric in run.metrics]


def _figures(block: Mapping[str, Any] | None, run: _Run) -> list[str]:
    """The item count and each metric's figure of ``block``, or a count of 0 and ``MISSING``."""
    if not block:
        return ["0", *(MISSING for _ in run.metrics)]
    return [str(block[run.metrics[0]]["n"]), *(_percent(block[metric]) for metric in run.metrics)]


def _results_table(run: _Run) -> Table:
    rows = [[_display(name), *_figures(block, run)] for name, block in run.benchmarks.items()]
    rows.append([f"Mean of {run.mean.get('n_benchmarks', len(run.benchmarks))} benchmarks", *_figures(run.mean, run)])
    return Table(["Benchmark", "n", *_metric_columns(run)], rows, section_starts={len(rows) - 1})


def _vilp_table(run: _Run) -> Table:
    rows = [[_display(name), f"{label} ({meaning})", *_figures(sides.get(side), run)]
            for name, sides in run.vilp.items() for side, label, meaning in VILP_SIDES]
    return Table(["Benchmark", "Side", "n", *_metric_columns(run)], rows, label_columns=2)


def _breakdown_table(run: _Run) -> Table | None:
    rows = [[_display(name), f"{word}: {value}", *_figures(group, run)]
            for name, block in run.benchmarks.items()
            for field_name, word in (("by_category", "category"), ("by_split", "split"))
            for value, group in (block.get(field_name) or {}).items()]
    return Table(["Benchmark", "Group", "n", *_metric_columns(run)], rows, label_columns=2) if rows else None


def results_table_markdown(summary: dict) -> str:
    """The results of one run as Markdown: Pass@k and Avg@k per benchmark and their mean, then ViLP.

    ``summary`` is the contents of ``summary.json``. The ViLP table (Score on
    prior-conflicting images, Prior on agreeing ones) follows when the summary
    has ViLP figures. Meant for a terminal as much as for ``report.md``.
    """
    run = _parse_summary(summary, "summary")
    parts = [markdown_table(_results_table(run))]
    if run.vilp:
        parts.append(markdown_table(_vilp_table(run)))
    parts.append(f"Percent correct; [{_ci_label(run.summary)}] percentile bootstrap over items.")
    return "\n\n".join(parts)


def _side_text(block: Mapping[str, Any] | None, run: _Run) -> str:
    if not block:
        return "no items"
    figures = ", ".join(f"{_metric_label(metric)} {_percent(block[metric])}" for metric in run.metrics)
    return f"{figures} over {block[run.metrics[0]]['n']} items"


def _vilp_sentences(run: _Run) -> list[str]:
    avg_name = run.metrics[1]
    sentences = []
    for name, sides in run.vilp.items():
        score, prior = sides.get("score"), sides.get("prior")
        sentence = (f"{_display(name)}: Score (prior-conflicting images): {_side_text(score, run)}; "
                    f"Prior (agreeing): {_side_text(prior, run)}.")
        if score and prior:
            gap = 100 * (prior[avg_name]["mean"] - score[avg_name]["mean"])
            direction = "lower" if gap >= 0 else "higher"
            sentence += (f" {_metric_label(avg_name)} is {abs(gap):.2f} points {direction} where the image "
                         "contradicts the text prior than where it agrees.")
        sentences.append(sentence)
    return sentences


def _meta(run: _Run) -> list[tuple[str, str]]:
    summary = run.summary
    items = [("Run", run.name)]
    if summary.get("model"):
        items.append(("Model", str(summary["model"])))
    draws = [f"{key.replace('_', ' ')} {summary[key]}" for key in ("n_samples", "seed") if summary.get(key) is not None]
    items.append(("k", f"{run.k}" + (f" ({', '.join(draws)})" if draws else "")))
    for key, label in (("sampling", "Sampling"), ("versions", "Versions")):
        value = summary.get(key)
        if isinstance(value, Mapping) and value:
            items.append((label, ", ".join(f"{name} {setting}" for name, setting in value.items())))
    if summary.get("engine"):
        items.append(("Engine", str(summary["engine"])))
    judge = summary.get("judge")
    if isinstance(judge, Mapping):
        used = str(judge.get("model") or "yes") if judge.get("used") else "none"
        items.append(("Judge", used + (f" ({judge['note']})" if judge.get("note") else "")))
    if summary.get("created"):
        items.append(("Created", str(summary["created"])))
    return items


# --- Plots --------------------------------------------------------------------------------------

def _interval(block: Mapping[str, Any] | None, metric: str) -> Interval | None:
    if not block:
        return None
    figure = block[metric]
    return 100 * figure["mean"], 100 * figure["low"], 100 * figure["high"]


def _score_prior_panels(runs: Sequence[_Run]) -> list[tuple[str, list[ScorePriorPoint]]]:
    """One panel per metric, one point per run and ViLP benchmark that has both sides; empty when none has."""
    panels = []
    for metric in runs[0].metrics:
        points = [ScorePriorPoint(run.name, _display(name), _interval(sides["prior"], metric),
                                  _interval(sides["score"], metric))
                  for run in runs for name, sides in run.vilp.items() if sides.get("score") and sides.get("prior")]
        panels.append((_metric_label(metric), points))
    return panels if any(points for _, points in panels) else []


# --- Reports ------------------------------------------------------------------------------------

def _response_links(folder: Path) -> list[tuple[str, str]]:
    return [(path.name, f"responses/{path.name}") for path in sorted((folder / "responses").glob("*.jsonl"))]


def write_report(run_dir: str | Path, summary: dict | None = None, *, title: str | None = None
                 ) -> dict[str, Path | list[Path]]:
    """Write ``report.md``, ``report.html`` and the PNG plots of one run into ``run_dir``.

    Reads ``run_dir/summary.json`` unless ``summary`` is given. The plots are
    ``benchmarks.png`` (Pass@k and Avg@k per benchmark and their mean, with
    interval error bars) and, when the summary has ViLP figures,
    ``vilp.png`` (Score against Prior with intervals). Both reports hold a
    header (run, model, k, sampling, versions, date), the results table, the
    plots and a sentence per ViLP benchmark. Returns
    ``{"html": path, "md": path, "plots": [paths]}``.
    """
    folder = Path(run_dir)
    run = _load_run(folder) if summary is None else _parse_summary(summary, "summary", folder)
    folder.mkdir(parents=True, exist_ok=True)
    metrics = " and ".join(_metric_label(metric) for metric in run.metrics)
    ci = _ci_label(run.summary)

    blocks: list[Block] = [("meta", _meta(run)), ("h2", "Results"), ("table", _results_table(run)),
                            ("p", f"Percent correct; [{ci}] percentile bootstrap over items. The mean weighs "
                                  "every benchmark equally.")]
    if run.vilp:
        blocks += [("h2", "ViLP: image against text prior"), ("table", _vilp_table(run)),
                   ("ul", _vilp_sentences(run))]
    labels = [_display(name) for name in run.benchmarks] + ["Mean"]
    per_label = [*run.benchmarks.values(), run.mean]
    series = [BarSeries(_metric_label(metric), [_interval(block, metric) for block in per_label])
              for metric in run.metrics]
    plots = [grouped_bar_chart(folder / "benchmarks.png", labels, [("", series)],
                               title=f"{run.name}: {metrics} per benchmark (bars: {ci})")]
    blocks += [("h2", "Plots"), ("figure", ("benchmarks.png", f"Bar chart of {metrics} per benchmark for {run.name}, "
                                            f"with {ci} error bars", f"{metrics} per benchmark; the last group is "
                                            "the mean over benchmarks."))]
    if panels := _score_prior_panels([run]):
        plots.append(score_prior_chart(folder / "vilp.png", panels,
                                       title=f"{run.name}: ViLP Score against Prior ({ci})"))
        blocks.append(("figure", ("vilp.png", f"Scatter plot of ViLP Score against Prior for {run.name}",
                                  "ViLP Score (prior-conflicting images) against Prior (agreeing images); "
                                  "a point on the dashed line answers as well against the prior as with it.")))
    if breakdown := _breakdown_table(run):
        blocks += [("h2", "By category and split"), ("table", breakdown)]
    if links := _response_links(folder):
        blocks += [("h2", "Responses"), ("links", links)]

    md_path, html_path = write_documents(folder, "report", title or f"Evaluation report: {run.name}", blocks)
    return {"html": html_path, "md": md_path, "plots": plots}


def _run_names(runs: Sequence[_Run], names: Sequence[str] | None) -> list[str]:
    if names is not None:
        names = [str(name) for name in names]
        if len(names) != len(runs):
            raise ValueError(f"got {len(names)} names for {len(runs)} run folders; give one name per run")
    else:
        names = [run.name for run in runs]
        # Two runs with the same run_name are told apart by their folders.
        names = [f"{name} ({run.folder.name})" if names.count(name) > 1 and run.folder else name
                 for name, run in zip(names, runs, strict=True)]
    if len(set(names)) != len(names):
        duplicates = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"run names must be unique, but {duplicates} appear more than once; pass names=[...]")
    return names


def _best_columns(blocks: Sequence[Mapping[str, Any] | None], metric: str) -> list[int]:
    """Positions of the highest figure among ``blocks``, ties at the shown precision included.

    None when fewer than two runs have a figure: there is nothing to compare.
    """
    shown = [round(100 * block[metric]["mean"], 2) if block else None for block in blocks]
    present = [value for value in shown if value is not None]
    return [c for c, value in enumerate(shown) if value == max(present)] if len(present) >= 2 else []


def _compare_table(runs: Sequence[_Run], benchmarks: Sequence[str], vilp_names: Sequence[str]) -> Table:
    rows: list[list[str]] = []
    figures: list[tuple[list[Mapping[str, Any] | None], str]] = []

    def add(label: str, blocks: list[Mapping[str, Any] | None]) -> None:
        for metric in runs[0].metrics:
            rows.append([label, _metric_label(metric), *(_percent(b[metric]) if b else MISSING for b in blocks)])
            figures.append((blocks, metric))

    for name in benchmarks:
        add(_display(name), [run.benchmarks.get(name) for run in runs])
    section_starts = {len(rows)}
    add("Mean", [run.mean for run in runs])
    section_starts.add(len(rows))
    for name in vilp_names:
        for side, label, _ in VILP_SIDES:
            add(f"{_display(name)} {label}", [(run.vilp.get(name) or {}).get(side) for run in runs])
    bold = {(r, 2 + c) for r, (blocks, metric) in enumerate(figures) for c in _best_columns(blocks, metric)}
    return Table(["Benchmark", "Metric", *(run.name for run in runs)], rows, label_columns=2, bold=bold,
                  section_starts=section_starts)


def _compare_vilp_sentences(runs: Sequence[_Run], vilp_names: Sequence[str]) -> list[str]:
    avg_name = runs[0].metrics[1]
    sentences = []
    for name in vilp_names:
        for side, label, meaning in VILP_SIDES:
            blocks = [(run.vilp.get(name) or {}).get(side) for run in runs]
            figures = ", ".join(f"{run.name} {_percent(block[avg_name]) if block else MISSING}"
                                for run, block in zip(runs, blocks, strict=True))
            sentences.append(f"{_display(name)} {label} ({meaning}), {_metric_label(avg_name)}: {figures}.")
    return sentences


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, *, names: Sequence[str] | None = None,
                 title: str = "Comparison") -> dict[str, Path | list[Path]]:
    """Put several runs side by side: ``compare.md``, ``compare.html`` and plots in ``out_dir``.

    Each run folder must hold ``summary.json``; all runs must share k.
    ``names`` label the runs (default: each summary's ``run_name``). The table
    has a row per benchmark and metric, the mean, and ViLP Score and Prior;
    a column per run; the best figure of each row in bold; ``MISSING`` where a
    run lacks a benchmark. ``compare.png`` groups the bars of all runs per
    benchmark; ``compare_vilp.png`` (when any run has ViLP figures) shows one
    Score-against-Prior point per run and ViLP benchmark. Returns
    ``{"html": path, "md": path, "plots": [paths]}``.
    """
    if isinstance(run_dirs, (str, Path)) or not run_dirs:
        raise ValueError("compare_runs needs a list of run folders, each holding summary.json")
    runs = [_load_run(folder) for folder in run_dirs]
    for run, name in zip(runs, _run_names(runs, names), strict=True):
        run.name = name
    if len({run.k for run in runs}) > 1:
        found = ", ".join(f"{run.name} k={run.k}" for run in runs)
        raise ValueError(f"runs were scored with different k ({found}); compare runs evaluated with the same k")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    benchmarks = list(dict.fromkeys(name for run in runs for name in run.benchmarks))
    vilp_names = list(dict.fromkeys(name for run in runs for name in run.vilp))
    ci = _ci_label(runs[0].summary)

    runs_table = Table(["Run", "Model", "k", "Created", "Folder"],
                        [[run.name, str(run.summary.get("model", MISSING)), str(run.k),
                          str(run.summary.get("created", MISSING)), str(run.folder)] for run in runs],
                        label_columns=5)
    blocks: list[Block] = [("h2", "Runs"), ("table", runs_table), ("h2", "Results"),
                            ("table", _compare_table(runs, benchmarks, vilp_names)),
                            ("p", f"Percent correct with [{ci}]; bold: the best run of each row. "
                                  f"{MISSING}: the run has no such benchmark.")]
    lacking = [f"{run.name} lacks {', '.join(_display(b) for b in benchmarks if b not in run.benchmarks)}"
               for run in runs if set(run.benchmarks) != set(benchmarks)]
    if lacking:
        blocks.append(("p", f"The runs cover different benchmarks ({'; '.join(lacking)}), so each mean is over "
                            "that run's own benchmarks."))
    if vilp_names:
        blocks += [("h2", "ViLP"), ("ul", _compare_vilp_sentences(runs, vilp_names))]

    labels = [_display(name) for name in benchmarks] + ["Mean"]
    panels = [(f"{_metric_label(metric)} (bars: {ci})",
               [BarSeries(run.name, [_interval(run.benchmarks.get(name), metric) for name in benchmarks]
                          + [_interval(run.mean, metric)]) for run in runs])
              for metric in runs[0].metrics]
    plots = [grouped_bar_chart(out / "compare.png", labels, panels, title=title)]
    blocks += [("h2", "Plots"), ("figure", ("compare.png", "Grouped bar chart comparing runs "
                                            f"{', '.join(run.name for run in runs)} per benchmark",
                                            "Each group is a benchmark (the last: the mean); one bar per run, "
                                            "with interval error bars."))]
    if vilp_panels := _score_prior_panels(runs):
        plots.append(score_prior_chart(out / "compare_vilp.png", vilp_panels,
                                       title=f"{title}: ViLP Score against Prior ({ci})"))
        blocks.append(("figure", ("compare_vilp.png", "Scatter plot of ViLP Score against Prior, one point per run "
                                  "and benchmark", "Colour: run; marker: ViLP benchmark. Higher is better on "
                                  "both axes; below the dashed line the text prior wins over the image.")))
    reports = [(f"{run.name}: report", os.path.relpath(run.folder / "report.html", out)) for run in runs
               if run.folder and (run.folder / "report.html").is_file()]
    if reports:
        blocks += [("h2", "Run reports"), ("links", reports)]

    md_path, html_path = write_documents(out, "compare", title, blocks)
    return {"html": html_path, "md": md_path, "plots": plots}


# --- Screenshots --------------------------------------------------------------------------------

def _find_chromium(chromium: str | Path | None) -> str:
    if chromium is not None:
        if not (Path(chromium).is_file() and os.access(chromium, os.X_OK)):
            raise FileNotFoundError(f"no Chromium executable at {chromium}; {CHROMIUM_HINT}")
        return str(chromium)
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    if found is None:
        raise FileNotFoundError(f"Chromium is not installed (no 'chromium' on PATH); {CHROMIUM_HINT}")
    return found


def screenshot_html(html_path: str | Path, png_path: str | Path, *, width: int = 1200, height: int = 1600,
                    chromium: str | Path | None = None, timeout: float = 120.0) -> Path:
    """Render ``html_path`` with headless Chromium and save a ``width`` x ``height`` PNG at ``png_path``.

    Uses ``chromium`` when given, else the ``chromium`` on PATH
    (``/usr/bin/chromium`` from Debian's package). A fresh profile folder is
    used and removed; background networking, sync and updates are off.
    Raises FileNotFoundError when the page or Chromium is missing and
    RuntimeError when Chromium fails or writes no image.
    """
    page = Path(html_path).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"no HTML page at {page}; write it first (write_report or compare_runs)")
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive pixel counts, got {width}x{height}")
    binary = _find_chromium(chromium)
    target = Path(png_path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    # A stale image from an earlier run must not pass for this one.
    target.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="vigos-chromium-") as profile:
        command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={target}",
                   f"--window-size={width},{height}", page.as_uri()]
        with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True) as process:
            try:
                _, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired as error:
                # Chromium starts helper processes: end the whole group it leads, not the browser alone.
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
                raise RuntimeError(f"Chromium did not finish the screenshot of {page} within {timeout:g} s") from error
    if process.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
        tail = "\n".join(stderr.strip().splitlines()[-8:])
        raise RuntimeError(f"Chromium could not screenshot {page} (exit code {process.returncode}):\n{tail}")
    return target
