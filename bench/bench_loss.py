"""Benchmark of the loss stage alone: the naive full-logits path against the chunked one.

Both paths compute one ViGOS loss term (forward KL with the release's token
clip of 0.05) over ``T`` completion tokens at Qwen's vocabulary of 151,936,
forward and backward, from the same random final hidden states and the same
frozen output head (with LoRA the head is not trained and the teacher shares
it):

* ``naive``: full ``[T, V]`` logits of student and teacher, then
  `vigos.method.state_losses.divergence_from_logits` (what the public release does);
* ``ours``: `vigos.method.state_losses.divergence_from_hidden` on the hidden states.

Every measurement runs in a fresh subprocess, which reports its own peak
resident memory (``ru_maxrss``); a baseline subprocess that only builds the
inputs gives the memory that the loss itself adds. The two paths alternate
round by round (naive, ours, ours, naive, ...) so that load from elsewhere on
the machine falls on both alike; each reports wall time and CPU time (user +
system, all threads), and the medians over rounds are compared. Run directly
to print the numbers::

    python bench/bench_loss.py [--hidden 256] [--rounds 3] [--out loss.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

VOCAB = 151_936
TOKEN_CLIP = 0.05


def _inputs(tokens: int, hidden: int, seed: int = 0):
    """Student/teacher final hidden states [T, H] and a shared frozen head [V, H], all fp32."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(tokens, hidden, generator=generator)
    # The teacher is the same network without the adapter: close to the student, not equal.
    teacher = student + 0.05 * torch.randn(tokens, hidden, generator=generator)
    head = torch.randn(VOCAB, hidden, generator=generator) * (3.0 / hidden**0.5)
    return student.requires_grad_(True), teacher, head


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs one configuration in this process and reports times and peak memory."""
    import torch

    from vigos.method.losses import get_divergence
    from vigos.method.state_losses import divergence_from_hidden, divergence_from_logits

    student, teacher, head = _inputs(spec["tokens"], spec["hidden"])
    result: dict[str, Any] = {**spec}
    if spec["path"] != "baseline":
        divergence = get_divergence(spec.get("divergence", "forward_kl"))
        mask = torch.ones(spec["tokens"], dtype=torch.bool)

        def naive() -> torch.Tensor:
            student_logits = student @ head.T
            with torch.no_grad():
                teacher_logits = teacher @ head.T
            return divergence_from_logits(student_logits, teacher_logits, divergence, mask, TOKEN_CLIP)

        def ours() -> torch.Tensor:
            return divergence_from_hidden(
                student, teacher, head, head, divergence, mask, TOKEN_CLIP, chunk_size=spec["chunk"]
            )

        step = naive if spec["path"] == "naive" else ours
        wall, cpu = time.perf_counter(), time.process_time()
        loss = step()
        loss.backward()
        result.update(
            time_s=time.perf_counter() - wall,
            cpu_s=time.process_time() - cpu,
            loss=float(loss.detach()),
            grad_abs_sum=float(student.grad.abs().sum()),
        )
    result["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def run_config(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs ``spec`` in a fresh Python subprocess and returns its report."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {spec} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _summary(rounds: list[dict[str, Any]], baseline: dict[str, Any]) -> dict[str, Any]:
    """Medians over the rounds of one path at one size."""
    first = rounds[0]
    return dict(
        path=first["path"],
        tokens=first["tokens"],
        hidden=first["hidden"],
        chunk=first["chunk"] if first["path"] == "ours" else None,
        rounds=len(rounds),
        time_s=statistics.median(r["time_s"] for r in rounds),
        cpu_s=statistics.median(r["cpu_s"] for r in rounds),
        times_s=[r["time_s"] for r in rounds],
        extra_bytes=statistics.median(r["max_rss_bytes"] for r in rounds) - baseline["max_rss_bytes"],
        baseline_rss_bytes=baseline["max_rss_bytes"],
        logit_bytes=first["tokens"] * VOCAB * 4,
        loss=first["loss"],
        grad_abs_sum=first["grad_abs_sum"],
    )


def run(
    *,
    hidden: int = 256,
    compared_tokens: tuple[int, ...] = (1024, 2048),
    alone_tokens: tuple[int, ...] = (4096, 8192),
    chunk: int = 128,
    rounds: int = 3,
    log=print,
) -> dict[str, Any]:
    """The loss benchmark: naive vs ours side by side at ``compared_tokens``, ours alone at ``alone_tokens``.

    Returns ``{"settings": ..., "rows": [...], "comparisons": [...]}``; each
    row has ``path``, ``tokens``, the median ``time_s`` (wall) and ``cpu_s``,
    and ``extra_bytes`` (peak RSS above the baseline subprocess with the same
    inputs); each comparison has the ratios ours / naive.
    """
    rows: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    plan = [(t, ("naive", "ours"), rounds) for t in compared_tokens] + [(t, ("ours",), 1) for t in alone_tokens]
    for tokens, paths, count in plan:
        base = dict(tokens=tokens, hidden=hidden, chunk=chunk)
        baseline = run_config({**base, "path": "baseline"})
        measured: dict[str, list[dict[str, Any]]] = {path: [] for path in paths}
        for index in range(count):
            for path in paths if index % 2 == 0 else paths[::-1]:
                row = run_config({**base, "path": path})
                measured[path].append(row)
                log(
                    f"loss  T={tokens:5d} H={hidden} {path:5s} round {index + 1}: {row['time_s']:7.2f} s wall "
                    f"{row['cpu_s']:7.2f} s cpu  +{(row['max_rss_bytes'] - baseline['max_rss_bytes']) / 2**20:8.1f} MiB"
                )
        summaries = {path: _summary(measured[path], baseline) for path in paths}
        rows.extend(summaries.values())
        if len(summaries) == 2:
            naive, ours = summaries["naive"], summaries["ours"]
            comparisons.append(
                dict(
                    tokens=tokens,
                    hidden=hidden,
                    time_ratio=ours["time_s"] / naive["time_s"],
                    cpu_ratio=ours["cpu_s"] / naive["cpu_s"],
                    memory_ratio=ours["extra_bytes"] / naive["extra_bytes"],
                    loss_abs_diff=abs(ours["loss"] - naive["loss"]),
                    grad_rel_diff=abs(ours["grad_abs_sum"] - naive["grad_abs_sum"]) / max(naive["grad_abs_sum"], 1e-30),
                )
            )
    settings = dict(
        vocab=VOCAB,
        hidden=hidden,
        chunk=chunk,
        divergence="forward_kl",
        token_clip=TOKEN_CLIP,
        dtype="float32",
        rounds=rounds,
        head="frozen, shared by the teacher",
        torch_threads=_threads(),
    )
    return {"settings": settings, "rows": rows, "comparisons": comparisons}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, nargs="*", default=[1024, 2048], help="compared side by side")
    parser.add_argument("--alone", type=int, nargs="*", default=[4096, 8192], help="our path alone")
    parser.add_argument("--out", help="write the JSON result here")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    result = run(
        hidden=args.hidden,
        compared_tokens=tuple(args.tokens),
        alone_tokens=tuple(args.alone),
        chunk=args.chunk,
        rounds=args.rounds,
    )
    for c in result["comparisons"]:
        print(
            f"T={c['tokens']}: ours/naive wall time {c['time_ratio']:.3f}, cpu time {c['cpu_ratio']:.3f}, "
            f"extra memory {c['memory_ratio']:.4f}"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
