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
import io
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

REPO = Path(__file__).resolve().parent.parent
OLD_COMMIT = "a361dc0"
LAYOUTS = ("parquet", "jsonl")
# Bump when the generated data changes for the same arguments, so cached datasets are redone.
DATA_VERSION = 1
# About one megapixel each; the pool cycles through them.
SHAPES = ((1000, 1000), (1024, 1024), (1120, 896), (896, 1120))
PARQUET_SHARD_ROWS = 2000  # about 400 MB a shard at 200 KB an image (hub shards are a few hundred MB)
PARQUET_ROW_GROUP = 100  # what `datasets` writes for image columns
JSONL_DIR_FILES = 1000  # image files per subdirectory
MIB = 2**20
TARGET_RSS_GROWTH = 300 * 10**6  # issue 12: peak RSS at 47,000 rows within 300 MB of 1,000 rows
TARGET_CACHED_STEP_S = 60.0  # issue 12: first optimizer step within 60 s on a cached run at 47,000 rows


def default_data_dir() -> Path:
    """``$VIGOS_CACHE/bench-data``, else ``~/.cache/vigos/bench-data``."""
    return Path(os.environ.get("VIGOS_CACHE") or Path.home() / ".cache" / "vigos") / "bench-data"


# --------------------------------------------------------------------------- generation


