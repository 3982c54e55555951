"""The ``vigos`` command: one subcommand per job, each with its own parser.

``vigos train --config FILE.yaml [--key value ...]`` reads every option of
:class:`vigos.config.ViGOSConfig` from YAML, then applies command-line
overrides on top. An unknown key is an error that lists the close matches.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import sys
import types
import typing
from pathlib import Path
from typing import Any, Sequence

import yaml

from .config import ConfigError
from .data import DataError


def _config_fields() -> dict[str, Any]:
    from .config import ViGOSConfig

    hints = typing.get_type_hints(ViGOSConfig)
    return {f.name: hints.get(f.name, str) for f in dataclasses.fields(ViGOSConfig) if f.init}


def _unknown_key(key: str, valid: Sequence[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else " Run `vigos train --help-options` to list the options."
    return ConfigError(f"unknown option {key!r} in {where}.{hint}")


def _coerce(key: str, raw: str, kind: Any) -> Any:
    """Turn a command-line string into the type of option ``key``."""
    args = typing.get_args(kind)
    if raw.strip().lower() in ("none", "null") and (type(None) in args):
        return None
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(a for a in args if a is not type(None))
    origin = typing.get_origin(kind)
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if origin is list:
            parsed = yaml.safe_load(raw)
            return parsed if isinstance(parsed, list) else [s.strip() for s in raw.split(",") if s.strip()]
        if origin is dict or kind is dict:
            return yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError):
        raise ConfigError(f"option {key!r}: cannot read {raw!r} as {getattr(kind, '__name__', kind)}") from None
    return raw


def parse_overrides(tokens: Sequence[str]) -> dict[str, str]:
    """``--key value`` / ``--key=value`` pairs into a dict of raw strings."""
    overrides: dict[str, str] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if not token.startswith("--"):
            raise ConfigError(f"unexpected argument {token!r}: overrides take the form --key value")
        key = token[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            index += 1
        elif index + 1 < len(tokens) and not tokens[index + 1].startswith("--"):
            value = tokens[index + 1]
            index += 2
        else:
            raise ConfigError(f"option --{key} needs a value")
        overrides[key.replace("-", "_")] = value
    return overrides


def load_config(path: str | Path | None, overrides: dict[str, str] | None = None):
    """Build a :class:`ViGOSConfig` from a YAML file and command-line overrides."""
    from .config import ViGOSConfig

    fields = _config_fields()
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {str(path)!r} not found")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of option: value")
        for key, value in loaded.items():
            if key not in fields:
                raise _unknown_key(key, list(fields), str(path))
            values[key] = value
    for key, raw in (overrides or {}).items():
        if key not in fields:
            raise _unknown_key(key, list(fields), "the command line")
        values[key] = _coerce(key, raw, fields[key])
    try:
        return ViGOSConfig(**values)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"invalid configuration: {error}") from None


def _train(args: argparse.Namespace) -> int:
    from .recipe import train

    if args.help_options:
        from .config import ViGOSConfig

        own = {f.name for f in dataclasses.fields(ViGOSConfig)} - {
            f.name for f in dataclasses.fields(ViGOSConfig.__mro__[1])
        }
        for f in dataclasses.fields(ViGOSConfig):
            if f.name in own:
                print(f"  --{f.name}: {f.metadata.get('help', '')} (default: {f.default if f.default is not dataclasses.MISSING else '...'})")
        print("Every transformers.TrainingArguments option is accepted too.")
        return 0
    config = load_config(args.config, parse_overrides(args.overrides))
    out = train(config)
    print(f"saved to {out}")
    return 0


def _make_tiny(args: argparse.Namespace) -> int:
    from .qwen_vocab import QwenVocabUnavailable
    from .tiny import DEFAULT_SIZE, make_tiny

    size = args.size or DEFAULT_SIZE[args.vocab]
    try:
        out = make_tiny(args.arch, args.out, size=size, seed=args.seed, vocab=args.vocab)
    except QwenVocabUnavailable as error:
        # One line that says what to install, not a traceback.
        raise ConfigError(str(error)) from error
    print(f"wrote a tiny {args.arch} ({size}, {args.vocab} vocabulary) to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``vigos`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(prog="vigos", description="Visually grounded on-policy self-distillation for VLMs.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="post-train a VLM with ViGOS or OPSD", description=(
        "Train from a YAML config; any option can be overridden as --key value."))
    train.add_argument("--config", help="YAML file of ViGOSConfig options")
    train.add_argument("--help-options", action="store_true", help="list the ViGOS options and exit")
    train.set_defaults(handler=_train)

    tiny = commands.add_parser("make-tiny", help="write a tiny random VLM of a real architecture, offline")
    tiny.add_argument("--arch", default="qwen2_5_vl", help="qwen2_5_vl, qwen2_vl or qwen3_vl")
    tiny.add_argument("--out", required=True, help="output directory")
    tiny.add_argument("--size", help="size preset: tiny, mini, small or micro (default: tiny; micro with --vocab qwen)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--vocab", choices=("trained", "qwen"), default="trained", help=(
        "trained: a small BPE trained on a built-in corpus; qwen: Qwen's real 151,643-token vocabulary "
        "(needs pip install quicktok-v1)"))
    tiny.set_defaults(handler=_make_tiny)

    from .demo import add_demo_arguments, demo_command
    from .eval.runner import add_eval_arguments, eval_command

    evaluate = commands.add_parser("eval", help="sample k answers per question and grade them (Pass@k, Avg@k, ViLP)")
    add_eval_arguments(evaluate)
    evaluate.set_defaults(handler=eval_command)

    from .diagnostics import add_diagnose_arguments, diagnose_command

    diagnose = commands.add_parser("diagnose", help="shortcut diagnostics: grounding, leakage, teacher image reliance, image sensitivity")
    add_diagnose_arguments(diagnose)
    diagnose.set_defaults(handler=diagnose_command)

    from .export import add_export_arguments, export_command

    export = commands.add_parser("export", help="merge a LoRA adapter into its base model; write a standalone model")
    add_export_arguments(export)
    export.set_defaults(handler=export_command)

    demo = commands.add_parser("demo", help="the paper's experiment in miniature, offline on a CPU, with a report")
    add_demo_arguments(demo)
    demo.set_defaults(handler=demo_command)

    from .serve import add_serve_arguments, serve_command

    serve = commands.add_parser("serve", help="serve a model through the OpenAI-compatible API subset of vLLM rollouts (CPU or one GPU)")
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
    except (ConfigError, DataError, FileNotFoundError) as error:
        print(f"vigos {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
