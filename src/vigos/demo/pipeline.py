"""``vigos demo``: a miniature of the paper's experiment, offline, on a laptop CPU.

1. build a tiny Qwen2.5-VL (``make_tiny``);
2. generate the synthetic shortcut world (mostly prior-agreeing training rows,
   and a share of obscured ones whose colour cannot be read and whose
   reference answer is the prior's), and the same world without them;
3. warm-start the model (format, perception, use of a reference answer) and
   check what it states in each role (``warmstart.check_abilities``);
4. train OPSD and ViGOS from that warm start in each world: same data order,
   same seeds;
5. evaluate every model on held-out prior-agreeing, prior-conflicting and
   obscured items (Pass@k, Avg@k, ViLP-style Score and Prior) and measure what
   its descriptions state that the image does not show;
6. write one report (``demo.report``): the paired difference ViGOS - OPSD with
   a bootstrap interval per world, and the verdict it supports.

Every stage writes to ``out_dir`` and is skipped when its output is already
there, so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import set_seed

from vigos.data import synthetic
from vigos.data.examples import ExampleDataset
from vigos.data.rows import Example
from vigos.demo.jobs import Stage, pinned, run_jobs
from vigos.demo.results import PROBE_BENCHMARK
from vigos.demo.warmstart import TAUGHT_PERCEPTION, check_abilities, save_checkpoint, warm_start, warm_start_items
from vigos.errors import ConfigError
from vigos.eval.benchmarks import register_benchmark
from vigos.eval.items import Benchmark, EvalItem
from vigos.eval.options import EvalConfig
from vigos.eval.runner import run_eval
from vigos.models.loading import load_model_and_processor
from vigos.models.tiny import make_tiny
from vigos.training.config import ViGOSConfig
from vigos.training.recipe import apply_lora
from vigos.training.trainer import ViGOSTrainer

logger = logging.getLogger("vigos.demo")

BENCHMARK = "synthetic-vilp"
METHODS = ("opsd", "vigos")
# World settings: the headline one (with the shortcut rows) first.
SETTING_TITLES = {"shortcut": "With shortcut rows", "no_shortcut": "Without shortcut rows"}


@dataclass
class DemoConfig:
    """Sizes of the demo; ``quick()`` is the CI smoke run, the defaults the full one."""

    out_dir: str = "runs/demo"
    arch: str = "qwen2_5_vl"
    size: str = "mini"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    n_train: int = 192
    n_eval: int = 100
    train_conflict_fraction: float = 0.1
    # Training rows whose object is drawn grey (its colour cannot be read) and whose reference answer is
    # the text prior's; 0 gives the world without them. The report then also trains without them, so
    # that a reader sees which premise drives the result.
    shortcut_fraction: float = 0.25
    compare_without_shortcut: bool = True
    n_obscured_eval: int = 50
    # Held-out agreeing and conflicting items each run evaluates itself on, four times as it trains.
    probe_items: int = 16
    warm_steps: int = 500
    warm_batch_size: int = 16
    warm_learning_rate: float = 2e-3
    # Images of any kind in any colour for the teachers' abilities, and prior-agreeing rows beyond the
    # training split's for the student's format (see _warm_start).
    warm_any_colour_rows: int = 768
    warm_agreeing_rows: int = 576
    # Grey objects shown alone and described as grey, for the perception role. Off: in the one full run
    # with 96 such rows (AMD EPYC, 5 seeds) the perception role's colour reading fell from 100% to 79% of
    # prior-conflicting images and neither method learned to read colours (Score 3% OPSD, 10% ViGOS),
    # so the teachers never see a grey object before training.
    warm_grey_rows: int = 0
    train_steps: int = 40
    prompts_per_step: int = 8
    num_generations: int = 4
    learning_rate: float = 1e-3
    lora_r: int = 16
    # A clipped token gives no gradient, and the tokens where student and teachers disagree (the colour
    # on a conflicting image) have divergences of several nats: a clip of the release's size would mute them.
    token_loss_clip: float | None = None
    max_completion_length: int = 48
    eval_k: int = 4
    eval_batch_size: int = 16
    # Training and evaluation runs go to `workers` processes of `threads` torch threads each; the warm
    # start runs alone with workers x threads. The tiny model's operations are too small to keep two
    # threads busy: two 1-thread processes got through 20-37% more steps per minute than one 2-thread
    # process (2-core machine). Each run seeds itself, so the worker count never changes a result; the
    # thread count changes the order of floating-point sums (at this scale, by no digit of the report).
    workers: int = 2
    threads: int = 1

    @classmethod
    def quick(cls, out_dir: str = "runs/demo-quick") -> DemoConfig:
        """A smoke run: one seed, the tiny size, a few steps (a couple of minutes on 2 cores)."""
        return cls(
            out_dir=out_dir,
            size="tiny",
            seeds=(0,),
            n_train=48,
            n_eval=8,
            warm_steps=60,
            warm_any_colour_rows=48,
            warm_agreeing_rows=48,
            n_obscured_eval=4,
            probe_items=4,
            train_steps=3,
            prompts_per_step=4,
            num_generations=2,
            eval_k=2,
            max_completion_length=40,
        )


def settings(cfg: DemoConfig) -> dict[str, dict[str, str]]:
    """Each world setting the demo trains in (the headline first): its title and its runs' labels."""
    names = ["shortcut", "no_shortcut"] if cfg.shortcut_fraction > 0 else ["no_shortcut"]
    if cfg.shortcut_fraction > 0 and not cfg.compare_without_shortcut:
        names = ["shortcut"]
    return {
        name: {
            "title": SETTING_TITLES[name],
            **{method: method if index == 0 else f"{method}-{name}" for method in METHODS},
        }
        for index, name in enumerate(names)
    }