def _draw_image(seed: int, size: tuple[int, int], noise: float) -> bytes:
    """A JPEG of smooth colour fields, shapes, lines, text and sensor-like noise (100-300 KB at ~1 MP)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    width, height = size
    scale = (width * height / 10**6) ** 0.5
    field = rng.integers(0, 256, (int(rng.integers(4, 12)), int(rng.integers(4, 12)), 3), dtype=np.uint8)
    image = Image.fromarray(field).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(10, 300) * scale), y0 + int(rng.integers(10, 300) * scale)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        elif kind == 1:
            draw.ellipse([x0, y0, x1, y1], outline=colour, width=int(rng.integers(1, 8)))
        else:
            draw.line([x0, y0, x1, y1], fill=colour, width=int(rng.integers(1, 6)))
    for _ in range(30):
        xy = (int(rng.integers(0, max(width - 100, 1))), int(rng.integers(0, max(height - 20, 1))))
        draw.text(xy, f"x={int(rng.integers(0, 1000))}", fill=(0, 0, 0))
    pixels = np.asarray(image, dtype=np.int16)
    if noise:
        pixels = pixels + rng.normal(0.0, noise, pixels.shape).astype(np.int16)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def _shapes(image_side: int | None) -> tuple[tuple[int, int], ...]:
    return SHAPES if image_side is None else ((image_side, image_side),)


def image_pool(data_dir: Path, count: int, *, image_side: int | None = None, seed: int = 0) -> list[bytes]:
    """``count`` distinct JPEGs (bytes), drawn once and cached under ``data_dir``."""
    shape = "1mp" if image_side is None else f"{image_side}px"
    where = Path(data_dir) / f"pool-v{DATA_VERSION}-{shape}-n{count}-s{seed}"
    names = [f"{k:05d}.jpg" for k in range(count)]
    if not (where / "done").exists():
        scratch = Path(tempfile.mkdtemp(prefix=where.name + ".", dir=data_dir))
        shapes = _shapes(image_side)
        for k, name in enumerate(names):
            # A small image has little detail to carry noise; keep it plain so it stays small.
            noise = 4.0 if image_side is None else 0.0
            (scratch / name).write_bytes(_draw_image(seed * 1_000_003 + k, shapes[k % len(shapes)], noise))
        (scratch / "done").write_text("")
        _publish(scratch, where)
    return [(where / name).read_bytes() for name in names]


def _publish(scratch: Path, final: Path) -> None:
    """Move a finished directory into place; a concurrent writer that got there first wins."""
    try:
        os.replace(scratch, final)
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(scratch, ignore_errors=True)


_OBJECTS = ("triangles", "circles", "squares", "stars", "apples", "cars", "birds", "books")
_COLOURS = ("red", "blue", "green", "yellow", "black", "orange", "purple", "grey")


def row_text(index: int, *, seed: int = 0) -> tuple[str, str]:
    """The ``problem`` and ``answer`` of row ``index``: distinct for every row, a few sentences and a short answer."""
    import random

    rng = random.Random(seed * 1_000_003 + index)
    a, b = rng.randint(2, 999), rng.randint(2, 999)
    thing, colour = rng.choice(_OBJECTS), rng.choice(_COLOURS)
    kind = index % 3
    if kind == 0:
        problem = (
            f"Item {index}. The figure shows {a} {colour} {thing} in the left panel and {b} in the right "
            f"panel. How many {colour} {thing} are shown in total?"
        )
        answer = str(a + b)
    elif kind == 1:
        problem = (
            f"Item {index}. In the chart, the bar labelled '{colour}' reaches {a} and the bar labelled "
            f"'{thing}' reaches {b}. What is the difference between the two bars?"
        )
        answer = str(abs(a - b))
    else:
        problem = (
            f"Item {index}. A rectangle in the diagram is {a} units wide and {b} units tall. Based on the "
            "image, what is its area in square units?"
        )
        answer = str(a * b)
    return problem, answer


def _features():
    import datasets

    return datasets.Features(
        {
            "problem": datasets.Value("string"),
            "images": datasets.List(datasets.Image()),
            "answer": datasets.Value("string"),
        }
    )


def _write_parquet(root: Path, rows: int, pool: list[bytes], seed: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _features().arrow_schema  # carries the `huggingface` metadata: datasets reads an Image list
    shards = max(1, -(-rows // PARQUET_SHARD_ROWS))
    (root / "data").mkdir(parents=True)
    for shard in range(shards):
        start, stop = shard * PARQUET_SHARD_ROWS, min(rows, (shard + 1) * PARQUET_SHARD_ROWS)
        path = root / "data" / f"train-{shard:05d}-of-{shards:05d}.parquet"
        with pq.ParquetWriter(path, schema, use_dictionary=False, compression="snappy") as writer:
            for group in range(start, stop, PARQUET_ROW_GROUP):
                indices = range(group, min(stop, group + PARQUET_ROW_GROUP))
                texts = [row_text(i, seed=seed) for i in indices]
                table = pa.Table.from_pydict(
                    {
                        "problem": [p for p, _ in texts],
                        "images": [[{"bytes": pool[i % len(pool)], "path": f"{i:06d}.jpg"}] for i in indices],
                        "answer": [a for _, a in texts],
                    },
                    schema=schema,
                )
                writer.write_table(table, row_group_size=PARQUET_ROW_GROUP)


def _write_jsonl(root: Path, rows: int, pool: list[bytes], seed: int) -> None:
    root.mkdir(parents=True)
    with (root / "train.jsonl").open("w", encoding="utf-8") as out:
        for i in range(rows):
            relative = f"images/{i // JSONL_DIR_FILES:03d}/{i:06d}.jpg"
            if i % JSONL_DIR_FILES == 0:
                (root / relative).parent.mkdir(parents=True)
            (root / relative).write_bytes(pool[i % len(pool)])
            problem, answer = row_text(i, seed=seed)
            out.write(json.dumps({"problem": problem, "images": [relative], "answer": answer}) + "\n")


def dataset_root(data_dir: Path, rows: int, layout: str, *, distinct: int, image_side: int | None, seed: int) -> Path:
    shape = "1mp" if image_side is None else f"{image_side}px"
    return Path(data_dir) / f"sr1like-v{DATA_VERSION}-{shape}-n{distinct}-s{seed}" / f"{rows}-{layout}"


def generate(
    data_dir: Path | str, rows: int, layout: str, *, distinct: int = 256, image_side: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """Write (once) a generated dataset; returns its info: ``source`` (what to pass as ``--dataset``), size, timing.

    ``image_side`` None: about 1-megapixel images; else square images of that
    side (tests). A finished dataset is reused; a half-written one is never seen
    (written aside, then moved into place).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    data_dir = Path(data_dir).expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    root = dataset_root(data_dir, rows, layout, distinct=distinct, image_side=image_side, seed=seed)
    info_path = root / "bench_data.json"
    if not info_path.exists():
        import pyarrow.parquet  # noqa: F401  (imports outside the timed part)

        _features()
        started = time.perf_counter()
        pool = image_pool(data_dir, min(distinct, rows), image_side=image_side, seed=seed)
        pool_s = time.perf_counter() - started
        root.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
        target = scratch / "out"
        (_write_parquet if layout == "parquet" else _write_jsonl)(target, rows, pool, seed)
        info = dict(
            rows=rows,
            layout=layout,
            distinct_images=len(pool),
            image_side=image_side,
            seed=seed,
            image_shapes=[list(s) for s in _shapes(image_side)],
            mean_image_bytes=sum(len(b) for b in pool) / len(pool),
            disk_bytes=_disk_bytes(target),
            pool_seconds=pool_s,
            write_seconds=time.perf_counter() - started - pool_s,
            version=DATA_VERSION,
            note=f"{len(pool)} distinct images, their bytes reused across rows (each row stores its own "
            "copy); every row's problem and answer are distinct",
        )
        (target / "bench_data.json").write_text(json.dumps(info, indent=1) + "\n")
        _publish(target, root)
        shutil.rmtree(scratch, ignore_errors=True)
    info = json.loads(info_path.read_text())
    info["root"] = str(root)
    info["source"] = str(root / "train.jsonl") if layout == "jsonl" else str(root)
    return info


