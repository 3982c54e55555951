"""The demo's report: results over seeds per world setting, paired differences and their verdict, what the
warm start's roles state, training curves, example rollouts.

Every number comes from the run's own files (:mod:`vigos.demo.results`) and the training logs under ``train/``.
"""

from __future__ import annotations

import html
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vigos.demo.results import PROBE_CURVES, RESPONSES, collect, paired
from vigos.demo.study import PairedDifference
from vigos.demo.warmstart import TAUGHT_PERCEPTION
from vigos.eval.run_folder import read_responses

LABELS = {"warm_start": "warm start", "opsd": "OPSD", "vigos": "ViGOS"}
CURVES = (
    "loss",
    "loss_perception",
    "loss_reasoning",
    "loss_reference",
    "loss_privileged",
    "valid_rate",
    "fallback_rate",
    "answer_accuracy",
    "diag_grounding_states_true",
    "diag_grounding_states_prior",
    "diag_ungrounded",
    "diag_ungrounded_obscured",
    "diag_reliance_perception",
    "diag_reliance_reasoning",
    "diag_reliance_privileged",
    *PROBE_CURVES,
)


# Curves that are shares of rollouts: drawn on the whole range [0, 1].
_SHARES = {
    *PROBE_CURVES,
    "answer_accuracy",
    "diag_grounding_states_true",
    "diag_grounding_states_prior",
    "diag_ungrounded",
    "diag_ungrounded_obscured",
}

# Series with at most this many points get markers (a single point drawn as a line would be invisible).
_SPARSE_POINTS = 12


