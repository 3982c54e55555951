"""The demo's report: results over seeds, grounding, training curves, example rollouts, a verdict.

Every number comes from the run's own files: the evaluation summaries and
responses under ``eval/`` and the training logs under ``train/``.
"""

from __future__ import annotations

import html
import json
import statistics
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vigos.data.synthetic import mentions_attribute, read_split
from vigos.eval.run_folder import read_responses

MODELS = ("warm_start", "opsd", "vigos")
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
    "diag_reliance_perception",
    "diag_reliance_reasoning",
    "diag_reliance_privileged",
)


def _description(text: str) -> str | None:
    start, end = text.find("<description>"), text.find("</description>")
    return text[start + len("<description>") : end] if 0 <= start < end else None


def priors(world: Path) -> dict[str, str]:
    """The text prior's answer of each evaluation item, keyed like the benchmark's item ids."""
    return {
        f"{split}/{e.id}": e.prior_answer
        for split in ("eval_agree", "eval_conflict")
        for e in read_split(world / split / "data.jsonl")
    }


def grounding(responses: dict[str, dict[str, Any]], prior_of: dict[str, str]) -> dict[str, float]:
    """On conflict images: share of sampled descriptions stating the true attribute, and the prior one."""
    true = prior = total = 0
    for item_id, record in responses.items():
        if not record.get("conflict"):
            continue
        prior_answer = prior_of.get(item_id)
        for sample in record["samples"]:
            description = _description(sample["text"])
            if description is None:
                continue
            total += 1
            true += mentions_attribute(description, record["answer"])
            prior += bool(prior_answer) and mentions_attribute(description, prior_answer)
    return {
        "states_true": true / total if total else 0.0,
        "states_prior": prior / total if total else 0.0,
        "descriptions": total,
    }


