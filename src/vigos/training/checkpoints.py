"""Crash-safe checkpoints: a ``checkpoint-N`` directory exists only once it is complete.

``transformers.Trainer`` writes ``checkpoint-N`` in place, file after file. A
run killed during a save leaves a ``checkpoint-N`` that lacks its optimizer,
RNG or trainer state, and ``resume_from_checkpoint=True`` (the newest
``checkpoint-N``) takes it for a whole one. :class:`AtomicCheckpointMixin`
lets the Trainer write each checkpoint under a staging name beside it and, once
every process has finished writing, renames it into place: one ``os.rename``,
atomic on POSIX file systems, so a kill at any moment leaves either no
``checkpoint-N`` or a complete one (plus a staging directory, which the next
run removes when it starts). A save that runs out of disk removes its partial
staging directory and raises :class:`DiskFullError`, which says so.

On resume it also rewinds the run's step-stamped JSONL logs to the
checkpoint's step, so that the steps run after the checkpoint and before the
kill, which the resumed run takes again, are not logged twice.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint, rotate_checkpoints

TRAINER_STATE_NAME = "trainer_state.json"
STAGING_PREFIX = ".staging-"
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# How torch.save (PytorchStreamWriter) and safetensors report a write the disk refused.
_DISK_FULL_TEXTS = (
    "unexpected pos",
    "file write failed",
    "No space left on device",
    "Disk quota exceeded",
    "File too large",
    "StorageFull",
    "FileTooLarge",
)

logger = logging.getLogger(__name__)


class DiskFullError(OSError):
    """A write failed because the disk (or a quota or file-size limit) had no room; the message says where."""


class AtomicCheckpointMixin:
    """Mix into a ``transformers.Trainer`` subclass (before ``Trainer``) for atomic
    checkpoints and logs that resume where the checkpoint stopped.

    ``rewound_logs`` names the JSONL files in ``output_dir`` whose records carry
    the optimizer ``step`` they belong to.
    """

    rewound_logs: tuple[str, ...] = ("metrics.jsonl", "completions.jsonl", "diagnostics.jsonl")
    _staging_root: str | None = None

    def _get_output_dir(self, trial: Any) -> str:
        # While a checkpoint is being written, the Trainer's run directory is the staging one.
        if self._staging_root is not None:
            return self._staging_root
        return super()._get_output_dir(trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging_root = os.path.join(run_dir, STAGING_PREFIX + name)
        if self.args.should_save:
            shutil.rmtree(staging_root, ignore_errors=True)  # what a killed save of this step left
        self.accelerator.wait_for_everyone()
        try:
            with reporting_full_disk(run_dir, name):
                self._save_staged(model, trial, run_dir, name, staging_root)
        except DiskFullError:
            if self.args.should_save:
                shutil.rmtree(staging_root, ignore_errors=True)  # a partial save no resume can use
            raise
        if self.args.should_save:
            shutil.rmtree(staging_root, ignore_errors=True)
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )
        self.accelerator.wait_for_everyone()

    def _save_staged(self, model: Any, trial: Any, run_dir: str, name: str, staging_root: str) -> None:
        """Let the Trainer write checkpoint ``name`` under ``staging_root``, then publish it in ``run_dir``."""
        self._staging_root = staging_root
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None
        staged = os.path.join(staging_root, name)
        best = self.state.best_model_checkpoint
        if best is not None and os.path.dirname(os.path.normpath(best)) == os.path.normpath(staging_root):
            self.state.best_model_checkpoint = os.path.join(run_dir, os.path.basename(os.path.normpath(best)))
            if self.args.should_save:
                self.state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            publish_checkpoint(staged, os.path.join(run_dir, name))

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train``; first removes the staging directories of saves cut short, and on resume checks
        the checkpoint and rewinds the run's logs to its step."""
        if self.args.should_save:
            remove_staging_dirs(self.args.output_dir)
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            checkpoint = get_last_checkpoint(self.args.output_dir)
        if isinstance(checkpoint, (str, os.PathLike)):
            step = checkpoint_step(checkpoint)
            if self.is_world_process_zero():
                for log in self.rewound_logs:
                    rewind_jsonl(Path(self.args.output_dir) / log, step)
        return super().train(resume_from_checkpoint, *args, **kwargs)