def machine() -> dict[str, Any]:
    """Where the numbers come from: floating-point results move with the CPU, the thread count and torch."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}


def table(results: dict[str, Any], labels: dict[str, str], k: int) -> str:
    """The results of the models ``labels`` names, as a Markdown table (mean ± sd over seeds, percent)."""
    columns = [
        ("score_avg", f"Score Avg@{k}"),
        ("prior_avg", f"Prior Avg@{k}"),
        ("score_pass", f"Score Pass@{k}"),
        ("prior_pass", f"Prior Pass@{k}"),
        ("states_true", "descriptions stating the true colour"),
        ("states_prior", "stating the prior"),
        ("ungrounded_conflict", "ungrounded (conflicting)"),
        ("ungrounded_obscured", "ungrounded (obscured)"),
    ]
    columns = [(key, name) for key, name in columns if all(key in results[label] for label in labels)]
    rows = ["| model | " + " | ".join(name for _, name in columns) + " |"]
    rows.append("| --- |" + " ---: |" * len(columns))
    for label, name in labels.items():
        r = results[label]
        cells = [f"{100 * r[key][0]:.1f} ± {100 * r[key][1]:.1f}" for key, _ in columns]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def verdict(paired: dict[str, dict[str, PairedDifference]], settings: dict[str, str]) -> str:
    """One line per world setting and measure: the paired difference ViGOS - OPSD, its interval, the verdict."""
    lines = []
    for setting, title in settings.items():
        for key, name in (("score", "Score (prior-conflicting images)"), ("prior", "Prior (prior-agreeing images)")):
            lines.append(f"{title}, {paired[setting][key].describe(name)}.")
    return "\n".join(lines)


ROLES = {
    "perception": "perception teacher: the image only",
    TAUGHT_PERCEPTION: "perception teacher, on images it was taught on",
    "reasoning": "reasoning teacher: image, question and answer",
    "reference": "reference teacher: image, question, answer and format",
    "student": "student: image and question",
}
_ABILITY_COLUMNS = (
    ("describes_kind", "kind"),
    ("describes_colour", "colour"),
    ("describes_size", "size"),
    ("describes_position", "position"),
    ("describes_text", "printed text"),
    ("describes_count", "count"),
    ("describes_all", "all of them"),
    ("states_true", "answer: true"),
    ("states_prior", "answer: prior"),
)


def perception_misses(abilities: dict[str, dict[str, float]], goal: float = 0.9) -> str:
    """Whether the perception teacher states each attribute on at least ``goal`` of the fresh images, which
    it misses, and (when it was also checked on images it was taught on) why: an attribute missed there
    too was never learned; one stated there was learned on those images but not carried to fresh ones."""
    fresh, taught = abilities.get("perception", {}), abilities.get(TAUGHT_PERCEPTION, {})
    shares = {
        name: fresh[key]
        for key, name in _ABILITY_COLUMNS
        if key.startswith("describes_") and key != "describes_all" and key in fresh
    }
    if not shares:
        return "The perception teacher was not checked."
    missed = {name: share for name, share in shares.items() if share < goal}
    if not missed:
        return f"The perception teacher states every attribute on at least {100 * goal:.0f}% of the images."
    sentence = f"The perception teacher states these attributes on fewer than {100 * goal:.0f}% of the images: " + (
        ", ".join(f"{name} ({100 * share:.0f}%)" for name, share in missed.items()) + "."
    )
    keys = {name: key for key, name in _ABILITY_COLUMNS}
    judged = {name: taught[keys[name]] for name in missed if keys[name] in taught}
    unlearned = [f"{name} ({100 * share:.0f}%)" for name, share in judged.items() if share < goal]
    memorised = [f"{name} ({100 * share:.0f}%)" for name, share in judged.items() if share >= goal]
    if unlearned:
        sentence += (
            " On images it was taught on it misses them too, so the warm start did not teach them: "
            + ", ".join(unlearned)
            + "."
        )
    if memorised:
        sentence += (
            " On images it was taught on it states them, so it learned those images without carrying the "
            "attribute to fresh ones: " + ", ".join(memorised) + "."
        )
    return sentence


def abilities_table(abilities: dict[str, dict[str, float]]) -> str:
    """What the warm start states in each role on prior-conflicting images (``check_abilities``), as Markdown:
    the share of descriptions stating each attribute of the image, and of boxed answers stating the true
    answer and the prior one ("-": the role does not write that part)."""
    columns = [(key, name) for key, name in _ABILITY_COLUMNS if any(key in v for v in abilities.values())]
    rows = ["| role: context | " + " | ".join(name for _, name in columns) + " |"]
    rows.append("| --- |" + " ---: |" * len(columns))
    for role, shares in abilities.items():
        cells = [f"{100 * shares[key]:.0f}%" if key in shares else "-" for key, _ in columns]
        rows.append(f"| {ROLES[role]} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _plot_scores(results: dict[str, Any], labels: dict[str, str], k: int, path: Path) -> None:
    figure = Figure(figsize=(max(7, 1.6 * len(labels)), 4))
    axes = figure.add_subplot()
    width = 0.38
    for offset, (key, name) in zip(
        (-width / 2, width / 2), (("prior_avg", "Prior (agreeing)"), ("score_avg", "Score (conflicting)"))
    ):
        means = [100 * results[label][key][0] for label in labels]
        sds = [100 * results[label][key][1] for label in labels]
        axes.bar([i + offset for i in range(len(labels))], means, width, yerr=sds, capsize=4, label=name)
    axes.set_xticks(range(len(labels)), [name.replace(" (", "\n(") for name in labels.values()], fontsize=8)
    axes.set_ylabel(f"Avg@{k} (%)")
    axes.set_ylim(0, 105)
    axes.set_title("Prior-agreeing vs prior-conflicting images (mean ± sd over seeds)")
    axes.legend()
    figure.tight_layout()
    FigureCanvasAgg(figure).print_png(str(path))


def curves_figure(out: Path, labels: dict[str, str]) -> tuple[Figure, list[str]]:
    """One panel per curve that any run of ``labels`` (label: legend name) logged in
    ``out/train/<label>-s<seed>/metrics.jsonl``, and the curves' names. A sparse series (the diagnostics,
    run a few times per run) is drawn with markers; shares of rollouts on the whole range [0, 1]."""
    logs: dict[str, list[list[dict[str, Any]]]] = {}
    for label in labels:
        for metrics in sorted((out / "train").glob(f"{label}-s*/metrics.jsonl")):
            records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            logs.setdefault(label, []).append(
                [r for r in records if "valid_rate" in r or any(k.startswith(("diag_", "eval_")) for k in r)]
            )
    names = [c for c in CURVES if any(c in r for runs in logs.values() for run in runs for r in run)]
    rows = max((len(names) + 3) // 4, 1)
    figure = Figure(figsize=(12, 2.6 * rows))
    for index, name in enumerate(names):
        axes = figure.add_subplot(rows, 4, index + 1)
        for colour, (label, runs) in enumerate(logs.items()):
            for run_index, run in enumerate(runs):
                points = [(r["step"], r[name]) for r in run if name in r]
                if points:
                    # A series of a few points (the diagnostics run every few steps) is drawn as markers.
                    axes.plot(
                        *zip(*points),
                        color=f"C{colour}",
                        alpha=0.8,
                        marker="o" if len(points) <= _SPARSE_POINTS else None,
                        markersize=4,
                        linestyle="-" if len(points) > 1 else "none",
                        label=labels[label] if run_index == 0 else None,
                    )
        if name in _SHARES or name.endswith("_rate"):
            axes.set_ylim(-0.05, 1.05)  # shares: the whole range, so runs and panels compare at a glance
        axes.set_xlabel("step", fontsize=7)
        axes.set_title(name, fontsize=9)
        axes.tick_params(labelsize=7)
        if index == 0:
            axes.legend(fontsize=7)
    figure.tight_layout()
    return figure, names


def _plot_curves(out: Path, labels: dict[str, str], path: Path) -> list[str]:
    figure, names = curves_figure(out, labels)
    FigureCanvasAgg(figure).print_png(str(path))
    return names


def _examples(out: Path, labels: dict[str, str], seed: int, count: int = 3) -> list[dict[str, Any]]:
    """The first few conflict items, then obscured ones, with each model's first sample."""
    per_model = {label: read_responses(out / "eval" / f"{label}-s{seed}" / "responses" / RESPONSES) for label in labels}
    first = per_model[next(iter(labels))]
    conflict = [i for i, r in first.items() if r.get("conflict")][:count]
    obscured = [i for i in first if i.startswith("eval_obscured/")][:count]
    return [
        {
            "id": i,
            "question": first[i]["question"],
            "answer": first[i]["answer"],
            **{label: per_model[label][i]["samples"][0]["text"] for label in labels if i in per_model[label]},
        }
        for i in conflict + obscured
    ]


