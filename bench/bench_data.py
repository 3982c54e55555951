"""Benchmark of ``vigos train``'s data path: peak memory and time to the first optimizer step.

Datasets shaped like the paper's training set Vision-SR1-47K (columns
``problem``, ``images`` -- a list holding one image -- and ``answer``) are
generated with about 1-megapixel JPEGs (100-300 KB each, like photos and
figures) in two layouts:

- ``parquet``: a directory ``data/train-0000k-of-0000n.parquet`` as on the hub,
  the images embedded as bytes in a ``List(Image())`` column (hub shards and
  100-row row groups, no dictionary encoding of the bytes);
- ``jsonl``: ``train.jsonl`` and one JPEG file per row under ``images/``, the
  rows naming them by relative path.

Generating tens of thousands of distinct 1-MP images takes long, so a pool of
a few hundred distinct images (``--distinct-images``) is drawn once and its
bytes are reused across rows: every row still stores its own copy of the bytes
(the files and their sizes are realistic), and every row's question and answer
are its own. Generated data is cached under ``--data-dir`` (default
``$VIGOS_CACHE/bench-data``, else ``~/.cache/vigos/bench-data``); reruns reuse it.
The datasets are written by ``data_build.py``, the tables and issue 12's verdicts
by ``data_report.py`` (both next to this script).

Each measurement runs ``vigos train`` (the repository's ``configs/tiny.yaml``,
the tiny model, ``max_steps 1``) as a subprocess, twice on a fresh cache: a
first run, then a second ("cached") run that can reuse whatever the first left
in ``VIGOS_CACHE`` and ``HF_DATASETS_CACHE`` (both pointed at a scratch
directory that is deleted afterwards). It records

- time from process start to the first optimizer step (the first line of
  ``output_dir/metrics.jsonl``, written when step 1 is logged);
- peak RSS of the largest process, the training process or a worker it
  started (exact: ``ru_maxrss`` from ``wait4``), and the peaks of the summed RSS
  and PSS of the process tree (polled every 0.2 s; RSS counts pages a forked
  worker shares with its parent in each, PSS splits shared pages, also with
  unrelated processes mapping the same libraries, so it reads low on a busy
  machine);
- the validation pass's rows per second when the run logs one (a log line with
  "rows" and "/s").

``new`` is the code in this checkout (``src/``); ``old`` is today's path, git
commit ``a361dc0`` (every image decoded before the first step and kept as RGB
arrays), exported with ``git archive`` into the data directory and run with the
same Python (``PYTHONPATH=<tree>/src``). Run it at sizes it survives: a run whose
process tree passes ``--rss-limit-gb`` is stopped and reported as such.

    python bench/bench_data.py --rows 1000 47000 --layouts parquet jsonl --old-rows 1000 \\
        --out bench/results/bench_data.json

writes the JSON and, next to it, a Markdown table (``bench_data.md``).
``--generate-only`` writes the datasets and reports generation time and size;
``--logs DIR`` keeps every training run's output. Options this script does not
know go on to ``vigos train`` (e.g. ``--dataloader_num_workers 2``). Disk: a
47,000-row layout takes about 9 GB, and a parquet run at that size also
writes its Arrow copy (another ~9 GB) under ``--scratch-dir`` while it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from data_build import LAYOUTS, default_data_dir, generate, publish
from data_report import MIB, markdown_lines, targets

REPO = Path(__file__).resolve().parent.parent
OLD_COMMIT = "a361dc0"


# --------------------------------------------------------------------------- measurement


def old_tree(data_dir: Path, commit: str = OLD_COMMIT, repo: Path = REPO) -> Path:
    """Today's ``src/`` and ``configs/`` at ``commit``, exported once (``git archive``; the checkout is not touched)."""
    full = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", f"{commit}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    tree = Path(data_dir) / f"tree-{full[:12]}"
    if not (tree / "src" / "vigos" / "cli.py").exists():
        scratch = Path(tempfile.mkdtemp(prefix=tree.name + ".", dir=data_dir))
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", full, "src", "configs"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive, check=True)
        publish(scratch, tree)
    return tree


