"""Benchmark of a full ViGOS training step on the "small" tiny Qwen2.5-VL: naive against ours.

A step is what ``ViGOSTrainer`` does per batch: a rollout of 2 prompts
(temperature 1.1, top-p 0.95, top-k 20; every completion forced to the same
length with ``min_new_tokens``), the teacher
passes, the student's forward pass, the loss, backward, gradient clipping
and an AdamW step on a LoRA adapter (r 16) of the language model.

The naive path is the public release's way: ``naive_loss`` (``FullLogitsScorer``:
full-vocabulary logits of the student and every teacher pass kept at once,
then ``divergence_from_logits``) and ``generate`` on the unmerged LoRA
model. Ours: hidden states and the chunked loss, and the lean sampler
(``sampler.py``: each prompt prefilled once, then vigos's own decode loop
over the weights with the LoRA deltas folded in), which draws the same
tokens as ``generate`` for a given seed.

Time is broken down into rollout, teacher passes, student forward +
backward, loss (forward, and its share of backward: everything before the
gradient reaches the student's final hidden states) and the rest. For time,
both paths share one process and model and alternate step by step, so load
from elsewhere falls on both alike; for peak memory (``ru_maxrss``) each
path runs one step in a subprocess of its own. Run directly::

    python bench/bench_step.py [--lengths 64 256] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STAGES = ("rollout", "teachers", "student", "loss", "other")
QUESTIONS = [("What colour is the square?", "red", (200, 30, 30)), ("What colour is the shape?", "blue", (20, 40, 220))]


def _setup(model_dir: str, length: int):
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vigos.data.rows import Example
    from vigos.method.teachers import make_teacher_policy
    from vigos.rollout.hf import HFGenerateRollout, SamplingParams
    from vigos.training.config import ViGOSConfig
    from vigos.training.recipe import apply_lora

    torch.manual_seed(0)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    # The default adapter: the release's module names, the vision blocks' MLP included.
    model = apply_lora(model, ViGOSConfig(output_dir=tempfile.mkdtemp(), report_to="none", lora_r=16, lora_alpha=32))
    model.train()
    teacher = make_teacher_policy("fixed", model)
    params = SamplingParams(temperature=1.1, top_p=0.95, top_k=20, max_new_tokens=length, min_new_tokens=length)
    paths = {}
    for name, naive in (("naive", True), ("ours", False)):
        config = ViGOSConfig(output_dir=tempfile.mkdtemp(), report_to="none", naive_loss=naive)
        rollout = HFGenerateRollout(processor, params, merge_lora=not naive, sampler="generate" if naive else "lean")
        paths[name] = (rollout, config.build_scorer(processor, teacher=teacher))
    examples = [
        Example(question=q, answer=a, image=Image.new("RGB", (112, 112), colour), row=i, meta={})
        for i, (q, a, colour) in enumerate(QUESTIONS)
    ]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-6)
    return model, paths, examples, optimizer


def _student_grad_clock(model) -> dict[str, float]:
    """Records when backward reaches the student's final hidden states (the loss's share of backward ends there)."""
    from vigos.models.modeling import _final_norm

    seen: dict[str, float] = {}

    def on_forward(_module, _inputs, output):
        if output.requires_grad:
            output.register_hook(lambda grad: seen.__setitem__("reached", time.perf_counter()))

    _final_norm(model).register_forward_hook(on_forward)
    return seen


def _step(model, rollout, scorer, examples, optimizer, clock) -> dict[str, float]:
    import torch

    cpu = time.process_time()
    start = time.perf_counter()
    completions = rollout(model, examples)
    rolled = time.perf_counter()
    scored = scorer(model, examples, completions)
    backward_start = time.perf_counter()
    scored.loss.backward()
    backward_end = time.perf_counter()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 0.1)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    end = time.perf_counter()
    loss_backward = clock["reached"] - backward_start
    times = {
        "rollout": rolled - start,
        "teachers": scored.metrics["time_teachers"],  # the shared vision encode runs inside it
        "student": scored.metrics["time_student"] + (backward_end - clock["reached"]),
        "loss": scored.metrics["time_loss"] + loss_backward,
    }
    times["other"] = (end - start) - sum(times.values())
    times["total"] = end - start
    times["cpu"] = time.process_time() - cpu
    times["completion_tokens"] = sum(len(c) for c in completions)
    times["valid_rate"] = scored.metrics["valid_rate"]
    return times


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    # A 5M-parameter model gains nothing from a second thread, and on a shared
    # machine a descheduled OpenMP worker stalls every small op at its barrier.
    torch.set_num_threads(spec["threads"])
    model, paths, examples, optimizer = _setup(spec["model_dir"], spec["length"])
    clock = _student_grad_clock(model)
    torch.manual_seed(1)
    order = list(paths) if spec["path"] == "both" else [spec["path"]]
    for name in order:  # warm-up: first-call costs are not a step's
        _step(model, *paths[name], examples, optimizer, clock)
    steps: dict[str, list[dict[str, float]]] = {name: [] for name in order}
    for index in range(spec["steps"]):
        for name in order if index % 2 == 0 else order[::-1]:
            steps[name].append(_step(model, *paths[name], examples, optimizer, clock))
    return {**spec, "steps_detail": steps, "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _describe(model_dir: str) -> str:
    """The benchmark model in words, read from its checkpoint (sizes are the tokenizer's and preset's)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(model_dir)
    text, vision = config.text_config, config.vision_config
    parameters = sum(p.numel() for p in AutoModelForImageTextToText.from_pretrained(model_dir).parameters())
    return (
        f"tiny qwen2_5_vl 'small', {parameters / 1e6:.1f}M parameters (text hidden {text.hidden_size}, "
        f"{text.num_hidden_layers} layers, vocabulary {text.vocab_size:,}; vision depth {vision.depth})"
    )


