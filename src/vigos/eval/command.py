"""``vigos eval``: its options and the command."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

from vigos import prompts
from vigos.data.rows import BAD_ROW_MODES
from vigos.eval.engines import ENGINES
from vigos.eval.judge import JudgeError
from vigos.eval.options import EvalConfig, default_run_name
from vigos.eval.protocols import PROTOCOLS
from vigos.eval.run_folder import EvalError
from vigos.eval.runner import _resume_command, run_eval
from vigos.eval.sources import BenchmarkDataError

logger = logging.getLogger("vigos")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``vigos eval`` options to ``parser``."""
    defaults = {f.name: f.default for f in dataclasses.fields(EvalConfig) if f.init}
    parser.add_argument(
        "--model", required=True, help="merged model directory, hub id, tiny:<arch>, or LoRA adapter directory"
    )
    parser.add_argument(
        "--benchmarks",
        required=True,
        help="comma-separated benchmark names or YAML files, e.g. vilp-f,vilp-p,mathvista",
    )
    parser.add_argument("--data-dir", required=True, help="folder holding the local copy of each benchmark")
    parser.add_argument("--out-dir", help="run folder (default: runs/eval/<run name>); re-running into it resumes")
    parser.add_argument("--k", type=int, default=defaults["k"], help="k of Pass@k / Avg@k (default: %(default)s)")
    parser.add_argument(
        "--n-samples", type=int, help="samples per item, >= k (default: k); n > k gives unbiased Pass@k"
    )
    parser.add_argument("--temperature", type=float, default=defaults["temperature"], help="(default: %(default)s)")
    parser.add_argument("--top-p", type=float, default=defaults["top_p"], help="(default: %(default)s)")
    parser.add_argument("--top-k", type=int, default=defaults["top_k"], help="0 turns it off (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=defaults["max_new_tokens"], help="(default: %(default)s)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults["batch_size"],
        help="questions per generation call; raise it with vLLM (default: %(default)s)",
    )
    parser.add_argument("--limit", type=int, help="evaluate only the first N items of each benchmark")
    parser.add_argument("--seed", type=int, default=defaults["seed"], help="(default: %(default)s)")
    parser.add_argument(
        "--student-prompt",
        help="student prompt template with {question}, or @FILE holding it (default: the ViGOS student prompt)",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=defaults["engine"],
        help="auto: vLLM when installed and a GPU is present, else the Hugging Face model; "
        "server: a running OpenAI-compatible server (--server-url)",
    )
    parser.add_argument("--server-url", help="base URL of a running 'vllm serve' or 'vigos serve' (--engine server)")
    parser.add_argument("--judge-url", help="OpenAI-compatible API root of an LLM judge, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--judge-model", help="model name the judge server serves")
    parser.add_argument(
        "--judge-api-key-env",
        default=defaults["judge_api_key_env"],
        help="environment variable holding the judge's API key (default: %(default)s)",
    )
    parser.add_argument("--run-name", help="label of the run in summaries and reports (default: from --model)")
    parser.add_argument(
        "--tile-images",
        action="store_true",
        help="tile an item's several images into one picture (for models that take one image); by default "
        "each goes to the model as its own image, in order",
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=defaults["protocol"],
        help="official: each benchmark's own prompt fields and scorer (compare with the official leaderboards); "
        "paper: the ViGOS release's copies, \\boxed{} answers only and one judge call per item (compare with the "
        "paper's table) (default: %(default)s)",
    )
    parser.add_argument(
        "--prompt-file",
        help="file whose text is the whole user turn, used verbatim: {question} becomes the item's question "
        "(with its options), no other field is filled and no pre-fill is added; replaces --student-prompt",
    )
    parser.add_argument(
        "--bad-rows",
        choices=BAD_ROW_MODES,
        default=defaults["bad_rows"],
        help="a benchmark row that cannot be read (an answer outside its options, a missing field, a broken "
        "image): skip it with a warning naming it, or stop the run there (default: %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _student_prompt(value: str | None) -> str:
    if value is None:
        return prompts.STUDENT_PROMPT
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.is_file():
            raise EvalError(f"--student-prompt {value}: file {path} not found")
        return path.read_text(encoding="utf-8").rstrip("\n")
    return value


def _plain_table(summary: dict[str, Any]) -> str:
    pass_name, avg_name = f"pass@{summary['k']}", f"avg@{summary['k']}"
    rows = [f"| benchmark | n | {pass_name} | {avg_name} |", "| --- | ---: | ---: | ---: |"]
    blocks = dict(summary["metrics"]["benchmarks"], mean=summary["metrics"]["mean"])
    for name, block in blocks.items():
        n = block.get("n", block[pass_name]["n"])
        rows.append(f"| {name} | {n} | {100 * block[pass_name]['mean']:.2f} | {100 * block[avg_name]['mean']:.2f} |")
    return "\n".join(rows)


def eval_command(args: argparse.Namespace) -> int:
    """Run ``vigos eval`` from parsed arguments; print the results table. Returns the exit code."""
    try:
        run_name = args.run_name or default_run_name(args.model)
        config = EvalConfig(
            model=args.model,
            benchmarks=args.benchmarks.split(","),
            data_dir=args.data_dir,
            out_dir=args.out_dir or str(Path("runs") / "eval" / run_name),
            k=args.k,
            n_samples=args.n_samples,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            limit=args.limit,
            seed=args.seed,
            student_prompt=_student_prompt(args.student_prompt),
            engine=args.engine,
            server_url=args.server_url,
            judge_url=args.judge_url,
            judge_model=args.judge_model,
            judge_api_key_env=args.judge_api_key_env,
            run_name=run_name,
            tile_images=args.tile_images,
            protocol=args.protocol,
            prompt_file=args.prompt_file,
            bad_rows=args.bad_rows,
        )
    except ValueError as error:
        print(f"vigos eval: {error}", file=sys.stderr)
        return 2
    try:
        summary = run_eval(config, progress=not args.no_progress)
    except (EvalError, BenchmarkDataError, JudgeError) as error:
        print(f"vigos eval: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Every finished batch is already on disk (see the module docstring): the re-run picks up from there.
        print(
            f"vigos eval: interrupted; the finished items are kept in {config.out_dir}; to resume, run: "
            f"{_resume_command(args, config)}",
            file=sys.stderr,
        )
        return 130
    if importlib.util.find_spec("vigos.eval.report") is not None:
        from vigos.eval.report import results_table_markdown

        print(results_table_markdown(summary))
    else:
        print(_plain_table(summary))
    print(f"results: {Path(config.out_dir)}")
    return 0