def premises(cfg: DemoConfig) -> list[str]:
    """The world's settings in words, as the report states them."""
    return [
        f"Training rows: {cfg.n_train}; {100 * cfg.train_conflict_fraction:.0f}% show a colour that contradicts "
        "the text prior stated in the question, and the reference answer is that colour.",
        f"Shortcut rows: {100 * cfg.shortcut_fraction:.0f}% of the training rows draw the object grey, so its colour "
        "cannot be read, and their reference answer is the text prior's colour, as answers in real data often "
        "follow the prior. A teacher that knows the answer can only make a description of such a row agree with "
        "the answer by stating a colour the image does not show.",
        "Warm start (what a pretrained VLM brings): the student answers from the prior; shown the image alone, "
        "the model is taught to describe kind, colour, size, position and printed text (the roles table shows "
        "what it learned); given the reference answer, it writes it. It never saw a reference answer that the "
        "image contradicts or cannot show"
        + (", nor a grey object." if not cfg.warm_grey_rows else "; it saw grey objects, described as grey."),
        f"Held out: {cfg.n_eval} prior-agreeing and {cfg.n_eval} prior-conflicting items (Prior and Score), and "
        f"{cfg.n_obscured_eval} obscured items, where any colour a description states other than grey is "
        "ungrounded.",
        "These settings were chosen from the paper's premises before any run and are not tuned to either method.",
    ]


def _examples(path: Path) -> list[Example]:
    """The split's rows as training examples."""
    return [Example(e.question, e.answer, e.image, i, e.to_row()) for i, e in enumerate(synthetic.read_split(path))]


