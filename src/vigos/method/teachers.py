"""The teachers: which context each sees, which tokens it grades, and whose weights it runs.

A method is data: a list of :class:`TeacherTerm`, each naming a teacher's
prompt, the span of the student's completion it supervises, the rollouts it
applies to, its divergence and its weight (METHOD.md section 3).

A :class:`TeacherPolicy` decides whose weights a teacher pass runs when the
teacher is the trained model itself (a :class:`SeparateTeacher` is another
model, frozen, and runs its own):

* ``fixed``: the initial policy. With LoRA, the same network with the adapter
  switched off (no second copy of the weights); with full fine-tuning, the
  initial values of the trained parameters, swapped in for the pass.
* ``current``: the live weights, without gradient.
* ``ema``: an exponential moving average of the trained parameters, swapped in
  for the pass and updated after every optimizer step.

Only trained parameters are ever copied, so a LoRA run keeps a few MB of
teacher state, and the output head is shared unless it is itself trained.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from vigos.models.modeling import output_head, unwrap
from vigos.prompts import DESCRIPTION_OPEN, PERCEPTION_PREFILL, PromptSpec

SPANS = ("description", "reasoning", "completion")
ROWS = ("valid", "invalid", "all")
# Where a teacher's view of the student's completion begins: at its first token, after the teacher's
# own pre-fill, or at the token that opens ``<think>`` (the teacher's prompt then ends at the
# assistant header, and the student's own tokens carry the tag, so no re-tokenized text pre-fill
# is ever butted against student tokens).
READS_FROM = ("completion", "think")


@dataclass(frozen=True)
class TeacherTerm:
    """One loss term: a teacher, its context and the tokens it supervises.

    The teacher reads its prompt (ending with ``prompt.prefill``), then the
    student's own token ids from ``reads_from`` (see ``READS_FROM``) through
    the last supervised token, so it predicts each supervised token after
    exactly the text the student had written there.
    """

    name: str
    prompt: PromptSpec
    span: str
    rows: str
    divergence: str
    weight: float
    reads_from: str = "completion"

    def __post_init__(self) -> None:
        if self.span not in SPANS:
            raise ValueError(f"term {self.name!r}: span must be one of {SPANS}, got {self.span!r}")
        if self.rows not in ROWS:
            raise ValueError(f"term {self.name!r}: rows must be one of {ROWS}, got {self.rows!r}")
        if self.reads_from not in READS_FROM:
            raise ValueError(f"term {self.name!r}: reads_from must be one of {READS_FROM}, got {self.reads_from!r}")
        if self.reads_from == "think" and (self.span != "reasoning" or self.rows != "valid" or self.prompt.prefill):
            raise ValueError(
                f"term {self.name!r}: reads_from 'think' needs span 'reasoning', rows 'valid' and no "
                "pre-fill (the student's own tokens carry <think>)"
            )


def vigos_terms(
    *,
    perception_prompt: str,
    reasoning_prompt: str,
    reference_prompt: str,
    perception_prefill: str = PERCEPTION_PREFILL,
    perception_weight: float = 1.0,
    reasoning_weight: float = 1.0,
    reference_weight: float = 2.0,
    perception_divergence: str = "forward_kl",
    reasoning_divergence: str = "forward_kl",
    reference_divergence: str = "reverse_kl",
    reasoning_sees_description: bool = False,
) -> list[TeacherTerm]:
    """ViGOS: perception teacher on the description, reasoning teacher on the
    reasoning and answer of valid rollouts, reference teacher on every token of
    invalid ones.

    The perception teacher sees the image with ``perception_prompt`` (default:
    no text) and ``perception_prefill`` (default: none), then the description.
    The reasoning teacher reads the student's tokens from the one that opens
    ``<think>``, or (``reasoning_sees_description``) the whole completion
    after the student's own ``<description>`` pre-fill."""
    if reasoning_sees_description:
        reasoning = PromptSpec(reasoning_prompt, DESCRIPTION_OPEN), "completion"
    else:
        reasoning = PromptSpec(reasoning_prompt, ""), "think"
    return [
        TeacherTerm(
            "perception",
            PromptSpec(perception_prompt, perception_prefill),
            "description",
            "valid",
            perception_divergence,
            perception_weight,
        ),
        TeacherTerm(
            "reasoning",
            reasoning[0],
            "reasoning",
            "valid",
            reasoning_divergence,
            reasoning_weight,
            reads_from=reasoning[1],
        ),
        TeacherTerm(
            "reference",
            PromptSpec(reference_prompt, DESCRIPTION_OPEN),
            "completion",
            "invalid",
            reference_divergence,
            reference_weight,
        ),
    ]


