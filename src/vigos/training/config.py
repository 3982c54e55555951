"""``ViGOSConfig``: every option of a ViGOS/OPSD run, extending ``TrainingArguments``.

Defaults are the public release's (METHOD.md, "Defaults of the public
release"); ``configs/`` holds the paper's 3B/7B runs and a tiny CPU one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainingArguments

from vigos import prompts
from vigos.method.score_types import ScoringOptions
from vigos.method.teachers import TeacherPolicy, make_teacher_policy, opsd_terms, vigos_terms
from vigos.training.option_checks import check_options, check_trainer_numbers

# What an inference engine reserves per prompt when max_images_per_row is None (no cap on the rows).
_UNCAPPED_IMAGES = 16
# The loss options' defaults live with the scorer; the fields below read them from here.
_SCORING = ScoringOptions()


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class ViGOSConfig(TrainingArguments):
    """Options of a ViGOS or multimodal OPSD post-training run."""

    # What to train, on what.
    model_name_or_path: str | None = field(default=None, metadata=_help("Model path or hub id (a chat VLM)."))
    method: str = field(
        default="vigos",
        metadata=_help(
            "'vigos' (three teachers on spans), 'opsd' (one privileged teacher on every token) or 'grpo' (no "
            "teacher: the outcome reward alone, a baseline; needs reward_weight > 0)."
        ),
    )
    dataset: str | None = field(
        default=None,
        metadata=_help("Dataset: hub id, saved dataset dir, parquet, or JSONL (image paths relative to it)."),
    )
    dataset_split: str = field(default="train", metadata=_help("Split of the dataset to train on."))
    question_field: str = field(default="problem", metadata=_help("Column holding the question."))
    image_field: str = field(
        default="images",
        metadata=_help("Column holding the image(s): an image, a path, or a list of them (see images_per_row)."),
    )
    answer_field: str = field(default="answer", metadata=_help("Column holding the reference answer."))
    bad_rows: str = field(
        default="skip", metadata=_help("'skip' bad rows (counted in the log) or 'error' (stop, naming the row).")
    )
    min_image_side: int = field(default=28, metadata=_help("Images smaller than this on either side are bad rows."))
    max_train_rows: int | None = field(default=None, metadata=_help("Use at most this many rows (after validation)."))
    images_per_row: str = field(
        default="all",
        metadata=_help(
            "'all': a row whose image field holds a list shows the student and "
            "every teacher that sees the image all of them, in order; 'first': its "
            "first only."
        ),
    )
    max_images_per_row: int | None = field(
        default=8, metadata=_help("Rows with more images than this are bad rows (images_per_row 'all'; None: no cap).")
    )
    allow_image_paths_outside: bool = field(
        default=False,
        metadata=_help(
            "Let image paths in the rows point outside the dataset's folder "
            "(absolute paths, ../); off, such a row is a bad row."
        ),
    )
    data_num_proc: int | None = field(
        default=None,
        metadata=_help(
            "Processes that check the rows before training (None: the usable cores, "
            "at most 8); the result is cached under $VIGOS_CACHE/validation."
        ),
    )

    # Rollouts.
    max_prompt_length: int = field(
        default=32768, metadata=_help("Rows whose student prompt (image tokens included) is longer are bad rows.")
    )
    max_completion_length: int = field(default=4096, metadata=_help("Maximum new tokens per rollout."))
    num_generations: int = field(default=1, metadata=_help("Rollouts sampled per prompt."))
    temperature: float = field(default=1.1, metadata=_help("Rollout sampling temperature."))
    top_p: float = field(default=0.95, metadata=_help("Rollout nucleus sampling mass."))
    top_k: int = field(default=20, metadata=_help("Rollout top-k sampling (0 disables)."))
    rollout_engine: str = field(
        default="hf",
        metadata=_help(
            "What samples the rollouts: 'hf' (the training model, in process), "
            "'vllm_server' (a separately started OpenAI-compatible vLLM server, "
            "sent the LoRA adapter; needs use_lora) or 'vllm_colocate' (an "
            "in-process vLLM engine on the training GPU; one process)."
        ),
    )
    rollout_sampler: str = field(
        default="lean",
        metadata=_help(
            "How the 'hf' engine samples: 'lean' (each prompt prefilled once, then "
            "vigos's own decode loop; the same tokens as generate for a seed) or "
            "'generate' (Hugging Face generate)."
        ),
    )
    vllm_server_url: str = field(
        default="http://127.0.0.1:8000",
        metadata=_help(
            "Base URL of the vLLM server (rollout_engine 'vllm_server'); it must "
            "read files this run writes under output_dir."
        ),
    )
    vllm_sync_steps: int = field(
        default=1,
        metadata=_help(
            "Push the policy (LoRA adapter or weights) to vLLM every N optimizer "
            "steps: 1 keeps rollouts on-policy; N > 1 samples from a policy up to N "
            "- 1 steps old."
        ),
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.45,
        metadata=_help("Share of GPU memory the colocated vLLM engine takes (release: 0.45 for 3B, 0.40 for 7B)."),
    )
    vllm_request_timeout: float = field(
        default=600.0,
        metadata=_help("Seconds to wait for the vLLM server to answer one request (one example's samples)."),
    )

    # Teachers and loss.
    teacher: str = field(
        default="fixed",
        metadata=_help("Teacher weights: 'fixed' (initial policy; LoRA adapter off), 'current' or 'ema'."),
    )
    ema_decay: float = field(default=0.99, metadata=_help("Decay of the EMA teacher."))
    perception_teacher_model: str | None = field(
        default=None,
        metadata=_help(
            "Another model as the perception teacher: a checkpoint directory, hub id or tiny:<arch>[:<size>], "
            "loaded once, frozen, in the model's dtype on its device; or http://HOST:PORT, a server that returns "
            "prompt log-probabilities (vigos serve; read as teacher_top_k tokens). It must share the student's "
            "tokenizer (and, loaded, its image processing): checked at start. Unset: the trained model ('teacher')."
        ),
    )
    reasoning_teacher_model: str | None = field(
        default=None, metadata=_help("Another model as the reasoning teacher (as perception_teacher_model).")
    )
    reference_teacher_model: str | None = field(
        default=None, metadata=_help("Another model as the reference teacher (as perception_teacher_model).")
    )
    privileged_teacher_model: str | None = field(
        default=None, metadata=_help("Another model as OPSD's privileged teacher (as perception_teacher_model).")
    )
    perception_weight: float = field(default=1.0, metadata=_help("λ_p: weight of the perception teacher's term."))
    reasoning_weight: float = field(default=1.0, metadata=_help("λ_r: weight of the reasoning teacher's term."))
    reference_weight: float = field(
        default=2.0, metadata=_help("λ_ref: weight of the reference teacher's term (invalid rollouts).")
    )
    opsd_weight: float = field(default=1.0, metadata=_help("Weight of the single OPSD term."))
    reward_weight: float = field(
        default=_SCORING.reward_weight,
        metadata=_help(
            "Weight of an outcome-reward term (0: off): each completion token's policy gradient, with its "
            "rollout's graded answer (1 correct, 0 not) minus the mean over the rollouts of the same prompt as "
            "the advantage. Beside the teachers' terms, or alone with method: grpo (configs/grpo_tiny.yaml)."
        ),
    )
    perception_divergence: str = field(
        default="forward_kl",
        metadata=_help(
            "Loss of the perception teacher: a divergence over the vocabulary (forward_kl, reverse_kl, jsd) or a "
            "sampled-token loss (sampled_k1, sampled_k3: reverse KL at the student's sampled token, policy-gradient "
            "style; needs only the teacher's log-probability of that token)."
        ),
    )
    reasoning_divergence: str = field(
        default="forward_kl", metadata=_help("Loss of the reasoning teacher (names as above).")
    )
    reference_divergence: str = field(
        default="reverse_kl", metadata=_help("Loss of the reference teacher (names as above).")
    )
    opsd_divergence: str = field(default="forward_kl", metadata=_help("Loss of the OPSD teacher (names as above)."))
    jsd_beta: float = field(
        default=_SCORING.jsd_beta, metadata=_help("beta of the generalized JSD (0: forward KL, 1: reverse KL).")
    )
    distill_temperature: float = field(
        default=_SCORING.distill_temperature,
        metadata=_help("Temperature applied to student and teacher logits in the loss."),
    )
    token_loss_clip: float | None = field(
        default=_SCORING.token_loss_clip,
        metadata=_help(
            "Clip of each token's divergence (None: no clip; release: 0.05). A "
            "clipped token gives no gradient: on a small or random model, whose "
            "student and teachers disagree by nats, 0.05 mutes almost every token."
        ),
    )
    description_end_clip: float | None = field(
        default=_SCORING.description_end_clip, metadata=_help("Clip of the last description token (boundary).")
    )
    reasoning_start_clip: float | None = field(
        default=_SCORING.reasoning_start_clip, metadata=_help("Clip of the first reasoning token (boundary).")
    )
    reasoning_sees_description: bool = field(
        default=False,
        metadata=_help(
            "Show the reasoning teacher the student's description before the "
            "reasoning (the paper's 'same prefix' reading)."
        ),
    )
    loss_chunk_size: int | None = field(
        default=_SCORING.loss_chunk_size,
        metadata=_help(
            "Tokens per chunk when projecting hidden states to the vocabulary in "
            "the loss: the loss holds about 3 x chunk x vocabulary floats (128 at "
            "Qwen's 151,936: 230 MB); None: one chunk through plain autograd."
        ),
    )
    teacher_batch_size: int = field(
        default=_SCORING.teacher_batch_size,
        metadata=_help("Sequences per teacher forward pass (bounds teacher memory)."),
    )
    teacher_top_k: int | None = field(
        default=_SCORING.teacher_top_k,
        metadata=_help(
            "Keep each teacher's k most likely tokens and the mass of the rest per "
            "supervised token, instead of its final hidden states; the divergence "
            "is then taken on those k + 1 bins (at most the full KL; equal when the "
            "rest has no mass). None: hidden states, the exact loss."
        ),
    )
    loss_normalization: str = field(
        default="step",
        metadata=_help(
            "'step': each term is a mean over its tokens in the whole optimizer "
            "step (every micro-batch, every process); 'micro_batch': a mean over "
            "each micro-batch's tokens on each process, then averaged (the "
            "release's way, which weighs a token by how full its micro-batch is)."
        ),
    )
    reuse_image_features: bool = field(
        default=_SCORING.reuse_image_features,
        metadata=_help(
            "Encode each image once per step under the teacher's weights and share "
            "the features with every teacher pass (and the student's, when the "
            "vision tower is not trained); false: every pass encodes its own."
        ),
    )
    naive_loss: bool = field(
        default=False,
        metadata=_help(
            "Compute the loss the public release's way: full-vocabulary logits of "
            "the student and every teacher pass, all kept at once (slow and "
            "memory-hungry; for reference and benchmarks)."
        ),
    )

    # Prompts: templates with {question} and {answer}.
    student_prompt: str = field(default=prompts.STUDENT_PROMPT, metadata=_help("Student prompt template ({question})."))
    perception_prompt: str = field(
        default=prompts.PERCEPTION_PROMPT,
        metadata=_help(
            "Perception teacher's text beside the image (no {question}, no "
            "{answer}); empty (the default, as in the release): the image alone."
        ),
    )
    reasoning_prompt: str = field(
        default=prompts.REASONING_PROMPT, metadata=_help("Reasoning teacher prompt ({question}, {answer}).")
    )
    reference_prompt: str = field(
        default=prompts.REFERENCE_PROMPT,
        metadata=_help("Reference teacher prompt ({question}, {answer}, the format instruction); also OPSD's teacher."),
    )
    perception_prefill: str = field(
        default=prompts.PERCEPTION_PREFILL,
        metadata=_help(
            "Assistant pre-fill of the perception teacher before the description "
            "tokens; empty (the default, as in the release): none."
        ),
    )

    # LoRA.
    use_lora: bool = field(
        default=True, metadata=_help("Train a LoRA adapter (the teacher is the adapter switched off).")
    )
    lora_r: int = field(default=64, metadata=_help("LoRA rank."))
    lora_alpha: int = field(default=128, metadata=_help("LoRA alpha."))
    lora_dropout: float = field(default=0.05, metadata=_help("LoRA dropout."))
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        metadata=_help(
            "Names of the modules LoRA adapts, wherever they are (release: "
            "q/k/v/o/gate/up/down_proj, which in Qwen2.5-VL also names the vision "
            "blocks' MLP)."
        ),
    )
    lora_vision_tower: bool = field(
        default=True,
        metadata=_help(
            "Let lora_target_modules match inside the vision tower too (the "
            "release's behaviour); false: the language model only."
        ),
    )

    # Logging.
    log_completions_steps: int = field(
        default=10, metadata=_help("Write a few sampled completions every N steps (0: never).")
    )
    num_completions_to_log: int = field(default=2, metadata=_help("How many completions to write each time."))

    # Shortcut diagnostics during training.
    diagnostics_steps: int = field(
        default=0,
        metadata=_help(
            "Run the shortcut diagnostics (grounding, leakage, teacher image reliance) every N steps (0: never)."
        ),
    )
    diagnostics_sample_size: int = field(
        default=8, metadata=_help("Training rows the diagnostics look at each time (bounds their cost).")
    )

    # Benchmarks during training (every eval_steps, TrainingArguments' own option).
    eval_benchmarks: list[str] | None = field(
        default=None,
        metadata=_help(
            "Evaluate the current policy on these benchmarks (registered names or YAML files, as vigos eval "
            "takes) every eval_steps steps and log their metrics (eval_<benchmark>_avg@k, ..._score_avg@k)."
        ),
    )
    eval_data_dir: str = field(default="data", metadata=_help("Where the eval_benchmarks' local copies are."))
    eval_limit: int | None = field(
        default=50, metadata=_help("Items of each eval benchmark each time (the first ones; None: all).")
    )
    eval_k: int = field(default=1, metadata=_help("Samples per item during training's evaluations (Avg@k, Pass@k)."))
    eval_judge_url: str | None = field(
        default=None,
        metadata=_help(
            "An OpenAI-compatible judge for the eval_benchmarks that need one (MM-Vet's partial credit), as "
            "vigos eval --judge-url; its key in $OPENAI_API_KEY."
        ),
    )
    eval_judge_model: str | None = field(default=None, metadata=_help("The model eval_judge_url serves."))

    # Trainer defaults that a rollout trainer needs.
    remove_unused_columns: bool = field(default=False, metadata=_help("Kept False: rows are whole examples."))
    learning_rate: float = field(default=5e-6, metadata=_help("Learning rate (release: 5e-6)."))
    max_grad_norm: float = field(default=0.1, metadata=_help("Gradient clipping norm (release: 0.1)."))

    def __post_init__(self) -> None:
        if self.report_to is None or (isinstance(self.report_to, str) and self.report_to.lower() in ("none", "null")):
            self.report_to = (
                "none"  # the Trainer takes None or "None" for an integration's name ("None is not supported")
            )
        # Checked before the Trainer's own set-up, which takes them as they are: a zero or negative
        # learning rate would otherwise surface from torch only once the model is loaded.
        check_trainer_numbers(self)
        super().__post_init__()
        check_options(self)

    @property
    def student_spec(self) -> prompts.PromptSpec:
        """The student's prompt spec: ``student_prompt`` and the ``<description>`` pre-fill."""
        return prompts.student_spec(self.student_prompt)

    @property
    def max_images_per_prompt(self) -> int:
        """The most images one prompt shows (what an inference engine reserves room for)."""
        if self.images_per_row == "first":
            return 1
        return self.max_images_per_row or _UNCAPPED_IMAGES

    def teacher_terms(self) -> list:
        """The method as data: one :class:`vigos.method.teachers.TeacherTerm` per loss term."""
        if self.method == "grpo":
            return []  # the outcome reward alone
        if self.method == "opsd":
            return opsd_terms(
                privileged_prompt=self.reference_prompt, divergence=self.opsd_divergence, weight=self.opsd_weight
            )
        return vigos_terms(
            perception_prompt=self.perception_prompt,
            reasoning_prompt=self.reasoning_prompt,
            reference_prompt=self.reference_prompt,
            perception_prefill=self.perception_prefill,
            perception_weight=self.perception_weight,
            reasoning_weight=self.reasoning_weight,
            reference_weight=self.reference_weight,
            perception_divergence=self.perception_divergence,
            reasoning_divergence=self.reasoning_divergence,
            reference_divergence=self.reference_divergence,
            reasoning_sees_description=self.reasoning_sees_description,
        )

    def build_rollout(self, processor: Any, *, model_path: str | None = None):
        """The :class:`vigos.rollout.hf.Rollout` ``rollout_engine`` names (``model_path``: the base checkpoint,
        which ``vllm_colocate`` loads). vLLM engines also have ``sync``, which the trainer calls every
        ``vllm_sync_steps`` optimizer steps."""
        from vigos.rollout.hf import HFGenerateRollout, SamplingParams

        params = SamplingParams(
            self.temperature, self.top_p, self.top_k, self.max_completion_length, self.num_generations
        )
        student = self.student_spec
        sync_dir = Path(self.output_dir) / "vllm-policy"
        if self.rollout_engine == "vllm_server":
            from vigos.rollout.vllm_server import VLLMServerRollout

            return VLLMServerRollout(
                processor,
                params,
                student,
                url=self.vllm_server_url,
                sync_dir=sync_dir,
                timeout=self.vllm_request_timeout,
            )
        if self.rollout_engine == "vllm_colocate":
            from vigos.rollout.vllm_colocate import VLLMColocateRollout

            if not model_path:
                raise ValueError("rollout_engine 'vllm_colocate' needs the base checkpoint's path for vLLM to load")
            return VLLMColocateRollout(
                processor,
                params,
                student,
                model_path=model_path,
                sync_dir=sync_dir,
                gpu_memory_utilization=self.vllm_gpu_memory_utilization,
                lora_rank=self.lora_r if self.use_lora else None,
                seed=self.seed,
                max_images_per_prompt=self.max_images_per_prompt,
            )
        return HFGenerateRollout(processor, params, student, sampler=self.rollout_sampler)

    def teacher_models(self) -> dict[str, str]:
        """The terms whose teacher is another model: {term name: where to load it from}."""
        roles = {term.name: getattr(self, f"{term.name}_teacher_model") for term in self.teacher_terms()}
        return {name: source for name, source in roles.items() if source}

    def separate_teachers(self, processor: Any, model: Any) -> dict[str, Any]:
        """Each role's teacher that is another model, loaded or connected once (see
        `vigos.training.teacher_models.load_separate_teachers`)."""
        from vigos.training.teacher_models import load_separate_teachers

        return load_separate_teachers(self, processor, model)

    def teacher_policy(self, model: Any) -> TeacherPolicy:
        """The teacher ``teacher`` names for ``model`` (build it before training starts)."""
        return make_teacher_policy(self.teacher, model, ema_decay=self.ema_decay)

    def build_scorer(
        self,
        processor: Any,
        *,
        teacher: TeacherPolicy | None = None,
        reduce_sum: Any = None,
        lockstep: bool = False,
        separate_teachers: dict[str, Any] | None = None,
    ):
        """The :class:`vigos.method.scoring.Scorer` this config describes (``teacher``: see
        :meth:`teacher_policy`; None scores with the model as it is; ``lockstep``: the same number of
        forward passes on every process, which sharded weights need; ``separate_teachers``: see
        :meth:`separate_teachers`)."""
        from vigos.method.full_logits import FullLogitsScorer
        from vigos.method.scoring import Scorer

        scorer = FullLogitsScorer if self.naive_loss else Scorer
        return scorer(
            processor,
            self.teacher_terms(),
            self.student_spec,
            teacher=teacher,
            options=ScoringOptions.from_settings(self),
            reduce_sum=reduce_sum,
            lockstep=lockstep,
            separate_teachers=separate_teachers,
        )
