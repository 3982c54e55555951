"""Several evaluation runs side by side: one table and one Score/Prior chart."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vigos.eval.documents import Block, Table, write_documents
from vigos.eval.protocols import DEFAULT_PROTOCOL, mixed_protocols
from vigos.eval.report import (
    VILP_SIDES,
    _ci_label,
    _display,
    _interval,
    _load_run,
    _metric_label,
    _percent,
    _Run,
    _score_prior_panels,
)
from vigos.eval.report_plots import MISSING, BarSeries, grouped_bar_chart, score_prior_chart


def _run_names(runs: Sequence[_Run], names: Sequence[str] | None) -> list[str]:
    if names is not None:
        names = [str(name) for name in names]
        if len(names) != len(runs):
            raise ValueError(f"got {len(names)} names for {len(runs)} run folders; give one name per run")
    else:
        names = [run.name for run in runs]
        # Two runs with the same run_name are told apart by their folders.
        names = [
            f"{name} ({run.folder.name})" if names.count(name) > 1 and run.folder else name
            for name, run in zip(names, runs, strict=True)
        ]
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
    return Table(
        ["Benchmark", "Metric", *(run.name for run in runs)],
        rows,
        label_columns=2,
        bold=bold,
        section_starts=section_starts,
    )


def _compare_vilp_sentences(runs: Sequence[_Run], vilp_names: Sequence[str]) -> list[str]:
    avg_name = runs[0].metrics[1]
    sentences = []
    for name in vilp_names:
        for side, label, meaning in VILP_SIDES:
            blocks = [(run.vilp.get(name) or {}).get(side) for run in runs]
            figures = ", ".join(
                f"{run.name} {_percent(block[avg_name]) if block else MISSING}"
                for run, block in zip(runs, blocks, strict=True)
            )
            sentences.append(f"{_display(name)} {label} ({meaning}), {_metric_label(avg_name)}: {figures}.")
    return sentences


def compare_runs(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    names: Sequence[str] | None = None,
    title: str = "Comparison",
) -> dict[str, Path | list[Path]]:
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

    runs_table = Table(
        ["Run", "Model", "Protocol", "k", "Created", "Folder"],
        [
            [
                run.name,
                str(run.summary.get("model", MISSING)),
                str(run.summary.get("protocol") or DEFAULT_PROTOCOL),
                str(run.k),
                str(run.summary.get("created", MISSING)),
                str(run.folder),
            ]
            for run in runs
        ],
        label_columns=6,
    )
    blocks: list[Block] = [
        ("h2", "Runs"),
        ("table", runs_table),
        ("h2", "Results"),
        ("table", _compare_table(runs, benchmarks, vilp_names)),
        (
            "p",
            f"Percent correct with [{ci}]; bold: the best run of each row. {MISSING}: the run has no such benchmark.",
        ),
    ]
    lacking = [
        f"{run.name} lacks {', '.join(_display(b) for b in benchmarks if b not in run.benchmarks)}"
        for run in runs
        if set(run.benchmarks) != set(benchmarks)
    ]
    if warning := mixed_protocols([run.summary for run in runs], [run.name for run in runs]):
        blocks.append(("p", warning))
    if lacking:
        blocks.append(
            (
                "p",
                f"The runs cover different benchmarks ({'; '.join(lacking)}), so each mean is over "
                "that run's own benchmarks.",
            )
        )
    if vilp_names:
        blocks += [("h2", "ViLP"), ("ul", _compare_vilp_sentences(runs, vilp_names))]

    labels = [_display(name) for name in benchmarks] + ["Mean"]
    panels = [
        (
            f"{_metric_label(metric)} (bars: {ci})",
            [
                BarSeries(
                    run.name,
                    [_interval(run.benchmarks.get(name), metric) for name in benchmarks]
                    + [_interval(run.mean, metric)],
                )
                for run in runs
            ],
        )
        for metric in runs[0].metrics
    ]
    plots = [grouped_bar_chart(out / "compare.png", labels, panels, title=title)]
    blocks += [
        ("h2", "Plots"),
        (
            "figure",
            (
                "compare.png",
                f"Grouped bar chart comparing runs {', '.join(run.name for run in runs)} per benchmark",
                "Each group is a benchmark (the last: the mean); one bar per run, with interval error bars.",
            ),
        ),
    ]
    if vilp_panels := _score_prior_panels(runs):
        plots.append(
            score_prior_chart(out / "compare_vilp.png", vilp_panels, title=f"{title}: ViLP Score against Prior ({ci})")
        )
        blocks.append(
            (
                "figure",
                (
                    "compare_vilp.png",
                    "Scatter plot of ViLP Score against Prior, one point per run and benchmark",
                    "Colour: run; marker: ViLP benchmark. Higher is better on "
                    "both axes; below the dashed line the text prior wins over the image.",
                ),
            )
        )
    reports = [
        (f"{run.name}: report", os.path.relpath(run.folder / "report.html", out))
        for run in runs
        if run.folder and (run.folder / "report.html").is_file()
    ]
    if reports:
        blocks += [("h2", "Run reports"), ("links", reports)]

    md_path, html_path = write_documents(out, "compare", title, blocks)
    return {"html": html_path, "md": md_path, "plots": plots}