def checkpoint_step(checkpoint: str | os.PathLike) -> int:
    """The optimizer step a checkpoint directory was saved at; a clear error if it is not a complete checkpoint."""
    path = Path(checkpoint)
    if not path.is_dir():
        raise FileNotFoundError(
            f"resume_from_checkpoint: {str(path)!r} is not a directory; name a checkpoint-N directory"
        )
    state = path / TRAINER_STATE_NAME
    if not state.is_file():
        raise FileNotFoundError(
            f"resume_from_checkpoint: {str(path)!r} has no {TRAINER_STATE_NAME}, so it is not a complete checkpoint; "
            f"name an earlier checkpoint-N directory"
        )
    return int(json.loads(state.read_text())["global_step"])


def publish_checkpoint(staged: str, final: str) -> None:
    """Move a fully written checkpoint directory to its final name, replacing one of the same step."""
    _fsync_tree(staged)
    parent = os.path.dirname(final)
    if os.path.exists(final):
        # A checkpoint of this step from before a resume: set it aside first, since
        # rename cannot replace a non-empty directory, and delete it once replaced.
        old = os.path.join(parent, STAGING_PREFIX + "replaced-" + os.path.basename(final))
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staged, final)
    _fsync_dir(parent)


def remove_staging_dirs(output_dir: str | os.PathLike) -> list[str]:
    """Remove the staging directories that saves cut short (killed, or out of disk) left in ``output_dir``."""
    root = Path(output_dir)
    removed = sorted(p.name for p in root.glob(STAGING_PREFIX + "*") if p.is_dir()) if root.is_dir() else []
    for name in removed:
        shutil.rmtree(root / name, ignore_errors=True)
    if removed:
        logger.info("removed %s from %s: unfinished checkpoint saves of an earlier run", ", ".join(removed), root)
    return removed


@contextlib.contextmanager
def reporting_full_disk(directory: str | os.PathLike, what: str) -> Iterator[None]:
    """Turn a write error that means "no room" (ENOSPC, EDQUOT, EFBIG, or torch's and safetensors' wording of
    them) into a :class:`DiskFullError` naming ``what`` was being written, ``directory`` and its free space."""
    try:
        yield
    except Exception as error:
        reason = _disk_full_reason(error)
        if reason is None:
            raise
        raise DiskFullError(
            f"could not write {what}: the disk is full at {directory} ({_free_mb(directory)} MB free; {reason}). "
            "Free some space there or set output_dir to a disk with room, then run again with "
            "resume_from_checkpoint: true to go on from the last complete checkpoint."
        ) from error


def _disk_full_reason(error: BaseException) -> str | None:
    """What the OS or library said, if ``error`` (or one it was raised from) means the disk had no room."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_FULL_ERRNOS:
            return current.strerror or os.strerror(current.errno)
        text = str(current)
        if any(marker in text for marker in _DISK_FULL_TEXTS):
            return " ".join(text.split())[:200]
        current = current.__cause__ or current.__context__
    return None


def _free_mb(directory: str | os.PathLike) -> int | str:
    path = Path(directory).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free // 2**20
    except OSError:
        return "unknown"


def rewind_jsonl(path: Path, step: int) -> None:
    """Keep the records of ``path`` whose ``step`` is at most ``step`` (and drop a line cut short by a kill)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line)
    temporary = path.with_name(path.name + ".rewind")
    temporary.write_text("".join(line + "\n" for line in kept))
    os.replace(temporary, path)


def _fsync_tree(root: str) -> None:
    # Data must be on disk before the rename makes the checkpoint visible, or a
    # power loss could still leave a complete-looking directory of empty files.
    for directory, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(directory, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