def register_world_benchmark(world_dir: Path, *, name: str = BENCHMARK, per_split: int | None = None) -> None:
    """The synthetic eval splits as a benchmark: Score on conflicting images, Prior on agreeing ones. With
    ``per_split``, the first that many agreeing and conflicting items only (the training runs' probe)."""
    splits = ("eval_agree", "eval_conflict") if per_split else ("eval_agree", "eval_conflict", "eval_obscured")

    def load(benchmark: Benchmark, root: Path) -> Iterator[EvalItem]:
        for split in splits:
            if not (root / split / "data.jsonl").exists():
                continue
            for e in synthetic.read_split(root / split / "data.jsonl")[:per_split]:
                yield EvalItem(
                    benchmark=benchmark.name,
                    id=f"{split}/{e.id}",
                    question=e.question,
                    image=e.image,
                    answer=e.answer,
                    category="obscured" if e.obscured else e.question_type,
                    split="obscured" if e.obscured else "conflict" if e.conflict else "agree",
                    # Obscured items are neither side of Score and Prior.
                    conflict=None if e.obscured else e.conflict,
                    grader="exact",
                    meta={"prior_answer": e.prior_answer, "kind": e.scene.kind},
                )

    register_benchmark(
        Benchmark(
            name=name,
            description="The demo's synthetic world: prior-agreeing and prior-conflicting images.",
            expected_layout=(
                "<world>/eval_agree/data.jsonl and <world>/eval_conflict/data.jsonl "
                "from vigos.data.synthetic.make_world"
            ),
            loader=load,
            folder=".",
        ),
        replace=True,
    )


# The make_any_colour_split seed of the warm start's teacher rows (its own and the check's).
_TEACHER_ROWS_SEED = 1


def _warm_start(cfg: DemoConfig, model_dir: Path, train: Path, out: Path) -> Path:
    """Give the model what a pretrained VLM brings: the teachers' abilities, and the student's text prior.

    The perception, reasoning and reference abilities are taught on images of
    any kind in any colour (``make_any_colour_split``), where neither the
    description nor the reference answer can be guessed from the object's
    kind: the model must read the pixels when shown the image alone, and
    copy the answer when it is in the prompt. The student's format is taught
    on prior-agreeing rows only (those of the training split and more from
    elsewhere, so that the student's share of the data keeps up with the
    teachers'): its answers to a question carry the text prior, the
    shortcut that OPSD and ViGOS then train against on the conflicting rows.
    """
    if (out / "config.json").exists():
        return out
    model, processor = load_model_and_processor(str(model_dir), dtype=torch.float32)
    # The student's format from rows whose image shows the prior colour (not the obscured ones).
    agreeing = [e for e in synthetic.read_split(train) if not e.conflict and not e.obscured]
    agreeing += synthetic.make_split(cfg.warm_agreeing_rows, conflict_fraction=0.0, seed=3)
    # Synthetic examples carry question, answer and image, all that warm_start_items reads.
    items = warm_start_items(agreeing, synthetic.warmup_target, ("student",))
    items += warm_start_items(
        synthetic.make_any_colour_split(cfg.warm_any_colour_rows, seed=_TEACHER_ROWS_SEED),
        synthetic.warmup_target,
        ("perception", "reasoning", "reference"),
    )
    if cfg.warm_grey_rows:
        grey = synthetic.make_any_colour_split(cfg.warm_grey_rows, seed=4, colours=(synthetic.OBSCURED_COLOUR,))
        items += warm_start_items(grey, synthetic.warmup_target, ("perception",))
    with tqdm(total=cfg.warm_steps, desc="warm start", unit="step", dynamic_ncols=True) as bar:

        def advance(step: int, loss: float) -> None:
            bar.set_postfix(loss=f"{loss:.3f}")
            bar.update()

        losses = warm_start(
            model,
            processor,
            items,
            steps=cfg.warm_steps,
            batch_size=cfg.warm_batch_size,
            learning_rate=cfg.warm_learning_rate,
            seed=0,
            progress=advance,
        )
    save_checkpoint(model, processor, out)
    (out / "warm_start_losses.json").write_text(json.dumps(losses))
    return out


