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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigos.eval.documents import Block, Table, markdown_table, write_documents
from vigos.eval.metrics import metric_names
from vigos.eval.protocols import DEFAULT_PROTOCOL, protocol_note
from vigos.eval.report_plots import MISSING, BarSeries, Interval, ScorePriorPoint, grouped_bar_chart, score_prior_chart

__all__ = ["MISSING", "results_table_markdown", "write_report"]

# How the paper writes the built-in suites; other names are shown as they are.
DISPLAY_NAMES = {
    "mmvet": "MM-Vet",
    "mmmu": "MMMU",
    "mmmu-pro": "MMMU-Pro",
    "mathverse": "MathVerse",
    "mathvista": "MathVista",
    "mmsi": "MMSI",
    "realworldqa": "RealWorldQA",
    "cvbench": "CV-Bench",
    "vilp-f": "ViLP-F",
    "vilp-p": "ViLP-P",
}
VILP_SIDES = (("score", "Score", "prior-conflicting images"), ("prior", "Prior", "agreeing images"))


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
            raise ValueError(
                f"{label}[{metric!r}] = {dict(figure)}: figures must be fractions in [0, 1] "
                "as summarize writes them, not percentages"
            )


def _infer_k(mean: Mapping[str, Any], where: str) -> int:
    found = [int(match.group(1)) for key in mean if (match := re.fullmatch(r"pass@(\d+)", str(key)))]
    if len(found) != 1:
        raise ValueError(f"{where}: no 'k' field and metrics.mean holds no single pass@k; add \"k\" to the summary")
    return found[0]


def _parse_summary(summary: Any, where: str, folder: Path | None = None) -> _Run:
    if not isinstance(summary, Mapping):
        raise TypeError(
            f"{where}: a summary must be a dict (the contents of summary.json), got {type(summary).__name__}"
        )
    metrics = summary.get("metrics")
    if (
        not isinstance(metrics, Mapping)
        or not isinstance(metrics.get("benchmarks"), Mapping)
        or not isinstance(metrics.get("mean"), Mapping)
    ):
        raise ValueError(
            f"{where}: 'metrics' must be the output of vigos.eval.metrics.summarize "
            "(a dict with 'benchmarks' and 'mean')"
        )
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
        raise FileNotFoundError(
            f"{path} does not exist; run the evaluation into {folder} first, or pass the summary dict to write_report"
        )
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
    rows = [
        [_display(name), f"{label} ({meaning})", *_figures(sides.get(side), run)]
        for name, sides in run.vilp.items()
        for side, label, meaning in VILP_SIDES
    ]
    return Table(["Benchmark", "Side", "n", *_metric_columns(run)], rows, label_columns=2)


def _breakdown_table(run: _Run) -> Table | None:
    rows = [
        [_display(name), f"{word}: {value}", *_figures(group, run)]
        for name, block in run.benchmarks.items()
        for field_name, word in (("by_category", "category"), ("by_split", "split"))
        for value, group in (block.get(field_name) or {}).items()
    ]
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
        sentence = (
            f"{_display(name)}: Score (prior-conflicting images): {_side_text(score, run)}; "
            f"Prior (agreeing): {_side_text(prior, run)}."
        )
        if score and prior:
            gap = 100 * (prior[avg_name]["mean"] - score[avg_name]["mean"])
            direction = "lower" if gap >= 0 else "higher"
            sentence += (
                f" {_metric_label(avg_name)} is {abs(gap):.2f} points {direction} where the image "
                "contradicts the text prior than where it agrees."
            )
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
    protocol = str(summary.get("protocol") or DEFAULT_PROTOCOL)
    items.append(("Protocol", f"{protocol}: {protocol_note(protocol)}"))
    if summary.get("engine"):
        items.append(("Engine", str(summary["engine"])))
    judge = summary.get("judge")
    if isinstance(judge, Mapping):
        used = str(judge.get("model") or "yes") if judge.get("used") else "none"
        items.append(("Judge", used + (f" ({judge['note']})" if judge.get("note") else "")))
    if partial := summary.get("partial_credit"):
        names = ", ".join(_display(name) for name in partial)
        items.append(("Partial credit", f"{names}: the mean of the judge's 0-1 scores; Pass@k the expected best of k"))
    skipped = summary.get("skipped_rows")
    if isinstance(skipped, Mapping) and skipped:
        counts = ", ".join(f"{_display(name)} {len(rows)}" for name, rows in skipped.items())
        items.append(("Skipped rows", f"{counts} (bad rows, listed in summary.json)"))
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
        points = [
            ScorePriorPoint(
                run.name, _display(name), _interval(sides["prior"], metric), _interval(sides["score"], metric)
            )
            for run in runs
            for name, sides in run.vilp.items()
            if sides.get("score") and sides.get("prior")
        ]
        panels.append((_metric_label(metric), points))
    return panels if any(points for _, points in panels) else []


# --- Reports ------------------------------------------------------------------------------------


def _response_links(folder: Path) -> list[tuple[str, str]]:
    return [(path.name, f"responses/{path.name}") for path in sorted((folder / "responses").glob("*.jsonl"))]


def write_report(
    run_dir: str | Path, summary: dict | None = None, *, title: str | None = None
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

    blocks: list[Block] = [
        ("meta", _meta(run)),
        ("h2", "Results"),
        ("table", _results_table(run)),
        ("p", f"Percent correct; [{ci}] percentile bootstrap over items. The mean weighs every benchmark equally."),
    ]
    if run.vilp:
        blocks += [("h2", "ViLP: image against text prior"), ("table", _vilp_table(run)), ("ul", _vilp_sentences(run))]
    labels = [_display(name) for name in run.benchmarks] + ["Mean"]
    per_label = [*run.benchmarks.values(), run.mean]
    series = [
        BarSeries(_metric_label(metric), [_interval(block, metric) for block in per_label]) for metric in run.metrics
    ]
    plots = [
        grouped_bar_chart(
            folder / "benchmarks.png", labels, [("", series)], title=f"{run.name}: {metrics} per benchmark (bars: {ci})"
        )
    ]
    blocks += [
        ("h2", "Plots"),
        (
            "figure",
            (
                "benchmarks.png",
                f"Bar chart of {metrics} per benchmark for {run.name}, with {ci} error bars",
                f"{metrics} per benchmark; the last group is the mean over benchmarks.",
            ),
        ),
    ]
    if panels := _score_prior_panels([run]):
        plots.append(
            score_prior_chart(folder / "vilp.png", panels, title=f"{run.name}: ViLP Score against Prior ({ci})")
        )
        blocks.append(
            (
                "figure",
                (
                    "vilp.png",
                    f"Scatter plot of ViLP Score against Prior for {run.name}",
                    "ViLP Score (prior-conflicting images) against Prior (agreeing images); "
                    "a point on the dashed line answers as well against the prior as with it.",
                ),
            )
        )
    if breakdown := _breakdown_table(run):
        blocks += [("h2", "By category and split"), ("table", breakdown)]
    if links := _response_links(folder):
        blocks += [("h2", "Responses"), ("links", links)]

    md_path, html_path = write_documents(folder, "report", title or f"Evaluation report: {run.name}", blocks)
    return {"html": html_path, "md": md_path, "plots": plots}


# --- Screenshots --------------------------------------------------------------------------------
