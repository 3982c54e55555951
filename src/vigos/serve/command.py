"""``vigos serve``: its options and the command."""

from __future__ import annotations

import argparse
import logging
import os

import torch

from vigos.serve.server import (
    API_KEY_ENV,
    DEFAULT_MAX_BODY_MB,
    DEFAULT_MAX_N,
    PolicyServer,
    _check_options,
    make_server,
)

logger = logging.getLogger(__name__)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``vigos serve`` options."""
    parser.add_argument("--model", required=True, help="checkpoint directory, hub id or tiny:<arch>")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", help="the base model's name in the API (default: --model)")
    parser.add_argument(
        "--api-key",
        help=f"require `Authorization: Bearer KEY` on every route but /health "
        f"(default: the environment variable {API_KEY_ENV}, which keeps the key "
        "out of the process list)",
    )
    parser.add_argument(
        "--max-body-mb",
        type=float,
        default=DEFAULT_MAX_BODY_MB,
        help="largest request body taken, in MiB (default %(default)g); larger ones get HTTP 413",
    )
    parser.add_argument(
        "--max-n", type=int, default=DEFAULT_MAX_N, help="most samples one request may ask for (n; default %(default)d)"
    )
    parser.add_argument(
        "--max-model-len",
        type=int,
        help=("most tokens a prompt and its max_tokens may hold (default: the model's max_position_embeddings)"),
    )


def serve_command(args: argparse.Namespace) -> int:
    """Run ``vigos serve`` until interrupted."""
    from vigos.models.loading import load_model_and_processor, resolve_model_path

    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    _check_options(api_key, args.max_body_mb)  # before the minutes a large model takes to load
    model, processor = load_model_and_processor(resolve_model_path(args.model))
    if torch.cuda.is_available():
        model = model.to("cuda")
    policy = PolicyServer(
        model.eval(),
        processor,
        model_name=args.served_model_name or args.model,
        max_n=args.max_n,
        max_model_len=args.max_model_len,
    )
    server = make_server(policy, args.host, args.port, api_key=api_key, max_body_mb=args.max_body_mb)
    print(
        f"serving {policy.model_name} at http://{args.host}:{server.server_address[1]} "
        f"({'API key required' if api_key else 'no API key'}; Ctrl-C stops)",
        flush=True,
    )
    if not api_key and args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning(
            "--host %s with no --api-key: anyone who reaches the port can sample and load adapters", args.host
        )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