def _run_child(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {spec} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _summary(path: str, length: int, steps: list[dict[str, float]], max_rss_bytes: int) -> dict[str, Any]:
    medians = {k: statistics.median(s[k] for s in steps) for k in (*STAGES, "total", "cpu")}
    return dict(
        path=path,
        length=length,
        steps=len(steps),
        time_s=medians["total"],
        cpu_s=medians["cpu"],
        times_s=[s["total"] for s in steps],
        stages_s={k: medians[k] for k in STAGES},
        shares={k: medians[k] / medians["total"] for k in STAGES},
        max_rss_bytes=max_rss_bytes,
        completion_tokens=steps[0]["completion_tokens"],
        valid_rate=statistics.mean(s["valid_rate"] for s in steps),
    )


def run(*, lengths: tuple[int, ...] = (64, 256), steps: int = 6, threads: int = 1, log=print) -> dict[str, Any]:
    """The step benchmark at each completion length: naive vs ours, medians over ``steps`` alternating steps each."""
    from vigos.models.tiny import make_tiny

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(make_tiny("qwen2_5_vl", Path(tmp) / "small", size="small"))
        model_text = _describe(model_dir)
        rows, comparisons = [], []
        for length in lengths:
            base = dict(model_dir=model_dir, length=length, threads=threads)
            timed = _run_child({**base, "path": "both", "steps": steps})
            memory = {
                name: _run_child({**base, "path": name, "steps": 1})["max_rss_bytes"] for name in ("naive", "ours")
            }
            summaries = {name: _summary(name, length, timed["steps_detail"][name], memory[name]) for name in memory}
            for name, row in summaries.items():
                log(f"step  L={length:4d} {name:5s}: " + " ".join(f"{t:.2f}" for t in row["times_s"]) + " s")
            rows += list(summaries.values())
            naive_row, ours_row = summaries["naive"], summaries["ours"]
            comparisons.append(
                dict(
                    length=length,
                    time_ratio=ours_row["time_s"] / naive_row["time_s"],
                    cpu_ratio=ours_row["cpu_s"] / naive_row["cpu_s"],
                    speedup=naive_row["time_s"] / ours_row["time_s"],
                    memory_ratio=ours_row["max_rss_bytes"] / naive_row["max_rss_bytes"],
                )
            )
    settings = dict(
        model=model_text,
        lora_r=16,
        prompts_per_step=2,
        sampling="temperature 1.1, top-p 0.95, top-k 20",
        steps=steps,
        dtype="float32",
        torch_threads=threads,
    )
    return {"settings": settings, "rows": rows, "comparisons": comparisons}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--lengths", type=int, nargs="*", default=[64, 256])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", help="write the JSON result here")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    result = run(lengths=tuple(args.lengths), steps=args.steps)
    for row in result["rows"]:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in row["stages_s"].items())
        peak = row["max_rss_bytes"] / 2**20
        print(f"L={row['length']} {row['path']}: {row['time_s']:.2f} s ({stages}); peak RSS {peak:.0f} MiB")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