def _check_warm_start(cfg: DemoConfig, warm_dir: Path) -> dict[str, dict[str, float]]:
    """Whether the warm start can play each role, on fresh prior-conflicting images (not the evaluation ones)."""
    path = warm_dir / "abilities.json"
    if path.exists():
        return json.loads(path.read_text())
    model, processor = load_model_and_processor(str(warm_dir), dtype=torch.float32)
    rows = synthetic.make_split(cfg.n_eval, conflict_fraction=1.0, seed=2)
    abilities = check_abilities(
        model, processor, rows, [e.prior_answer for e in rows], max_new_tokens=cfg.max_completion_length
    )
    # The perception role again on images it was taught on (the warm start's own rows): an attribute it
    # misses there too was never learned; one it states there but not on fresh images was memorised.
    taught = synthetic.make_any_colour_split(cfg.warm_any_colour_rows, seed=_TEACHER_ROWS_SEED)[: cfg.n_eval]
    abilities[TAUGHT_PERCEPTION] = check_abilities(
        model,
        processor,
        taught,
        [e.prior_answer for e in taught],
        max_new_tokens=cfg.max_completion_length,
        roles=("perception",),
    )["perception"]
    path.write_text(json.dumps(abilities, indent=1))
    return abilities


def _train(
    cfg: DemoConfig, warm_dir: Path, train_split: Path, eval_world: Path, method: str, seed: int, out: Path
) -> Path:
    if (out / "adapter_config.json").exists():
        return out
    train = _examples(train_split)
    # In this process: a worker starts with an empty registry.
    register_world_benchmark(eval_world, name=PROBE_BENCHMARK, per_split=cfg.probe_items)
    model, processor = load_model_and_processor(str(warm_dir), dtype=torch.float32)
    args = ViGOSConfig(
        output_dir=str(out),
        method=method,
        seed=seed,
        data_seed=seed,
        max_steps=cfg.train_steps,
        per_device_train_batch_size=cfg.prompts_per_step,
        num_generations=cfg.num_generations,
        learning_rate=cfg.learning_rate,
        max_grad_norm=1.0,
        lr_scheduler_type="constant",
        max_completion_length=cfg.max_completion_length,
        lora_r=cfg.lora_r,
        lora_alpha=2 * cfg.lora_r,
        lora_dropout=0.0,
        token_loss_clip=cfg.token_loss_clip,
        description_end_clip=cfg.token_loss_clip,
        reasoning_start_clip=cfg.token_loss_clip,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        log_completions_steps=max(cfg.train_steps // 4, 1),
        # Twice per run (half way and at the end): the report's diagnostic curves.
        diagnostics_steps=max(cfg.train_steps // 2, 1),
        diagnostics_sample_size=4,
        # Four times per run: Score and Prior on a few held-out items, as curves in the report.
        eval_benchmarks=[PROBE_BENCHMARK],
        eval_data_dir=str(eval_world),
        eval_steps=max(cfg.train_steps // 4, 1),
        eval_limit=None,
        eval_k=1,
    )
    # The adapter's initial weights are drawn here, before the Trainer seeds anything:
    # seed them, or a run's result depends on what ran before it in this process.
    set_seed(seed)
    model = apply_lora(model, args)
    trainer = ViGOSTrainer(model, args, ExampleDataset(train), processor)
    trainer.train()
    trainer.save_model(str(out))
    return out


def _evaluate(cfg: DemoConfig, model: str, world: Path, name: str, seed: int, out: Path) -> dict[str, Any]:
    register_world_benchmark(world)  # in this process: a worker starts with an empty registry
    config = EvalConfig(
        model=model,
        benchmarks=[BENCHMARK],
        data_dir=str(world),
        out_dir=str(out),
        k=cfg.eval_k,
        max_new_tokens=cfg.max_completion_length,
        batch_size=cfg.eval_batch_size,
        seed=seed,
        engine="hf",
        run_name=name,
    )
    return run_eval(config)


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run every stage (skipping finished ones) and write the report; returns the report's data."""
    for name in ("workers", "threads"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"DemoConfig.{name} must be at least 1, got {getattr(cfg, name)}")
    with pinned(cfg.workers * cfg.threads):
        return _run_stages(cfg)


def _run_stages(cfg: DemoConfig) -> dict[str, Any]:
    from vigos.demo.report import write_demo_report

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_config.json").write_text(json.dumps(asdict(cfg), indent=1))
    started = time.time()
    world_settings = settings(cfg)
    with Stage(f"1/6 tiny {cfg.arch} ({cfg.size})"):
        model_dir = make_tiny(cfg.arch, out / "model", size=cfg.size)
    with Stage(
        f"2/6 synthetic world ({cfg.n_train} train, {cfg.n_eval}+{cfg.n_eval}+{cfg.n_obscured_eval} eval; "
        f"{', '.join(world_settings)})"
    ):
        # One world per setting (the one without shortcut rows always: the warm start reads it); the same
        # seed, so their evaluation splits are the same items.
        worlds = {
            setting: synthetic.make_world(
                out / "world" / setting,
                n_train=cfg.n_train,
                n_eval=cfg.n_eval,
                train_conflict_fraction=cfg.train_conflict_fraction,
                train_obscured_fraction=cfg.shortcut_fraction if setting == "shortcut" else 0.0,
                n_obscured_eval=cfg.n_obscured_eval,
                seed=0,
            )
            for setting in {**world_settings, "no_shortcut": None}
        }
        eval_world = out / "world" / next(iter(world_settings))
    with Stage(f"3/6 warm start ({cfg.warm_steps} steps)"):
        # The same warm start for every setting: the student's format from the world without shortcut rows.
        warm_dir = _warm_start(cfg, model_dir, worlds["no_shortcut"]["train"], out / "warm_start")
        _check_warm_start(cfg, warm_dir)
    train_jobs = {
        f"{names[method]} seed {seed}": partial(
            _train,
            cfg,
            warm_dir,
            worlds[setting]["train"],
            eval_world,
            method,
            seed,
            out / "train" / f"{names[method]}-s{seed}",
        )
        for setting, names in world_settings.items()
        for seed in cfg.seeds
        for method in METHODS
    }
    trained = run_jobs(
        f"4/6 train ({cfg.train_steps} steps)",
        train_jobs,
        {title for title, job in train_jobs.items() if (job.args[-1] / "adapter_config.json").exists()},
        workers=cfg.workers,
        threads=cfg.threads,
    )
    labels = ["warm_start"] + [names[method] for names in world_settings.values() for method in METHODS]
    eval_jobs = {
        f"{label} seed {seed}": partial(
            _evaluate,
            cfg,
            str(warm_dir if label == "warm_start" else trained[f"{label} seed {seed}"]),
            eval_world,
            label,
            seed,
            out / "eval" / f"{label}-s{seed}",
        )
        for seed in cfg.seeds
        for label in labels
    }
    evaluated = run_jobs(
        "5/6 evaluate",
        eval_jobs,
        {title for title, job in eval_jobs.items() if (job.args[-1] / "summary.json").exists()},
        workers=cfg.workers,
        threads=cfg.threads,
    )
    summaries = {label: {seed: evaluated[f"{label} seed {seed}"] for seed in cfg.seeds} for label in labels}
    with Stage("6/6 report"):
        report = write_demo_report(
            out, cfg, summaries, settings=world_settings, premises=premises(cfg), elapsed_s=time.time() - started
        )
    for setting, names in world_settings.items():
        print(f"{names['title']}:\n{report['tables'][setting]}")
    print(report["verdict"])
    print(f"[demo] report: {report['html']}")
    return report


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``vigos demo`` options."""
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few minutes (one seed, tiny model)")
    parser.add_argument("--out", help="output folder (default: runs/demo, or runs/demo-quick with --quick)")
    parser.add_argument(
        "--threads",
        type=int,
        help=f"torch threads per training or evaluation process (default {DemoConfig.threads}); the numbers "
        "move with it",
    )
    parser.add_argument(
        "--workers", type=int, help=f"training and evaluation processes run side by side (default {DemoConfig.workers})"
    )


def demo_command(args: argparse.Namespace) -> int:
    """Run ``vigos demo``."""
    cfg = DemoConfig.quick() if args.quick else DemoConfig()
    if args.out:
        cfg.out_dir = args.out
    for name in ("threads", "workers"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise ConfigError(f"--{name} must be at least 1, got {value}")
            setattr(cfg, name, value)
    run_demo(cfg)
    return 0