def resolve_model(src: Path, name: str) -> str:
    """The checkpoint directory of the config's model (``tiny:...`` built once in the usual cache)."""
    if not name.startswith("tiny:"):
        return name
    code = "import sys; from vigos.training.recipe import resolve_model_path; print(resolve_model_path(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", code, name],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(src)},
    )
    return done.stdout.strip().splitlines()[-1]


def _config_model(config: Path) -> str:
    import yaml

    return str(yaml.safe_load(config.read_text()).get("model_name_or_path") or "")


_RATE = re.compile(r"([0-9][0-9,]*(?:\.[0-9]+)?)\s*(?:rows?|it|examples?)?\s*/\s*s\b")


def rows_per_second(lines: list[str]) -> float | None:
    """The last rate in a log line about rows ("... rows ... N rows/s"); None when the run logs none."""
    found = None
    for line in lines:
        if "rows" in line and "/s" in line:
            for match in _RATE.finditer(line):
                found = float(match.group(1).replace(",", ""))
    return found


def _tree_memory(process) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in bytes over ``process`` and its descendants; gone processes count 0."""
    import psutil

    rss = pss = 0
    try:
        members = [process] + process.children(recursive=True)
    except psutil.Error:
        return 0, 0
    for member in members:
        try:
            info = member.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss, pss


def measure(
    command: list[str],
    *,
    env: dict[str, str],
    output_dir: Path,
    log_path: Path,
    timeout_s: float,
    rss_limit: int,
    poll_s: float = 0.2,
) -> dict[str, Any]:
    """Run ``command``; time to the first optimizer step, peak memory, rows/s of validation, exit status."""
    import psutil

    lines: list[tuple[float, str]] = []
    started = time.monotonic()
    proc = subprocess.Popen(
        command, env=env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )

    def pump() -> None:
        with log_path.open("w", encoding="utf-8", errors="replace") as log:
            for raw in proc.stdout:
                text = raw.decode("utf-8", errors="replace")
                log.write(text)
                now = time.monotonic() - started
                lines.extend((now, piece) for piece in re.split(r"[\r\n]", text) if piece.strip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    metrics = output_dir / "metrics.jsonl"
    handle = psutil.Process(proc.pid)
    step_s = None
    peak_rss = peak_pss = 0
    stopped = None
    rusage = None
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode, rusage = os.waitstatus_to_exitcode(status), usage
                break
            rss, pss = _tree_memory(handle)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            if step_s is None and metrics.exists() and metrics.read_text().strip():
                step_s = time.monotonic() - started
            elapsed = time.monotonic() - started
            if stopped is None and (pss > rss_limit or elapsed > timeout_s):
                stopped = f"memory over {rss_limit / 2**30:.1f} GiB" if pss > rss_limit else f"over {timeout_s:.0f} s"
                _kill_tree(handle)
            time.sleep(poll_s)
    except BaseException:  # interrupted: leave no training run behind
        _kill_tree(handle)
        raise
    wall_s = time.monotonic() - started
    reader.join(timeout=10)
    if step_s is None and metrics.exists() and metrics.read_text().strip():
        step_s = wall_s  # the step landed between the last poll and the exit
    if step_s is None:  # no metrics file: the Trainer's own printed log dict
        step_s = next((t for t, line in lines if "'loss'" in line or '"loss"' in line), None)
    texts = [line for _, line in lines]
    result = dict(
        exit_code=proc.returncode,
        stopped=stopped,
        wall_s=wall_s,
        first_step_s=step_s,
        max_rss_bytes=rusage.ru_maxrss * 1024 if rusage is not None else None,
        peak_tree_rss_bytes=peak_rss,
        peak_tree_pss_bytes=peak_pss,
        validation_rows_per_s=rows_per_second(texts),
        data_ready_s=next((t for t, line in lines if "rows kept" in line), None),
    )
    if proc.returncode != 0 or step_s is None:
        result["log_tail"] = texts[-15:]
    return result


def _kill_tree(process) -> None:
    """Kill the training process this harness started and the workers it started."""
    import psutil

    try:
        members = [process] + process.children(recursive=True)
    except psutil.Error:
        members = [process]
    for member in members:
        try:
            member.kill()
        except psutil.Error:
            pass


def measure_pair(
    *,
    path: str,
    src: Path,
    config: Path,
    model: str,
    dataset: dict[str, Any],
    scratch_root: str | None,
    timeout_s: float,
    rss_limit: int,
    extra: list[str],
    logs: Path | None = None,
) -> dict[str, Any]:
    """A first run and a cached run of ``vigos train`` from ``src`` on ``dataset``, sharing one fresh cache."""
    scratch = Path(tempfile.mkdtemp(prefix="vigos-bench-data-", dir=scratch_root))
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "VIGOS_CACHE": str(scratch / "vigos-cache"),
        "HF_DATASETS_CACHE": str(scratch / "hf-datasets"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    runs = {}
    try:
        for run in ("first", "cached"):
            out = scratch / f"run-{run}"
            command = [
                sys.executable,
                "-m",
                "vigos.cli",
                "train",
                "--config",
                str(config),
                "--model_name_or_path",
                model,
                "--dataset",
                dataset["source"],
                "--question_field",
                "problem",
                "--image_field",
                "images",
                "--answer_field",
                "answer",
                "--max_steps",
                "1",
                "--output_dir",
                str(out),
                "--max_prompt_length",
                "100000",
                "--save_steps",
                "1000000",
                "--log_completions_steps",
                "0",
                *extra,
            ]
            runs[run] = measure(
                command,
                env=env,
                output_dir=out,
                log_path=scratch / f"{run}.log",
                timeout_s=timeout_s,
                rss_limit=rss_limit,
            )
            print(f"  {path} {run}: {_brief(runs[run])}", file=sys.stderr, flush=True)
            if logs is not None:
                logs.mkdir(parents=True, exist_ok=True)
                name = f"{dataset['rows']}-{dataset['layout']}-{path}-{run}.log"
                shutil.copyfile(scratch / f"{run}.log", logs / name)
            if runs[run]["exit_code"] != 0:
                break
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return runs


def _brief(run: dict[str, Any]) -> str:
    step = "none" if run["first_step_s"] is None else f"{run['first_step_s']:.1f} s"
    rss = "?" if run["max_rss_bytes"] is None else f"{run['max_rss_bytes'] / MIB:.0f} MiB"
    text = f"step 1 at {step}, peak RSS {rss}, exit {run['exit_code']}"
    return text + (f" (stopped: {run['stopped']})" if run["stopped"] else "")


def _total_memory() -> int:
    import psutil

    return psutil.virtual_memory().total


def run(
    rows: tuple[int, ...] = (1000, 3000),
    layouts: tuple[str, ...] = ("parquet",),
    old_rows: tuple[int, ...] = (1000,),
    *,
    data_dir: Path | str | None = None,
    distinct: int = 256,
    image_side: int | None = None,
    seed: int = 0,
    new_src: Path | str = REPO / "src",
    old_commit: str = OLD_COMMIT,
    old_src: Path | str | None = None,
    scratch_root: str | None = None,
    timeout_s: float = 3600.0,
    rss_limit_gb: float | None = None,
    extra: tuple[str, ...] = (),
    generate_only: bool = False,
    logs: Path | str | None = None,
) -> dict[str, Any]:
    """Generate the datasets and measure; the result document of ``bench_data.json``."""
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    rss_limit = int((rss_limit_gb * 2**30) if rss_limit_gb else 0.6 * _total_memory())
    sizes = sorted(set(rows) | set(old_rows))
    datasets_info = {}
    for layout in layouts:
        for n in sizes:
            print(f"data: {n} rows, {layout}", file=sys.stderr, flush=True)
            datasets_info[f"{n}-{layout}"] = generate(
                data_dir, n, layout, distinct=distinct, image_side=image_side, seed=seed
            )
    result: dict[str, Any] = dict(
        settings=dict(
            rows=list(rows),
            layouts=list(layouts),
            old_rows=list(old_rows),
            distinct_images=distinct,
            image_side=image_side,
            data_dir=str(data_dir),
            old_commit=old_commit,
            new_src=str(new_src),
            config="configs/tiny.yaml",
            rss_limit_bytes=rss_limit,
            extra_args=list(extra),
            torch_threads=os.environ.get("OMP_NUM_THREADS"),
        ),
        datasets=datasets_info,
        rows=[],
    )
    if generate_only:
        return result
    paths = {"new": Path(new_src)}
    if old_rows:
        paths["old"] = Path(old_src) if old_src else old_tree(data_dir, old_commit) / "src"
    configs = {name: src.parent / "configs" / "tiny.yaml" for name, src in paths.items()}
    model = resolve_model(paths["new"], _config_model(configs["new"]))
    result["settings"]["model"] = model
    for layout in layouts:
        for n in sizes:
            for name in ("old", "new"):
                if name not in paths or n not in (old_rows if name == "old" else rows):
                    continue
                print(f"measure: {n} rows, {layout}, {name}", file=sys.stderr, flush=True)
                runs = measure_pair(
                    path=name,
                    src=paths[name],
                    config=configs[name],
                    model=model,
                    dataset=datasets_info[f"{n}-{layout}"],
                    scratch_root=scratch_root,
                    timeout_s=timeout_s,
                    rss_limit=rss_limit,
                    extra=list(extra),
                    logs=Path(logs) if logs else None,
                )
                result["rows"].append(dict(rows=n, layout=layout, path=name, **runs))
    result["targets"] = targets(result["rows"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 3000], help="sizes for the new path")
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=["parquet"])
    parser.add_argument(
        "--old-rows",
        type=int,
        nargs="*",
        default=[1000],
        help="sizes for today's path (ones it survives); none: skip it",
    )
    parser.add_argument("--data-dir", help="where generated data is cached (default $VIGOS_CACHE/bench-data)")
    parser.add_argument("--distinct-images", type=int, default=256, help="distinct JPEGs reused across rows")
    parser.add_argument("--image-side", type=int, help="square images of this side instead of ~1 MP (smoke tests)")
    parser.add_argument("--old-commit", default=OLD_COMMIT)
    parser.add_argument("--old-src", help="an existing src/ of today's path instead of exporting --old-commit")
    parser.add_argument("--new-src", default=str(REPO / "src"))
    parser.add_argument("--scratch-dir", help="where each measurement's caches and outputs go (default: system temp)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per training run")
    parser.add_argument(
        "--rss-limit-gb", type=float, help="stop a run whose process tree passes this (default 60%% of RAM)"
    )
    parser.add_argument("--logs", help="keep each training run's output in this directory")
    parser.add_argument(
        "--generate-only", action="store_true", help="write the datasets, report their size, measure nothing"
    )
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "bench_data.json"))
    args, extra = parser.parse_known_args()
    started = time.time()
    result = run(
        tuple(args.rows),
        tuple(args.layouts),
        tuple(args.old_rows),
        data_dir=args.data_dir,
        distinct=args.distinct_images,
        image_side=args.image_side,
        new_src=args.new_src,
        old_commit=args.old_commit,
        old_src=args.old_src,
        scratch_root=args.scratch_dir,
        timeout_s=args.timeout,
        rss_limit_gb=args.rss_limit_gb,
        extra=tuple(extra),
        generate_only=args.generate_only,
        logs=args.logs,
    )
    result["started"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
    result["seconds"] = time.time() - started
    result["load_average"] = list(os.getloadavg())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    text = "\n".join(
        [
            "# vigos data benchmark",
            "",
            f"Run {result['started']}, {result['seconds']:.0f} s.",
            "",
            *markdown_lines(result),
            "",
        ]
    )
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