def _disk_bytes(path: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


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
        _publish(scratch, tree)
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


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 12's targets, judged on the new path wherever the sizes they name were measured."""
    found = []
    new = {(r["rows"], r["layout"]): r for r in rows if r["path"] == "new"}
    for layout in sorted({layout for _, layout in new}):
        sizes = sorted(n for n, lay in new if lay == layout)
        small, large = sizes[0], sizes[-1]
        if large > small:
            # The same run at both sizes (first with first, cached with cached); the larger growth counts.
            growths = [
                new[(large, layout)][kind]["max_rss_bytes"] - new[(small, layout)][kind]["max_rss_bytes"]
                for kind in ("first", "cached")
                if new[(small, layout)].get(kind, {}).get("max_rss_bytes")
                and new[(large, layout)].get(kind, {}).get("max_rss_bytes")
            ]
            if growths:
                growth = max(growths)
                found.append(
                    dict(
                        layout=layout,
                        target=f"peak RSS at {large:,} rows within 300 MB of {small:,} rows",
                        value=f"{growth / 10**6:+.0f} MB",
                        met=growth <= TARGET_RSS_GROWTH,
                        binding=(small, large) == (1000, 47000),
                    )
                )
        cached = new[(large, layout)].get("cached", {})
        if cached.get("first_step_s") is not None:
            found.append(
                dict(
                    layout=layout,
                    target=f"first step within 60 s, cached run at {large:,} rows",
                    value=f"{cached['first_step_s']:.1f} s",
                    met=cached["first_step_s"] <= TARGET_CACHED_STEP_S,
                    binding=large == 47000,
                )
            )
    return found


def _mib(value: int | None) -> str:
    return "–" if not value else f"{value / MIB:,.0f}"


def _seconds(run: dict[str, Any]) -> str:
    if not run:
        return "–"
    if run.get("first_step_s") is None:
        return f"failed ({run['stopped'] or 'exit ' + str(run['exit_code'])})"
    return f"{run['first_step_s']:.1f}"


def markdown_lines(result: dict[str, Any]) -> list[str]:
    """The Markdown section of a ``bench_data.json`` document (also part of ``bench.md``)."""
    s = result["settings"]
    infos = list(result["datasets"].values())
    distinct = min((i["distinct_images"] for i in infos), default=s["distinct_images"])
    mean_kb = sum(i["mean_image_bytes"] for i in infos) / max(len(infos), 1) / 1000
    shapes = ", ".join("x".join(map(str, shape)) for shape in (infos[0]["image_shapes"] if infos else []))
    lines = [
        "## Data path: `vigos train` to the first optimizer step",
        "",
        f"Generated rows shaped like Vision-SR1-47K (`problem`, `images` = one image, `answer`), JPEGs of {shapes} "
        f"(mean {mean_kb:.0f} KB): {distinct} distinct images whose bytes are reused across rows (each row stores its "
        "own copy), every row's problem and answer distinct. parquet = hub-style shards with the image bytes "
        "embedded; jsonl = one JPEG file per row, relative paths. `configs/tiny.yaml` (tiny model), max_steps 1. "
        f"old = today's path (commit {s['old_commit']}), new = this checkout. First run on empty `VIGOS_CACHE` and "
        "`HF_DATASETS_CACHE`; cached = a second run on what the first left there. Time from process start to "
        "the first optimizer step (first line of metrics.jsonl); peak RSS = that of the largest process, the "
        "training process or a worker it started (exact: ru_maxrss); tree RSS = the peak of the summed RSS of the "
        "process and its workers, polled every 0.2 s (shared pages of forked workers counted in each; short peaks "
        "missed), first run; validation rows/s as logged by the first run (– when it logs none).",
        "",
        "| rows | layout | path | first run: step 1 (s) | cached run: step 1 (s) | peak RSS (MiB) | "
        "cached peak RSS (MiB) | tree RSS (MiB) | validation rows/s |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        first, cached = row.get("first", {}), row.get("cached", {})
        rate = first.get("validation_rows_per_s")
        lines.append(
            f"| {row['rows']:,} | {row['layout']} | {row['path']} | {_seconds(first)} | {_seconds(cached)} | "
            f"{_mib(first.get('max_rss_bytes'))} | {_mib(cached.get('max_rss_bytes'))} | "
            f"{_mib(first.get('peak_tree_rss_bytes'))} | {'–' if rate is None else f'{rate:,.0f}'} |"
        )
    if result["datasets"]:
        lines += [
            "",
            "| dataset | rows | disk (MB) | generation (s) | per 1,000 rows (s) |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for info in result["datasets"].values():
            seconds = info["pool_seconds"] + info["write_seconds"]
            digits = 0 if info["disk_bytes"] > 10**7 else 2
            lines.append(
                f"| {info['layout']} | {info['rows']:,} | {info['disk_bytes'] / 10**6:,.{digits}f} | {seconds:.1f} | "
                f"{info['write_seconds'] / info['rows'] * 1000:.1f} |"
            )
        lines += [
            "",
            "Generation: the image pool (drawn once, shared by all sizes) plus writing; per 1,000 rows "
            "counts the writing only. A cached dataset shows the time of the run that wrote it.",
        ]
    if result.get("targets"):
        lines += [
            "",
            "| issue 12 target (new path) | value | met | at the target's size |",
            "| --- | ---: | --- | --- |",
        ]
        for t in result["targets"]:
            lines.append(
                f"| {t['target']} ({t['layout']}) | {t['value']} | {'yes' if t['met'] else 'no'} | "
                f"{'yes' if t['binding'] else 'no (reduced size)'} |"
            )
    return lines


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
