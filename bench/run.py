"""``make bench``: the loss-stage, training-step and data-path benchmarks, written as JSON and a Markdown table.

Writes ``bench/results/bench.json`` (every measurement) and
``bench/results/bench.md`` (tables and the ratios ours / naive). Both paths
are always measured in the same run, alternating, so that the ratios hold
even on a machine with other work on it; absolute times do not. The data
benchmark (``bench_data.py``) runs at a reduced size here: 1,000 and 3,000
generated rows of 1-MP images (parquet), this checkout against today's path
at 1,000; its full size (47,000 rows, both layouts) is run directly.

    python bench/run.py [--quick] [--skip-loss] [--skip-step] [--skip-data] [--out-dir bench/results]

``--quick`` runs small sizes only (a smoke test of the harness, not a result).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_data  # noqa: E402
import bench_loss  # noqa: E402
import bench_step  # noqa: E402

MIB = 2**20


def _machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return dict(
        cpu=cpu,
        cores=os.cpu_count(),
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        python=platform.python_version(),
        load_average=list(os.getloadavg()),
    )


def _loss_table(result: dict[str, Any]) -> list[str]:
    s = result["settings"]
    lines = [
        "## Loss stage alone",
        "",
        f"One loss term (forward KL, token clip {s['token_clip']}) over T tokens at V = {s['vocab']:,}, "
        f"hidden size {s['hidden']}, fp32, forward + backward; frozen head shared by the teacher (LoRA). "
        f"naive = full [T, V] logits + `divergence_from_logits`; ours = `divergence_from_hidden`, chunk {s['chunk']}. "
        f"Extra memory = peak RSS of the subprocess minus that of a subprocess that only builds the inputs. "
        f"Medians over {s['rounds']} alternating rounds (one round where ours runs alone).",
        "",
        "| T | path | wall time (s) | CPU time (s) | extra memory (MiB) | extra / one [T, V] fp32 logit tensor |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['tokens']} | {row['path']} | {row['time_s']:.2f} | {row['cpu_s']:.2f} | "
            f"{row['extra_bytes'] / MIB:.0f} | {row['extra_bytes'] / row['logit_bytes']:.2f} |"
        )
    lines += [
        "",
        (
            "| T | wall time ours / naive | CPU time ours / naive | extra memory "
            "ours / naive | loss abs. diff | grad sum rel. diff |"
        ),
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in result["comparisons"]:
        lines.append(
            f"| {c['tokens']} | {c['time_ratio']:.3f} | {c['cpu_ratio']:.3f} | {c['memory_ratio']:.4f} "
            f"(1/{1 / c['memory_ratio']:.0f}) | {c['loss_abs_diff']:.1e} | {c['grad_rel_diff']:.1e} |"
        )
    return lines


def _step_table(result: dict[str, Any]) -> list[str]:
    s = result["settings"]
    lines = [
        "## Training step on the tiny model",
        "",
        f"{s['model']}, LoRA r {s['lora_r']} on the release's module names (the vision blocks' MLP included), "
        f"{s['prompts_per_step']} prompts per step, {s['sampling']}, "
        f"completions forced to L tokens; fp32, {s['torch_threads']} torch thread. naive = full-logits loss "
        "(`naive_loss`) and HF `generate` on the unmerged LoRA model, as the release; ours = chunked loss from hidden "
        "states and the lean sampler (prompt prefilled once, own decode loop, LoRA folded in). "
        f"Medians over {s['steps']} steps per path, the "
        "paths alternating step by step in one process after a warm-up step each; peak RSS from one step per path "
        "in its own process. Stage times in seconds; 'teachers' includes ours' one adapter-off vision encode shared "
        "by all teacher passes, 'loss' includes its share of backward, 'student' is the student's forward (its own "
        "vision encode, adapter on) + backward.",
        "",
        (
            "| L | path | step (s) | rollout | teachers | student | loss | other | "
            "other share | CPU s/step | peak RSS (MiB) |"
        ),
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        st = row["stages_s"]
        lines.append(
            f"| {row['length']} | {row['path']} | {row['time_s']:.2f} | {st['rollout']:.2f} | {st['teachers']:.3f} | "
            f"{st['student']:.3f} | {st['loss']:.3f} | {st['other']:.3f} | {row['shares']['other']:.1%} | "
            f"{row['cpu_s']:.2f} | {row['max_rss_bytes'] / MIB:.0f} |"
        )
    lines += [
        "",
        "| L | speed-up naive / ours | CPU time ours / naive | peak RSS ours / naive |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for c in result["comparisons"]:
        lines.append(f"| {c['length']} | {c['speedup']:.2f}x | {c['cpu_ratio']:.3f} | {c['memory_ratio']:.3f} |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The Markdown report of a ``bench.json`` document."""
    m = report["machine"]
    lines = [
        "# vigos benchmark",
        "",
        f"Run {report['started']} on {m['cpu']} ({m['cores']} cores, torch {m['torch']}, "
        f"{m['torch_threads']} threads); "
        f"load average at start {', '.join(f'{x:.1f}' for x in m['load_average'])}. "
        f"Total {report['seconds']:.0f} s.",
        "",
    ]
    if "loss" in report:
        lines += _loss_table(report["loss"]) + [""]
    if "step" in report:
        lines += _step_table(report["step"]) + [""]
    if "data" in report:
        lines += bench_data.markdown_lines(report["data"]) + [""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the harness, measures nothing useful")
    parser.add_argument("--skip-loss", action="store_true")
    parser.add_argument("--skip-step", action="store_true")
    parser.add_argument("--skip-data", action="store_true")
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": _machine()}
    if not args.skip_loss:
        sizes = dict(compared_tokens=(128,), alone_tokens=(256,), rounds=1) if args.quick else {}
        report["loss"] = bench_loss.run(**sizes)
    if not args.skip_step:
        sizes = dict(lengths=(8,), steps=1) if args.quick else {}
        report["step"] = bench_step.run(**sizes)
    if not args.skip_data:
        sizes = dict(rows=(20,), old_rows=(20,), distinct=8, image_side=64) if args.quick else {}
        report["data"] = bench_data.run(**sizes)
    report["seconds"] = time.time() - started
    (out / "bench.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "bench.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
