"""``vigos demo``: a miniature of the paper's experiment, offline, on a laptop CPU.

1. build a tiny Qwen2.5-VL (``make_tiny``);
2. generate the synthetic shortcut world (mostly prior-agreeing training rows);
3. warm-start the model (format, perception, use of a reference answer);
4. train OPSD and ViGOS from that warm start: same data order, same seeds;
5. evaluate the warm start, OPSD and ViGOS on held-out prior-agreeing and
   prior-conflicting splits (Pass@k, Avg@k, ViLP-style Score and Prior) and
   measure how grounded each model's descriptions are;
6. write one report (``demo_report``) and print its table.

Every stage writes to ``out_dir`` and is skipped when its output is already
there, so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from tqdm.auto import tqdm

from . import synthetic
from .config import ViGOSConfig
from .data import Example, ExampleDataset
from .eval.benchmarks import Benchmark, EvalItem, register_benchmark
from .eval.runner import EvalConfig, run_eval
from .recipe import apply_lora, load_model_and_processor
from .tiny import make_tiny
from .trainer import ViGOSTrainer
from .warmstart import save_checkpoint, warm_start, warm_start_items

logger = logging.getLogger("vigos.demo")

BENCHMARK = "synthetic-vilp"
METHODS = ("opsd", "vigos")


@dataclass
class DemoConfig:
    """Sizes of the demo; ``quick()`` is the CI smoke run, the defaults the full one."""

    out_dir: str = "runs/demo"
    arch: str = "qwen2_5_vl"
    size: str = "mini"
    seeds: tuple[int, ...] = (0, 1, 2)
    n_train: int = 192
    n_eval: int = 24
    train_conflict_fraction: float = 0.1
    warm_steps: int = 100
    warm_batch_size: int = 16
    warm_learning_rate: float = 2e-3
    train_steps: int = 16
    prompts_per_step: int = 4
    num_generations: int = 2
    learning_rate: float = 5e-4
    lora_r: int = 16
    token_loss_clip: float = 0.5
    max_completion_length: int = 48
    eval_k: int = 4
    eval_batch_size: int = 8
    threads: int = 2

    @classmethod
    def quick(cls, out_dir: str = "runs/demo-quick") -> "DemoConfig":
        """A smoke run: one seed, the tiny size, a few steps (a couple of minutes on 2 cores)."""
        return cls(out_dir=out_dir, size="tiny", seeds=(0,), n_train=48, n_eval=8, warm_steps=60, train_steps=3,
                   eval_k=2, max_completion_length=40)


class _Stage:
    """Prints a one-line summary of a stage and its duration."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self) -> "_Stage":
        self.start = time.time()
        print(f"[demo] {self.name} ...", flush=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            print(f"[demo] {self.name}: done in {time.time() - self.start:.0f} s", flush=True)


def _examples(path: Path) -> tuple[list[Example], dict[int, str]]:
    """The split's rows as examples, and each row's ideal completion (for the warm start)."""
    world = synthetic.read_split(path)
    examples = [Example(e.question, e.answer, e.image, i, e.to_row()) for i, e in enumerate(world)]
    return examples, {i: synthetic.warmup_target(e) for i, e in enumerate(world)}


def register_world_benchmark(world_dir: Path) -> None:
    """The synthetic eval splits as a benchmark: Score on conflicting images, Prior on agreeing ones."""

    def load(benchmark: Benchmark, root: Path) -> Iterator[EvalItem]:
        for split in ("eval_agree", "eval_conflict"):
            for e in synthetic.read_split(root / split / "data.jsonl"):
                yield EvalItem(benchmark=benchmark.name, id=f"{split}/{e.id}", question=e.question, image=e.image,
                               answer=e.answer, category=e.question_type, split="conflict" if e.conflict else "agree",
                               conflict=e.conflict, grader="exact",
                               meta={"prior_answer": e.prior_answer, "kind": e.scene.kind})

    register_benchmark(Benchmark(
        name=BENCHMARK, description="The demo's synthetic world: prior-agreeing and prior-conflicting images.",
        expected_layout="<world>/eval_agree/data.jsonl and <world>/eval_conflict/data.jsonl from vigos.synthetic.make_world",
        loader=load, folder="."), replace=True)


def _warm_start(cfg: DemoConfig, model_dir: Path, train: list[Example], targets: dict[int, str], out: Path) -> Path:
    """Format and answer use from the (shortcut-prone) training rows; perception from images of every colour.

    Describing an image is a skill of its own that the perception teacher
    needs; it is taught on a balanced set of images, so that only the
    student's question-conditioned answers carry the text prior.
    """
    if (out / "config.json").exists():
        return out
    model, processor = load_model_and_processor(str(model_dir), dtype=torch.float32)
    balanced = synthetic.make_split(len(train), conflict_fraction=0.5, seed=1)
    items = warm_start_items(train, lambda example: targets[example.row], ("student", "reasoning", "reference"))
    items += warm_start_items([Example(e.question, e.answer, e.image, i) for i, e in enumerate(balanced)],
                              lambda example: synthetic.warmup_target(balanced[example.row]), ("perception",))
    with tqdm(total=cfg.warm_steps, desc="warm start", unit="step", dynamic_ncols=True) as bar:
        def advance(step: int, loss: float) -> None:
            bar.set_postfix(loss=f"{loss:.3f}")
            bar.update()

        losses = warm_start(model, processor, items, steps=cfg.warm_steps, batch_size=cfg.warm_batch_size,
                            learning_rate=cfg.warm_learning_rate, seed=0, progress=advance)
    save_checkpoint(model, processor, out)
    (out / "warm_start_losses.json").write_text(json.dumps(losses))
    return out


def _train(cfg: DemoConfig, warm_dir: Path, train: list[Example], method: str, seed: int, out: Path) -> Path:
    if (out / "adapter_config.json").exists():
        return out
    model, processor = load_model_and_processor(str(warm_dir), dtype=torch.float32)
    args = ViGOSConfig(
        output_dir=str(out), method=method, seed=seed, data_seed=seed, max_steps=cfg.train_steps,
        per_device_train_batch_size=cfg.prompts_per_step, num_generations=cfg.num_generations,
        learning_rate=cfg.learning_rate, max_grad_norm=1.0, lr_scheduler_type="constant",
        max_completion_length=cfg.max_completion_length, lora_r=cfg.lora_r, lora_alpha=2 * cfg.lora_r,
        lora_dropout=0.0, token_loss_clip=cfg.token_loss_clip, description_end_clip=cfg.token_loss_clip,
        reasoning_start_clip=cfg.token_loss_clip, logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=True, log_completions_steps=max(cfg.train_steps // 4, 1),
        diagnostics_steps=cfg.train_steps, diagnostics_sample_size=4,
    )
    model = apply_lora(model, args)
    trainer = ViGOSTrainer(model, args, ExampleDataset(train), processor)
    trainer.train()
    trainer.save_model(str(out))
    return out


def _evaluate(cfg: DemoConfig, model: str, world: Path, name: str, seed: int, out: Path) -> dict[str, Any]:
    config = EvalConfig(model=model, benchmarks=[BENCHMARK], data_dir=str(world), out_dir=str(out), k=cfg.eval_k,
                        max_new_tokens=cfg.max_completion_length, batch_size=cfg.eval_batch_size, seed=seed,
                        engine="hf", run_name=name)
    return run_eval(config)


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run every stage (skipping finished ones) and write the report; returns the report's data."""
    from .demo_report import write_demo_report

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_config.json").write_text(json.dumps(asdict(cfg), indent=1))
    started = time.time()
    with _Stage(f"1/6 tiny {cfg.arch} ({cfg.size})"):
        model_dir = make_tiny(cfg.arch, out / "model", size=cfg.size)
    with _Stage(f"2/6 synthetic world ({cfg.n_train} train, {cfg.n_eval}+{cfg.n_eval} eval)"):
        world = synthetic.make_world(out / "world", n_train=cfg.n_train, n_eval=cfg.n_eval,
                                     train_conflict_fraction=cfg.train_conflict_fraction, seed=0)
        train, targets = _examples(world["train"])
        register_world_benchmark(out / "world")
    with _Stage(f"3/6 warm start ({cfg.warm_steps} steps)"):
        warm_dir = _warm_start(cfg, model_dir, train, targets, out / "warm_start")
    runs: dict[str, dict[int, Path]] = {method: {} for method in METHODS}
    for seed in cfg.seeds:
        for method in METHODS:
            with _Stage(f"4/6 train {method} seed {seed} ({cfg.train_steps} steps)"):
                runs[method][seed] = _train(cfg, warm_dir, train, method, seed, out / "train" / f"{method}-s{seed}")
    summaries: dict[str, dict[int, dict[str, Any]]] = {"warm_start": {}, **{m: {} for m in METHODS}}
    for seed in cfg.seeds:
        with _Stage(f"5/6 evaluate seed {seed}"):
            summaries["warm_start"][seed] = _evaluate(cfg, str(warm_dir), out / "world", "warm_start", seed,
                                                      out / "eval" / f"warm_start-s{seed}")
            for method in METHODS:
                summaries[method][seed] = _evaluate(cfg, str(runs[method][seed]), out / "world", method, seed,
                                                    out / "eval" / f"{method}-s{seed}")
    with _Stage("6/6 report"):
        report = write_demo_report(out, cfg, summaries, elapsed_s=time.time() - started)
    print(report["table"])
    print(report["verdict"])
    print(f"[demo] report: {report['html']}")
    return report


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``vigos demo`` options."""
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few minutes (one seed, tiny model)")
    parser.add_argument("--out", help="output folder (default: runs/demo, or runs/demo-quick with --quick)")


def demo_command(args: argparse.Namespace) -> int:
    """Run ``vigos demo``."""
    cfg = DemoConfig.quick() if args.quick else DemoConfig()
    if args.out:
        cfg.out_dir = args.out
    run_demo(cfg)
    return 0