def opsd_terms(*, privileged_prompt: str, divergence: str = "forward_kl", weight: float = 1.0) -> list[TeacherTerm]:
    """Vanilla multimodal OPSD: one privileged teacher (image + question +
    reference answer) on every completion token of every rollout."""
    return [
        TeacherTerm(
            "privileged", PromptSpec(privileged_prompt, DESCRIPTION_OPEN), "completion", "all", divergence, weight
        )
    ]


def _trained_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


@contextmanager
def _swapped(params: dict[str, torch.nn.Parameter], values: dict[str, torch.Tensor]) -> Iterator[None]:
    backup = {name: p.detach().clone() for name, p in params.items()}
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(values[name])
    try:
        yield
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(backup[name])


class TeacherPolicy:
    """Whose weights a teacher pass runs. Subclasses override the hooks."""

    name = "current"

    def weights(self, model: torch.nn.Module) -> Any:
        """A context manager inside which ``model`` computes as the teacher."""
        return nullcontext()

    def head(self, model: torch.nn.Module) -> torch.Tensor:
        """The teacher's output projection [V, H], detached."""
        return output_head(model).detach()

    def update(self, model: torch.nn.Module) -> None:
        """Called after every optimizer step."""


class AdapterOffTeacher(TeacherPolicy):
    """The initial policy of a LoRA run: the adapter switched off."""

    name = "fixed"

    def weights(self, model: torch.nn.Module) -> Any:
        from accelerate.utils import extract_model_from_parallel

        return extract_model_from_parallel(model).disable_adapter()


class SnapshotTeacher(TeacherPolicy):
    """Fixed (decay 1) or EMA (decay < 1) values of the trained parameters, swapped in for the pass."""

    def __init__(self, model: torch.nn.Module, decay: float = 1.0):
        self.decay = decay
        self.name = "fixed" if decay == 1.0 else "ema"
        self.snapshot = {n: p.detach().clone() for n, p in _trained_parameters(unwrap(model)).items()}

    def weights(self, model: torch.nn.Module) -> Any:
        return _swapped(_trained_parameters(unwrap(model)), self.snapshot)

    def head(self, model: torch.nn.Module) -> torch.Tensor:
        core = unwrap(model)
        live = core.get_output_embeddings().weight
        for name, p in _trained_parameters(core).items():
            if p is live:
                return self.snapshot[name]
        return live.detach()

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        if self.decay == 1.0:
            return
        for name, p in _trained_parameters(unwrap(model)).items():
            self.snapshot[name].lerp_(p.detach(), 1.0 - self.decay)


@dataclass(frozen=True)
class SeparateTeacher:
    """A teacher that is another model than the trained one (a larger VLM of the same family as the
    perception teacher, say): loaded once, frozen, with its own output head. It reads the student's
    prompts and images as the student's processor encodes them, so it must share the student's
    vocabulary and image processing (`vigos.models.loading.load_teacher_model` checks both); its
    hidden size may differ."""

    model: torch.nn.Module
    source: str
    # The student's output head's row count: a teacher head padded to more rows is read up to it.
    vocab_rows: int

    def head(self) -> torch.Tensor:
        """Its output projection [V, H_teacher] over the student's V rows, detached."""
        return output_head(self.model).detach()[: self.vocab_rows]


class ServedTeacher(Protocol):
    """A teacher role served elsewhere (an OpenAI-compatible server that returns prompt log-probabilities,
    as vLLM's ``prompt_logprobs`` does): it takes no training memory and is read as its top-k tokens, or
    its log-probability of each sampled token. `vigos.rollout.served_teacher.ServedTeacherClient` is one."""

    source: str

    def prompt_logprobs(
        self, prompt_ids: Sequence[int], images: Sequence[Any], top_k: int
    ) -> list[dict[int, float] | None]:
        """For each position i of ``prompt_ids`` (shown with ``images``, in order), the log-probabilities
        (temperature 1) of the ``top_k`` most likely tokens given the ids before i, and of the id at i
        itself; None at position 0."""
        ...


TEACHER_KINDS = ("fixed", "current", "ema")


def make_teacher_policy(kind: str, model: torch.nn.Module, *, ema_decay: float = 0.99) -> TeacherPolicy:
    """Build the teacher policy ``kind`` for ``model`` (call before training starts)."""
    if kind not in TEACHER_KINDS:
        raise ValueError(f"teacher must be one of {', '.join(TEACHER_KINDS)}; got {kind!r}")
    from accelerate.utils import extract_model_from_parallel

    has_adapter = hasattr(extract_model_from_parallel(model), "disable_adapter")
    if kind == "current":
        return TeacherPolicy()
    if kind == "fixed":
        return AdapterOffTeacher() if has_adapter else SnapshotTeacher(model, decay=1.0)
    return SnapshotTeacher(model, decay=ema_decay)