def _spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def collect(out: Path, summaries: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Per model: Score and Prior (Avg@k and Pass@k) per seed with their bootstrap intervals, and grounding."""
    results: dict[str, Any] = {}
    prior_of = priors(out / "world")
    for model, by_seed in summaries.items():
        per_seed = []
        for seed, summary in sorted(by_seed.items()):
            k = summary["k"]
            vilp = next(iter(summary["vilp"].values()))
            responses = read_responses(out / "eval" / f"{model}-s{seed}" / "responses" / "synthetic-vilp.jsonl")
            per_seed.append(
                {
                    "seed": seed,
                    **{
                        f"{side}_{metric}": vilp[side][f"{metric}@{k}"]
                        for side in ("score", "prior")
                        for metric in ("avg", "pass")
                    },
                    **grounding(responses, prior_of),
                }
            )
        row: dict[str, Any] = {"per_seed": per_seed}
        for key in ("score_avg", "prior_avg", "score_pass", "prior_pass"):
            row[key] = _spread([s[key]["mean"] for s in per_seed])
        for key in ("states_true", "states_prior"):
            row[key] = _spread([s[key] for s in per_seed])
        results[model] = row
    return results


def verdict(results: dict[str, Any], k: int) -> str:
    """Plain words on which method won on Score and on Prior, with the spread, whichever way it came out."""
    lines = []
    for key, name in (
        ("score_avg", "Score (prior-conflicting images)"),
        ("prior_avg", "Prior (prior-agreeing images)"),
    ):
        (v, v_sd), (o, o_sd) = results["vigos"][key], results["opsd"][key]
        gap = v - o
        margin = max(v_sd, o_sd)
        if abs(gap) <= margin or abs(gap) < 1e-9:
            outcome = "neither method won clearly (the gap is within the seed spread)"
        else:
            outcome = f"{'ViGOS' if gap > 0 else 'OPSD'} won"
        lines.append(
            f"{name}, Avg@{k}: ViGOS {100 * v:.1f} ± {100 * v_sd:.1f} vs OPSD {100 * o:.1f} ± {100 * o_sd:.1f} "
            f"(mean ± sd over seeds): {outcome}."
        )
    return "\n".join(lines)


def table(results: dict[str, Any], k: int) -> str:
    """The results as a Markdown table (mean ± sd over seeds, percent)."""
    head = (
        f"| model | Score Avg@{k} | Prior Avg@{k} | Score Pass@{k} | Prior Pass@{k} | "
        "descriptions stating the true colour | stating the prior |"
    )
    rows = [head, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for model in MODELS:
        r = results[model]
        cells = [
            f"{100 * r[key][0]:.1f} ± {100 * r[key][1]:.1f}"
            for key in ("score_avg", "prior_avg", "score_pass", "prior_pass", "states_true", "states_prior")
        ]
        rows.append(f"| {LABELS[model]} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


ROLES = {
    "perception": "perception teacher: the image only, its description",
    "reasoning": "reasoning teacher: image, question and answer, its boxed answer",
    "reference": "reference teacher: image, question, answer and format, its boxed answer",
    "student": "student: image and question, its boxed answer",
}


def abilities_table(abilities: dict[str, dict[str, float]]) -> str:
    """What the warm start says in each role on prior-conflicting images (``check_abilities``), as Markdown."""
    rows = ["| role: context, judged by | states the true colour | states the prior |", "| --- | ---: | ---: |"]
    rows += [
        f"| {ROLES[role]} | {100 * v['states_true']:.0f}% | {100 * v['states_prior']:.0f}% |"
        for role, v in abilities.items()
    ]
    return "\n".join(rows)


def _plot_scores(results: dict[str, Any], k: int, path: Path) -> None:
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    width = 0.38
    for offset, (key, name) in zip(
        (-width / 2, width / 2), (("prior_avg", "Prior (agreeing)"), ("score_avg", "Score (conflicting)"))
    ):
        means = [100 * results[m][key][0] for m in MODELS]
        sds = [100 * results[m][key][1] for m in MODELS]
        axes.bar([i + offset for i in range(len(MODELS))], means, width, yerr=sds, capsize=4, label=name)
    axes.set_xticks(range(len(MODELS)), [LABELS[m] for m in MODELS])
    axes.set_ylabel(f"Avg@{k} (%)")
    axes.set_ylim(0, 105)
    axes.set_title("Prior-agreeing vs prior-conflicting images (mean ± sd over seeds)")
    axes.legend()
    FigureCanvasAgg(figure).print_png(str(path))


def _plot_curves(out: Path, path: Path) -> list[str]:
    logs: dict[str, list[list[dict[str, Any]]]] = {}
    for metrics in sorted((out / "train").glob("*/metrics.jsonl")):
        method = metrics.parent.name.split("-s")[0]
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        logs.setdefault(method, []).append(
            [r for r in records if "valid_rate" in r or any(k.startswith("diag_") for k in r)]
        )
    names = [c for c in CURVES if any(c in r for runs in logs.values() for run in runs for r in run)]
    figure = Figure(figsize=(12, 2.6 * ((len(names) + 3) // 4)))
    for index, name in enumerate(names):
        axes = figure.add_subplot((len(names) + 3) // 4, 4, index + 1)
        for method, runs in logs.items():
            for run_index, run in enumerate(runs):
                points = [(r["step"], r[name]) for r in run if name in r]
                if points:
                    axes.plot(
                        *zip(*points),
                        color="C0" if method == "opsd" else "C1",
                        alpha=0.8,
                        label=LABELS.get(method, method) if run_index == 0 else None,
                    )
        axes.set_title(name, fontsize=9)
        axes.tick_params(labelsize=7)
        if index == 0:
            axes.legend(fontsize=7)
    figure.tight_layout()
    FigureCanvasAgg(figure).print_png(str(path))
    return names


def _examples(out: Path, seed: int, count: int = 3) -> list[dict[str, Any]]:
    """The first few conflict items with each model's first sample."""
    per_model = {
        m: read_responses(out / "eval" / f"{m}-s{seed}" / "responses" / "synthetic-vilp.jsonl") for m in MODELS
    }
    ids = [i for i, r in per_model["warm_start"].items() if r.get("conflict")][:count]
    return [
        {
            "id": i,
            "question": per_model["warm_start"][i]["question"],
            "answer": per_model["warm_start"][i]["answer"],
            **{m: per_model[m][i]["samples"][0]["text"] for m in MODELS if i in per_model[m]},
        }
        for i in ids
    ]


def write_demo_report(
    out: Path, cfg: Any, summaries: dict[str, dict[int, dict[str, Any]]], *, elapsed_s: float
) -> dict[str, Any]:
    """Write ``report.md``, ``report.html``, ``report.json`` and the PNGs into ``out``; returns what it wrote."""
    k = next(iter(summaries["vigos"].values()))["k"]
    results = collect(out, summaries)
    text_table, text_verdict = table(results, k), verdict(results, k)
    _plot_scores(results, k, out / "scores.png")
    curves = _plot_curves(out, out / "curves.png")
    examples = _examples(out, min(cfg.seeds))
    abilities_path = out / "warm_start" / "abilities.json"
    abilities = json.loads(abilities_path.read_text()) if abilities_path.exists() else {}
    data = {
        "config": cfg.__dict__ if hasattr(cfg, "__dict__") else cfg,
        "k": k,
        "results": results,
        "verdict": text_verdict,
        "elapsed_s": elapsed_s,
        "examples": examples,
        "curves": curves,
        "warm_start_abilities": abilities,
    }
    (out / "report.json").write_text(json.dumps(data, indent=1, default=str))
    intro = (
        f"Tiny {cfg.arch} ({cfg.size}), {len(cfg.seeds)} seed(s), {cfg.n_train} training rows "
        f"({100 * cfg.train_conflict_fraction:.0f}% prior-conflicting), {cfg.n_eval}+{cfg.n_eval} evaluation rows, "
        f"{cfg.train_steps} training steps per run, k={k}; {elapsed_s / 60:.1f} minutes in all."
    )
    abilities_intro = (
        f"Before training, on {cfg.n_eval} fresh prior-conflicting images (greedy decoding), "
        "the warm start in each role says:"
    )
    md = [
        "# ViGOS demo: does the student look at the image?",
        "",
        intro,
        "",
        text_table,
        "",
        text_verdict,
        "",
        "![Score and Prior](scores.png)",
        "",
    ]
    if abilities:
        md += ["## The warm start's roles", "", abilities_intro, "", abilities_table(abilities), ""]
    md += [
        "## Training curves",
        "",
        "![curves](curves.png)",
        "",
        f"## Example rollouts on prior-conflicting images (seed {min(cfg.seeds)})",
        "",
    ]
    for example in examples:
        md += [f"**{example['question']}** (true answer: {example['answer']})", ""]
        md += [f"- {LABELS[m]}: `{example.get(m, '').strip()[:240]}`" for m in MODELS]
        md.append("")
    (out / "report.md").write_text("\n".join(md))
    page = [
        "<!doctype html><html><head><meta charset='utf-8'><title>ViGOS demo</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}code{white-space:pre-wrap}</style></head><body>",
        "<h1>ViGOS demo: does the student look at the image?</h1>",
        f"<p>{html.escape(intro)}</p>",
        _html_table(text_table),
        "".join(f"<p><b>{html.escape(line)}</b></p>" for line in text_verdict.splitlines()),
        "<img src='scores.png' alt='Score and Prior per model'>",
    ]
    if abilities:
        page += [
            "<h2>The warm start's roles</h2>",
            f"<p>{html.escape(abilities_intro)}</p>",
            _html_table(abilities_table(abilities)),
        ]
    page += [
        "<h2>Training curves</h2>",
        "<img src='curves.png' alt='training curves' style='max-width:100%'>",
        f"<h2>Example rollouts on prior-conflicting images (seed {min(cfg.seeds)})</h2>",
    ]
    for example in examples:
        page.append(
            f"<p><b>{html.escape(example['question'])}</b> (true answer: {html.escape(example['answer'])})</p><ul>"
        )
        page += [f"<li>{LABELS[m]}: <code>{html.escape(example.get(m, '').strip()[:240])}</code></li>" for m in MODELS]
        page.append("</ul>")
    page.append("</body></html>")
    (out / "report.html").write_text("\n".join(page))
    return {
        "table": text_table,
        "verdict": text_verdict,
        "html": out / "report.html",
        "md": out / "report.md",
        "json": out / "report.json",
        "results": results,
    }


def _html_table(markdown: str) -> str:
    lines = [line.strip("|").split("|") for line in markdown.splitlines()]
    head, body = lines[0], lines[2:]
    cells = "".join(f"<th>{html.escape(c.strip())}</th>" for c in head)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><tr>{cells}</tr>{rows}</table>"
