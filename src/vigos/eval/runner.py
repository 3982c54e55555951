"""The evaluation runner behind ``vigos eval``: sample, grade, record, summarize.

For every item of every benchmark the student model sees the image, the
question and the student prompt (no teacher, no reference answer) and writes
``n_samples`` completions. Each completion's final answer is extracted and
graded as the run's protocol grades (``official`` or ``paper``,
:mod:`vigos.eval.protocol_grading`): by the benchmark's own rules, or by an LLM judge
where the protocol asks for one (a protocol that needs a judge refuses to
start without one). Everything lands in one run folder::

    out_dir/
      run.json                 the settings the samples were drawn with
      responses/<bench>.jsonl  one line per finished item: prompt, samples, answers, verdicts
      summary.json             config, versions, seeds, Pass@k / Avg@k with intervals, ViLP Score/Prior
      report.html, report.md   written by vigos.eval.report when it is installed
      judge_cache.sqlite       the judge's replies (only with a judge)

Resuming: results are appended and flushed after every batch. A re-run of
the same command reads the responses files, skips the items already there
and samples only the rest; a line cut short by a kill is dropped and its
item redone. A re-run with different sampling settings into the same folder
is refused rather than mixing samples from two settings. A batch is written
after its judge verdicts, so a judge failure loses that batch's samples
(they are drawn again on the re-run, with the verdicts already received
taken from the judge's cache). One process at a time may use a run folder.
Ctrl-C stops ``vigos eval`` with one line naming the folder and the command
that resumes it (exit code 130). ``summary.json`` records the judge and
server URLs without credentials.

Determinism: items are cut into fixed batches of ``batch_size`` in benchmark
order, and every item has a seed derived from ``(seed, benchmark, id)``.
With Hugging Face ``generate`` the torch RNG is seeded once per batch from
its items' seeds, so a resumed run draws exactly what an uninterrupted one
would, given the same ``batch_size``, hardware and library versions, except
for a batch that was only partly written when the run was killed: its
missing items are sampled as a smaller batch, with different (equally
valid) samples. vLLM seeds each item separately, so there the samples of an
item do not depend on its batch; GPU kernels may still differ across runs
in the last bits, which can change a sampled token.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.metadata
import importlib.util
import logging
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from vigos.data.rows import Example
from vigos.eval.benchmarks import get_benchmark
from vigos.eval.engines import (
    Engine,
    HFEngine,
    ModelSource,
    ServerEngine,
    VLLMEngine,
    item_seed,
    load_hf_model,
    model_source,
    resolve_engine,
)
from vigos.eval.items import BadRow, Benchmark, EvalItem
from vigos.eval.judge import JudgeClient, JudgeConfig
from vigos.eval.metrics import cvbench_score, summarize, vilp_scores
from vigos.eval.options import EvalConfig, default_run_name
from vigos.eval.paper_copies import for_protocol
from vigos.eval.protocol_grading import apply_judge, judge_requirement, record_item
from vigos.eval.run_folder import (
    SUMMARY_FILE,
    EvalError,
    append_responses,
    claim_run_folder,
    now,
    read_responses,
    responses_path,
    write_json,
)
from vigos.eval.sources import tile_images
from vigos.http_client import redact_url

__all__ = ["EvalConfig", "EvalError", "check_benchmarks", "default_run_name", "run_eval"]

logger = logging.getLogger("vigos")

JUDGE_CACHE = "judge_cache.sqlite"
SEEDING = (
    "item seed = sha256(seed, benchmark, id); hf: torch seeded per batch of batch_size items from their "
    "item seeds; vllm: each item sampled with its own seed"
)


# --- benchmarks, grading ----------------------------------------------------------------------------


def check_benchmarks(config: EvalConfig, **options: str) -> list[Benchmark]:
    """The requested benchmarks as the protocol reads them, each checked to have a readable local copy, and the
    run to have the judge its protocol needs, before any model loads. ``options`` name the settings in
    messages, as :func:`~vigos.eval.protocol_grading.judge_requirement` takes them (training's differ from
    ``vigos eval``'s flags). Raises :class:`EvalError`."""
    found: dict[str, Benchmark] = {}
    firsts: list[EvalItem] = []
    for name in config.benchmarks:
        try:
            benchmark = for_protocol(get_benchmark(name), config.protocol)
            firsts += benchmark.load(config.data_dir, limit=1, bad_rows=config.bad_rows)
        except ValueError as error:
            raise EvalError(str(error)) from None
        found.setdefault(benchmark.name, benchmark)
    if config.judge_url is None and (why := judge_requirement(config.protocol, firsts, **options)):
        raise EvalError(why)
    return list(found.values())


def _load_items(benchmark: Benchmark, config: EvalConfig) -> tuple[list[EvalItem], list[BadRow]]:
    items, bad = benchmark.read(config.data_dir, config.limit, bad_rows=config.bad_rows)
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise EvalError(
                f"{benchmark.name}: two items share the id {item.id!r}; ids must be unique "
                "for results to be recorded and resumed per item"
            )
        seen.add(item.id)
    return items, bad


def _with_official_scores(metrics: dict[str, Any], k: int) -> dict[str, Any]:
    """``metrics`` with each benchmark's own overall score where it is not the item mean (CV-Bench's)."""
    for name, block in metrics["benchmarks"].items():
        if name == "cvbench" and (score := cvbench_score(block, k)) is not None:
            block["official"] = score
    return metrics


# --- the run --------------------------------------------------------------------------------------


def _make_engine(config: EvalConfig, name: str, source: ModelSource | None, model: Any, processor: Any) -> Engine:
    spec = config.student_spec()
    if name == "vllm":
        assert source is not None
        return VLLMEngine(
            source, config.sampling_params(), spec, config.seed, max_images=1 if config.tile_images else 8
        )
    if name == "server":
        assert source is not None and config.server_url is not None
        return ServerEngine(source, config.sampling_params(), spec, config.server_url)
    if model is None:
        assert source is not None
        model, processor = load_hf_model(source)
    return HFEngine(model, processor, config.sampling_params(), spec)


def _shown_images(image: Any, config: EvalConfig) -> Any:
    """An item's image(s) as the engine gets them: several in order, or tiled into one (``tile_images``)."""
    return tile_images(image) if config.tile_images and isinstance(image, list) else image


def _evaluate_benchmark(
    benchmark: Benchmark,
    items: list[EvalItem],
    config: EvalConfig,
    out: Path,
    get_engine: Callable[[], Engine],
    judge: JudgeClient | None,
    progress: bool,
) -> list[dict[str, Any]]:
    """Sample and grade the items not yet in the responses file; return every item's record, in order."""
    path = responses_path(out, benchmark.name)
    done = read_responses(path)
    finished = sum(item.id in done for item in items)
    if finished:
        logger.info("%s: %d of %d items already done in %s", benchmark.name, finished, len(items), path)
    spec = config.student_spec()
    if finished < len(items):
        get_engine()  # load the model before the bar starts its clock
    with tqdm(
        total=len(items), initial=finished, desc=benchmark.name, unit="item", disable=not progress, dynamic_ncols=True
    ) as bar:
        for start in range(0, len(items), config.batch_size):
            stop = min(start + config.batch_size, len(items))
            rows = [row for row in range(start, stop) if items[row].id not in done]
            if not rows:
                continue
            todo = [items[row] for row in rows]
            examples = [
                Example(
                    question=items[row].prompt_question(),
                    answer=items[row].answer,
                    image=_shown_images(items[row].image, config),
                    row=row,
                    meta={},
                )
                for row in rows
            ]
            seeds = [item_seed(config.seed, benchmark.name, item.id) for item in todo]
            texts = get_engine().generate(examples, seeds)
            records = [record_item(item, samples, spec, config.protocol) for item, samples in zip(todo, texts)]
            if judge is not None:
                apply_judge(records, judge, config.protocol)
            append_responses(path, records)
            done.update((record["id"], record) for record in records)
            bar.update(len(todo))
    return [done[item.id] for item in items]


def _versions(engine: str) -> dict[str, str]:
    versions = {}
    for package in ("vigos", "torch", "transformers", "peft") + (("vllm",) if engine == "vllm" else ()):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _judge_summary(config: EvalConfig, records: list[dict[str, Any]], judge: JudgeClient | None) -> dict[str, Any]:
    graded = [record for record in records if "judge" in (record.get("grader"), record.get("grading"))]
    used = any(record.get("grading") == "judge" for record in graded)
    summary: dict[str, Any] = {
        "used": used,
        "model": config.judge_model if used else None,
        "url": redact_url(config.judge_url) if used and config.judge_url else None,
        "items": len(graded),
    }
    if judge is not None:
        summary.update(judge.stats)
    if graded and not used:
        summary["note"] = (
            f"{len(graded)} items are judge-graded in the protocol, but no judge was used: "
            "their verdicts are the rule-based ones (pass --judge-url and --judge-model)"
        )
    return summary


def _recorded_options(config: EvalConfig) -> dict[str, Any]:
    """The options as ``summary.json`` records them: the URLs without credentials (``user:pass@``, key params)."""
    options = config.to_dict()
    for name in ("judge_url", "server_url"):
        if options[name] is not None:
            options[name] = redact_url(options[name])
    return options


def run_eval(
    config: EvalConfig, *, model: Any = None, processor: Any = None, progress: bool = True, report: bool = True
) -> dict[str, Any]:
    """Evaluate ``config.model`` (or the given ``model`` and ``processor``) and write the run folder.

    Returns the summary also written to ``summary.json``. Items already in
    the responses files are not sampled again (see the module docstring).
    ``report=False`` skips ``report.html``/``report.md`` and their plots
    (e.g. for evaluations run often during training).
    Raises :class:`EvalError` for a missing benchmark copy or a run folder
    holding other settings, and :class:`~vigos.eval.judge.JudgeError` when
    the judge cannot be reached.
    """
    if (model is None) != (processor is None):
        raise ValueError("pass both model and processor, or neither (the model is then loaded from config.model)")
    benchmarks = check_benchmarks(config)
    engine_name = resolve_engine(config.engine, model_given=model is not None)
    source = model_source(config.model) if model is None else None
    out = Path(config.out_dir)
    claim_run_folder(out, config.sample_settings())

    @functools.cache
    def get_engine() -> Engine:
        # Built on first need: re-running a finished evaluation loads no model.
        return _make_engine(config, engine_name, source, model, processor)

    judge = None
    if config.judge_url is not None:
        judge = JudgeClient(
            JudgeConfig(
                config.judge_url,
                str(config.judge_model),
                api_key_env=config.judge_api_key_env,
                cache_path=str(out / JUDGE_CACHE),
            )
        )
    records: list[dict[str, Any]] = []
    items_per_benchmark: dict[str, int] = {}
    skipped: dict[str, list[dict[str, str]]] = {}
    try:
        for benchmark in benchmarks:
            items, bad = _load_items(benchmark, config)
            items_per_benchmark[benchmark.name] = len(items)
            if bad:
                skipped[benchmark.name] = [{"where": row.where, "problem": row.problem} for row in bad]
            records.extend(_evaluate_benchmark(benchmark, items, config, out, get_engine, judge, progress))
        judge_summary = _judge_summary(config, records, judge)
    finally:
        if judge is not None:
            judge.close()
    if judge_summary.get("note"):
        logger.warning(judge_summary["note"])

    summary = {
        "run_name": config.run_name,
        "model": config.model,
        "model_source": source.to_dict() if source is not None else None,
        "k": config.k,
        "n_samples": config.samples_per_item,
        "seed": config.seed,
        "seeding": SEEDING,
        "sampling": {
            "temperature": config.temperature,
            "top_p": config.top_p,
            "top_k": config.top_k,
            "max_new_tokens": config.max_new_tokens,
        },
        "student_prompt": config.student_prompt,
        "protocol": config.protocol,
        "engine": engine_name,
        "judge": judge_summary,
        "versions": _versions(engine_name),
        "benchmarks": list(items_per_benchmark),
        "items": items_per_benchmark,
        "skipped_rows": skipped,
        # Benchmarks whose figures average 0-1 judge scores rather than right/wrong verdicts (MM-Vet, official).
        "partial_credit": sorted({record["benchmark"] for record in records if record.get("scores") is not None}),
        "config": _recorded_options(config),
        "metrics": _with_official_scores(summarize(records, config.k, seed=config.seed), config.k),
        "vilp": vilp_scores(records, config.k, config.seed)
        if any(r.get("conflict") is not None for r in records)
        else {},
        "created": now(),
    }
    write_json(out / SUMMARY_FILE, summary)
    if report:
        _write_report(out, summary)
    return summary


def _write_report(out: Path, summary: dict[str, Any]) -> None:
    if importlib.util.find_spec("vigos.eval.report") is None:
        return
    from vigos.eval.report import write_report

    try:
        write_report(out, summary)
    except Exception as error:  # noqa: BLE001 - the results are on disk; the report can be rebuilt from them
        logger.warning(
            "report not written (%s: %s); the results are in %s", type(error).__name__, error, out / SUMMARY_FILE
        )


# --- command line ---------------------------------------------------------------------------------


def _resume_command(args: argparse.Namespace, config: EvalConfig) -> str:
    """The ``vigos eval`` command line, on one line, that resumes this run: its options as given, and the folder."""
    words = ["vigos", "eval"]
    for field in dataclasses.fields(EvalConfig):
        # Each option is the field's name in dashes; the required ones have no default and always appear.
        value = config.out_dir if field.name == "out_dir" else getattr(args, field.name, None)
        if isinstance(value, bool):  # a flag
            words += ["--" + field.name.replace("_", "-")] if value else []
        elif value is not None and value != field.default:
            words += ["--" + field.name.replace("_", "-"), str(value)]
    if getattr(args, "no_progress", False):
        words.append("--no-progress")
    return " ".join(_shell_word(word) for word in words)


def _shell_word(word: str) -> str:
    """``word`` quoted for a POSIX shell; with a line break (a prompt given as text), as bash's ``$'...'``, so the
    command stays on one line."""
    if not any(char in word for char in "\n\r\t"):
        return shlex.quote(word)
    escaped = word.replace("\\", "\\\\").replace("'", "\\'")
    return "$'" + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + "'"
