"""Score given completions: spans → teachers → loss terms and metrics, no sampling.

This is the public entry point that the trainer calls after its rollout, and
that tests, benchmarks and comparisons with other implementations call
directly with hand-made completions.

The teachers' side (contexts, passes, representations) is `vigos.method.teacher_passes`; this module
adds the student's pass, each term's loss and the outcome-reward term. Position arithmetic as there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from vigos.data.rows import Example
from vigos.method.sampled_losses import policy_gradient_from_hidden
from vigos.method.score_metrics import group_advantages, rollout_rewards, step_metrics
from vigos.method.score_types import ScoreOutput
from vigos.method.spans import CompletionSpans, SpanParser, span_mask
from vigos.method.teacher_passes import TeacherPasses, timed
from vigos.method.teachers import TeacherTerm
from vigos.models.modeling import Context, gathered_output_head, image_features_reusable, takes_image_features

ReduceSum = Callable[[torch.Tensor], torch.Tensor]


class Scorer(TeacherPasses):
    """Computes the ViGOS/OPSD loss for given completions of given examples.

    The student and every teacher pass keep only final hidden states; a teacher is then read once per
    call as hidden states, as its log-probability of each sampled token (a term whose loss is a
    sampled-token loss) or, with ``teacher_top_k``, as its top-k tokens (`_read_teachers`), and each
    term's loss is chunked over its tokens. With ``reward_weight``, an outcome-reward term (policy
    gradient with group-relative advantages) joins them. `vigos.method.full_logits.FullLogitsScorer` is the public
    release's full-logits way, kept as the reference the fast path is tested and benchmarked against.
    """

    def __init__(self, *args: Any, reduce_sum: ReduceSum | None = None, **kwargs: Any):
        """`TeacherPasses`' arguments, and ``reduce_sum``: how a tensor of counts is summed over processes
        (default: this process alone)."""
        super().__init__(*args, **kwargs)
        self.reduce_sum = reduce_sum or (lambda t: t)
        self.parser = SpanParser(self.processor.tokenizer)

    def tokenize_completions(self, completions: Sequence[str | Sequence[int] | torch.Tensor]) -> list[list[int]]:
        """Completions as token ids; text is the part after the ``<description>`` pre-fill."""
        ids = []
        for c in completions:
            if isinstance(c, str):
                ids.append(self.processor.tokenizer(c, add_special_tokens=False)["input_ids"])
            elif isinstance(c, torch.Tensor):
                ids.append([int(i) for i in c.tolist()])
            else:
                ids.append([int(i) for i in c])
        return ids

    def totals(self, completions: Sequence[str | Sequence[int] | torch.Tensor]) -> torch.Tensor:
        """This process's rollout count and each term's supervised token count for ``completions``
        (the reward term's, every completion token, last).

        Returns float32 [1 + terms]. Summed over the micro-batches of an
        optimizer step and over processes, it is what ``step_totals`` takes.
        """
        spans = self.parser.parse_batch(self.tokenize_completions(completions))
        supervised = self.supervised_ranges(spans)
        return self._totals(spans, supervised)

    def _totals(
        self, spans: list[CompletionSpans], supervised: dict[str, list[tuple[int, int] | None]]
    ) -> torch.Tensor:
        counts = [sum(r[1] - r[0] for r in supervised[t.name] if r) for t in self.terms]
        if self.rewarded:
            counts.append(sum(span.length for span in spans))
        return torch.tensor([len(spans), *counts], dtype=torch.float32)

    @property
    def rewarded(self) -> bool:
        """Whether the loss has the outcome-reward term ("reward", after the teachers' terms)."""
        return self.options.reward_weight > 0

    def _parse(
        self, completions: Sequence[str | Sequence[int] | torch.Tensor]
    ) -> tuple[list[list[int]], list[CompletionSpans]]:
        """Each completion's token ids, cut after its end token, and its spans."""
        completion_ids = self.tokenize_completions(completions)
        for index, ids in enumerate(completion_ids):
            if self.image_token in ids:
                raise ValueError(
                    f"completion {index} holds the image placeholder token {self.image_token}; completions are text "
                    "only (rollouts suppress vision tokens)"
                )
        spans = self.parser.parse_batch(completion_ids)
        return [ids[: s.length] for ids, s in zip(completion_ids, spans)], spans

    def __call__(
        self,
        model: torch.nn.Module,
        examples: Sequence[Example],
        completions: Sequence[str | Sequence[int] | torch.Tensor],
        *,
        step_totals: torch.Tensor | None = None,
    ) -> ScoreOutput:
        """Loss terms and metrics of ``completions`` (one per example).

        ``step_totals`` [1 + terms]: the rollouts and each term's supervised
        tokens over the whole optimizer step (every micro-batch of a gradient
        accumulation window, every process; see :meth:`totals`). Each term is
        normalized by them, so that the micro-batches' losses add up to the
        step's. None: this call is the whole step (totals summed over processes).
        """
        if len(examples) != len(completions):
            raise ValueError(
                f"got {len(examples)} examples but {len(completions)} completions; pass one example per completion"
            )
        completion_ids, spans = self._parse(completions)
        image_of = self._encode_images(examples)

        supervised = self.supervised_ranges(spans)
        times: dict[str, float] = {}
        shared_images = list({id(image): image for image in image_of}.values())
        # No policy teacher (method grpo, or every role a separate model): no encode under its weights.
        policy_terms = any(term.name not in self.separate and term.name not in self.served for term in self.terms)
        shared_images = shared_images if policy_terms and self._shares_image_features(model) else None
        jobs = self.teacher_contexts(examples, completion_ids, image_of, spans)
        sampled_ids = self._sampled_ids(completion_ids, supervised)
        with timed(times, "teachers"):
            teacher_states, features = self._teacher_outputs(
                model, examples, image_of, jobs, shared_images, times=times
            )
            teachers = self._read_teachers(model, teacher_states, sampled_ids)
        if self.served:
            with timed(times, "served_teachers"):
                teachers.update(self._served_teachers(model, examples, jobs, sampled_ids))
        # The teachers' encode serves the student only when the tower computes the same function for both.
        if features is not None and not image_features_reusable(model):
            features = None

        student_prompts = [
            self._prompt_ids(self.student_prompt, e, img, answer=False) for e, img in zip(examples, image_of)
        ]
        contexts = [Context(p, c, img) for p, c, img in zip(student_prompts, completion_ids, image_of)]
        with timed(times, "student"):
            student_output = self._forward(model, self._collate(contexts, model, features))

        device = student_output.device
        local_totals = self._totals(spans, supervised).to(device)
        totals = self.reduce_sum(local_totals) if step_totals is None else step_totals.to(device)
        advantages = None
        if self.rewarded:
            rewards = rollout_rewards(self.processor.tokenizer, examples, completion_ids, spans)
            advantages = torch.tensor(group_advantages(examples, rewards), device=device)
        with timed(times, "loss"), self._heads(model) as heads:
            loss, terms = self._loss(
                heads, student_output, teachers, student_prompts, completion_ids, supervised, totals[1:], advantages
            )
        metrics = step_metrics(
            self.processor.tokenizer,
            examples,
            completion_ids,
            spans,
            local_totals,
            terms,
            loss,
            float(totals[0]),
            self.reduce_sum,
        )
        metrics.update({f"time_{stage}": seconds for stage, seconds in times.items()})
        return ScoreOutput(loss, terms, metrics, spans, completion_ids, supervised)

    def _shares_image_features(self, model: torch.nn.Module) -> bool:
        """Whether the teacher passes share one vision encode per image. With sharded weights (lockstep)
        the vision tower is gathered inside the model's own passes: pixels are kept then."""
        return self.options.reuse_image_features and not self.lockstep and takes_image_features(model)

    @contextmanager
    def _heads(self, model: torch.nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The student's and the teacher's output heads [V, H], whole for the loss (the chunked loss reads
        them outside the forward: ZeRO-3 must gather them for that)."""
        with gathered_output_head(model, needed_in_backward=self.options.loss_chunk_size is None) as head:
            yield head, self.teacher.head(model)

    def _loss(
        self,
        heads: Any,
        student_output: torch.Tensor,
        teachers: dict[str, Any],
        student_prompts: list[list[int]],
        completion_ids: list[list[int]],
        supervised: dict[str, list[tuple[int, int] | None]],
        global_counts: torch.Tensor,
        advantages: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted loss and each term, from the student's output [B, L, D] (`_forward`'s), each
        term's teacher at its supervised tokens (`_read_teachers`'), the heads (`_heads`') and each
        term's token count over the step [terms]."""
        device = student_output.device
        # Keeps every parameter in the graph when no term has a token here, so
        # that distributed gradient reduction still sees this process.
        loss = student_output.sum() * 0.0
        terms: dict[str, torch.Tensor] = {}
        prompt_lengths = torch.tensor([len(p) for p in student_prompts], device=device)
        width = max((len(c) for c in completion_ids), default=0)
        for index, term in enumerate(self.terms):
            rows = supervised[term.name]
            row_index, token_index = span_mask(rows, width).to(device).nonzero(as_tuple=True)
            value = teachers[term.name].loss_term(
                student_output[row_index, prompt_lengths[row_index] + token_index - 1],
                *heads,
                self.divergences[term.name],
                clip=self._clip_values(term, rows, row_index, token_index),
                global_count=global_counts[index],
                chunk_size=self.options.loss_chunk_size,
            )
            terms[term.name] = value
            loss = loss + term.weight * value
        if advantages is not None:
            row_index, token_index = (
                span_mask([(0, len(c)) for c in completion_ids], width).to(device).nonzero(as_tuple=True)
            )
            padded = torch.tensor([c + [0] * (width - len(c)) for c in completion_ids], device=device).view(-1, width)
            terms["reward"] = self._reward_term(
                student_output[row_index, prompt_lengths[row_index] + token_index - 1],
                heads[0],
                padded[row_index, token_index],
                advantages[row_index],
                global_counts[len(self.terms)],
            )
            loss = loss + self.options.reward_weight * terms["reward"]
        return loss, terms

    def _reward_term(
        self, rows: torch.Tensor, head: torch.Tensor, ids: torch.Tensor, advantages: torch.Tensor, count: torch.Tensor
    ) -> torch.Tensor:
        """The outcome-reward term from the student's output rows [N, D] at every completion token (the
        tokens ``ids`` [N], each with its rollout's advantage [N]), divided by the step's ``count``."""
        return policy_gradient_from_hidden(
            rows, head, ids, advantages, global_count=count, chunk_size=self.options.loss_chunk_size
        )

    def _clip_values(
        self, term: TeacherTerm, rows: list[tuple[int, int] | None], row_index: torch.Tensor, token_index: torch.Tensor
    ) -> torch.Tensor | None:
        """Per-token clip [N_term]: the token clip, and the boundary clips on the
        last description token and the first reasoning token."""
        options = self.options
        clip = torch.full(token_index.shape, float("inf"), device=token_index.device)
        if options.token_loss_clip is not None:
            clip.fill_(options.token_loss_clip)
        bounds = torch.tensor([r if r else (0, 0) for r in rows], dtype=torch.long, device=token_index.device).view(
            -1, 2
        )
        # A boundary token's clip is the smaller of the two, as in the release.
        if term.span == "description" and options.description_end_clip is not None:
            last = token_index == bounds[row_index, 1] - 1
            clip[last] = clip[last].clamp(max=options.description_end_clip)
        if term.span == "reasoning" and options.reasoning_start_clip is not None:
            first = token_index == bounds[row_index, 0]
            clip[first] = clip[first].clamp(max=options.reasoning_start_clip)
        return clip