def write_demo_report(
    out: Path,
    cfg: Any,
    summaries: dict[str, dict[int, dict[str, Any]]],
    *,
    settings: dict[str, dict[str, str]],
    premises: list[str],
    elapsed_s: float,
) -> dict[str, Any]:
    """Write ``report.md``, ``report.html``, ``report.json`` and the PNGs into ``out``; returns what it wrote.

    ``summaries``: evaluation summaries by run label and seed; ``settings``: per world setting (the
    headline first), its title and the labels of its OPSD and ViGOS runs; ``premises``: the world's
    settings in words, stated in the report.
    """
    k = next(iter(summaries["warm_start"].values()))["k"]
    results = collect(out, out / "world" / next(iter(settings)), summaries)
    seeds = sorted(summaries["warm_start"])
    differences = {setting: paired(out, names["vigos"], names["opsd"], seeds, k) for setting, names in settings.items()}
    headline = next(iter(settings.values()))
    labels = {"warm_start": LABELS["warm_start"], headline["opsd"]: "OPSD", headline["vigos"]: "ViGOS"}
    # The picture shows every setting's runs: with more than one, each label names its world.
    every = dict(labels)
    if len(settings) > 1:
        for names in settings.values():
            every |= {names[m]: f"{LABELS[m]} ({names['title'].lower()})" for m in ("opsd", "vigos")}
    tables = {
        setting: table(results, {"warm_start": LABELS["warm_start"], names["opsd"]: "OPSD", names["vigos"]: "ViGOS"}, k)
        for setting, names in settings.items()
    }
    text_verdict = verdict(differences, {setting: names["title"] for setting, names in settings.items()})
    _plot_scores(results, every, k, out / "scores.png")
    curves = _plot_curves(out, {headline["opsd"]: "OPSD", headline["vigos"]: "ViGOS"}, out / "curves.png")
    examples = _examples(out, labels, seeds[0])
    abilities_path = out / "warm_start" / "abilities.json"
    abilities = json.loads(abilities_path.read_text()) if abilities_path.exists() else {}
    data = {
        "config": cfg.__dict__ if hasattr(cfg, "__dict__") else cfg,
        "machine": machine(),
        "k": k,
        "results": results,
        "paired": {setting: {key: asdict(d) for key, d in diff.items()} for setting, diff in differences.items()},
        "settings": settings,
        "premises": premises,
        "verdict": text_verdict,
        "elapsed_s": elapsed_s,
        "examples": examples,
        "curves": curves,
        "warm_start_abilities": abilities,
    }
    (out / "report.json").write_text(json.dumps(data, indent=1, default=str))
    intro = (
        f"Tiny {cfg.arch} ({cfg.size}), {len(seeds)} seed(s) per method (the same seeds and data order for both), "
        f"{cfg.n_train} training rows, {cfg.n_eval}+{cfg.n_eval} evaluation rows (and {cfg.n_obscured_eval} "
        f"obscured ones), {cfg.train_steps} training steps per run, k={k}; {elapsed_s / 60:.1f} minutes in all "
        f"on {data['machine']['cpu']} (training and evaluation in {cfg.workers} process(es) of {cfg.threads} "
        f"torch thread(s), the warm start with {data['machine']['torch_threads']}; torch "
        f"{data['machine']['torch']})."
    )
    abilities_intro = (
        f"Before training, on {cfg.n_eval} fresh prior-conflicting images (greedy decoding), the warm start in "
        "each role states these attributes in its description and these answers"
        + (
            f' (the perception row "on images it was taught on": {cfg.n_eval} images of its own warm-start '
            "data, which tells an attribute never learned from one learned but not carried to fresh images):"
            if TAUGHT_PERCEPTION in abilities
            else ":"
        )
    )
    md = ["# ViGOS demo: does the student look at the image?", "", intro, "", "## The world", ""]
    md += [f"- {line}" for line in premises] + [""]
    for setting, names in settings.items():
        md += [f"## {names['title']}", "", tables[setting], ""]
    md += [
        "## Verdict: ViGOS - OPSD, paired over seeds and items",
        "",
        text_verdict,
        "",
        "![Score and Prior](scores.png)",
        "",
    ]
    if abilities:
        md += [
            "## The warm start's roles",
            "",
            abilities_intro,
            "",
            abilities_table(abilities),
            "",
            perception_misses(abilities),
            "",
        ]
    md += [
        "## Training curves",
        "",
        "![curves](curves.png)",
        "",
        f"## Example rollouts on prior-conflicting and obscured images (seed {seeds[0]})",
        "",
    ]
    for example in examples:
        md += [f"**{example['question']}** (reference answer: {example['answer']}; `{example['id']}`)", ""]
        md += [f"- {name}: `{example.get(label, '').strip()[:240]}`" for label, name in labels.items()]
        md.append("")
    (out / "report.md").write_text("\n".join(md))
    page = [
        "<!doctype html><html><head><meta charset='utf-8'><title>ViGOS demo</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}code{white-space:pre-wrap}</style></head><body>",
        "<h1>ViGOS demo: does the student look at the image?</h1>",
        f"<p>{html.escape(intro)}</p>",
        "<h2>The world</h2><ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in premises) + "</ul>",
    ]
    for setting, names in settings.items():
        page += [f"<h2>{html.escape(names['title'])}</h2>", _html_table(tables[setting])]
    page += [
        "<h2>Verdict: ViGOS - OPSD, paired over seeds and items</h2>",
        "".join(f"<p><b>{html.escape(line)}</b></p>" for line in text_verdict.splitlines()),
        "<img src='scores.png' alt='Score and Prior per model'>",
    ]
    if abilities:
        page += [
            "<h2>The warm start's roles</h2>",
            f"<p>{html.escape(abilities_intro)}</p>",
            _html_table(abilities_table(abilities)),
            f"<p>{html.escape(perception_misses(abilities))}</p>",
        ]
    page += [
        "<h2>Training curves</h2>",
        "<img src='curves.png' alt='training curves' style='max-width:100%'>",
        f"<h2>Example rollouts on prior-conflicting and obscured images (seed {seeds[0]})</h2>",
    ]
    for example in examples:
        page.append(
            f"<p><b>{html.escape(example['question'])}</b> (reference answer: {html.escape(example['answer'])})</p><ul>"
        )
        page += [
            f"<li>{name}: <code>{html.escape(example.get(label, '').strip()[:240])}</code></li>"
            for label, name in labels.items()
        ]
        page.append("</ul>")
    page.append("</body></html>")
    (out / "report.html").write_text("\n".join(page))
    return {
        "table": tables[next(iter(settings))],
        "tables": tables,
        "verdict": text_verdict,
        "html": out / "report.html",
        "md": out / "report.md",
        "json": out / "report.json",
        "results": results,
        "paired": differences,
    }


def _html_table(markdown: str) -> str:
    lines = [line.strip("|").split("|") for line in markdown.splitlines()]
    head, body = lines[0], lines[2:]
    cells = "".join(f"<th>{html.escape(c.strip())}</th>" for c in head)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><tr>{cells}</tr>{rows}</table>"
