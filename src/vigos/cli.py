"""The ``vigos`` command: one subcommand per job, each with its own parser.

``vigos train --config FILE.yaml [--key value ...]`` reads every option of
:class:`vigos.training.config.ViGOSConfig` from YAML, then applies command-line
overrides on top. A command-line value is read as the same text in the file
would be, and both are checked against the option's type by one rule
(:func:`convert_value`). An unknown key is an error that lists the close
matches; a bad file or value is one line naming the file or option (exit 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence

from vigos.errors import ConfigError, VigosError
from vigos.training.checkpoints import DiskFullError
from vigos.training.config_file import load_config, parse_overrides


def _train(args: argparse.Namespace) -> int:
    from vigos.training.recipe import train

    if args.help_options:
        print(_train_options_help())
        return 0
    if args.accelerate_config or args.num_processes is not None:
        return _launch(args)
    config = load_config(args.config, parse_overrides(args.overrides))
    out = train(config)
    print(f"saved to {out}")
    return 0


def _train_options_help() -> str:
    """Every option ViGOS adds to ``TrainingArguments``, with its help and default."""
    from vigos.training.config import ViGOSConfig

    inherited = {f.name for f in dataclasses.fields(ViGOSConfig.__mro__[1])}
    lines = ["ViGOS options (in the YAML file, or on the command line as --key value):"]
    for f in dataclasses.fields(ViGOSConfig):
        if f.name not in inherited or f.name in ViGOSConfig.__dict__.get("__annotations__", {}):
            default = f.default if f.default is not dataclasses.MISSING else "..."
            lines.append(f"  --{f.name}: {f.metadata.get('help', '')} (default: {default})")
    lines.append(
        "Every transformers.TrainingArguments option is accepted too (--learning_rate, --max_steps, "
        "--report_to, --save_steps, ...)."
    )
    return "\n".join(lines)


class _TrainHelp(argparse.Action):
    """``vigos train --help``: the command's own arguments, then every ViGOS option."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show this help and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        parser.print_help()
        print("\n" + _train_options_help())
        parser.exit()


def _launch(args: argparse.Namespace) -> int:
    """Run this same training under ``accelerate launch`` (``--accelerate_config``, ``--num_processes``),
    as TRL's CLI does: each process then runs ``vigos train`` with the config and overrides."""
    import subprocess

    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if args.accelerate_config:
        command += ["--config_file", args.accelerate_config]
    if args.num_processes is not None:
        if args.num_processes < 1:
            raise ConfigError(f"--num_processes must be at least 1, got {args.num_processes}")
        command += ["--num_processes", str(args.num_processes)]
    command += ["-m", "vigos.cli", "train"]
    if args.config:
        command += ["--config", args.config]
    return subprocess.run([*command, *args.overrides]).returncode


def _make_tiny(args: argparse.Namespace) -> int:
    from vigos.models.qwen_vocab import QwenVocabUnavailable
    from vigos.models.tiny import DEFAULT_SIZE, make_tiny

    size = args.size or DEFAULT_SIZE[args.vocab]
    try:
        out = make_tiny(args.arch, args.out, size=size, seed=args.seed, vocab=args.vocab)
    except (QwenVocabUnavailable, ValueError) as error:
        # One line that says what to install or which option to change, not a traceback.
        raise ConfigError(str(error)) from error
    print(f"wrote a tiny {args.arch} ({size}, {args.vocab} vocabulary) to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``vigos`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="vigos", description="Visually grounded on-policy self-distillation for VLMs."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train",
        help="post-train a VLM with ViGOS or OPSD",
        description="Train from a YAML config; any option below can be overridden as --key value.",
        add_help=False,
    )
    train.add_argument("-h", "--help", action=_TrainHelp)
    train.add_argument("--config", help="YAML file of ViGOSConfig options")
    train.add_argument("--help-options", action="store_true", help="list the ViGOS options and exit")
    train.add_argument(
        "--accelerate_config",
        metavar="FILE",
        help="run under `accelerate launch --config_file FILE` (configs/accelerate/ has DDP, FSDP, DeepSpeed)",
    )
    train.add_argument("--num_processes", type=int, metavar="N", help="run under `accelerate launch` with N processes")
    train.set_defaults(handler=_train)

    tiny = commands.add_parser("make-tiny", help="write a tiny random VLM of a real architecture, offline")
    tiny.add_argument(
        "--arch",
        default="qwen2_5_vl",
        help="qwen2_5_vl, qwen2_vl, qwen3_vl, gemma3, llava_onevision or idefics3 (the last three: --vocab trained)",
    )
    tiny.add_argument("--out", required=True, help="output directory")
    tiny.add_argument("--size", help="size preset: tiny, mini, small or micro (default: tiny; micro with --vocab qwen)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument(
        "--vocab",
        choices=("trained", "qwen"),
        default="trained",
        help=(
            "trained: a small BPE trained on a built-in corpus; qwen: Qwen's real 151,643-token vocabulary "
            "(needs pip install quicktok-v1)"
        ),
    )
    tiny.set_defaults(handler=_make_tiny)

    from vigos.demo.pipeline import add_demo_arguments, demo_command
    from vigos.eval.command import add_eval_arguments, eval_command

    evaluate = commands.add_parser("eval", help="sample k answers per question and grade them (Pass@k, Avg@k, ViLP)")
    add_eval_arguments(evaluate)
    evaluate.set_defaults(handler=eval_command)

    from vigos.diagnose import add_diagnose_arguments, diagnose_command

    diagnose = commands.add_parser(
        "diagnose", help="shortcut diagnostics: grounding, leakage, teacher image reliance, image sensitivity"
    )
    add_diagnose_arguments(diagnose)
    diagnose.set_defaults(handler=diagnose_command)

    from vigos.export import add_export_arguments, export_command

    export = commands.add_parser("export", help="merge a LoRA adapter into its base model; write a standalone model")
    add_export_arguments(export)
    export.set_defaults(handler=export_command)

    demo = commands.add_parser("demo", help="the paper's experiment in miniature, offline on a CPU, with a report")
    add_demo_arguments(demo)
    demo.set_defaults(handler=demo_command)

    from vigos.serve.command import add_serve_arguments, serve_command

    serve = commands.add_parser(
        "serve", help="serve a model through the OpenAI-compatible API subset of vLLM rollouts (CPU or one GPU)"
    )
    add_serve_arguments(serve)
    serve.set_defaults(handler=serve_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vigos`` command."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        # Only `train` takes --key value overrides of its config; elsewhere a stray argument is an error.
        if rest and args.command != "train":
            raise ConfigError(f"unexpected arguments: {' '.join(rest)}")
        args.overrides = rest
        return args.handler(args)
    except (VigosError, FileNotFoundError) as error:
        print(f"vigos {args.command}: {error}", file=sys.stderr)
        return 2
    except DiskFullError as error:  # not a usage error (2): the same command can run once there is room
        print(f"vigos {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
