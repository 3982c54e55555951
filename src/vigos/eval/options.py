"""The options of one ``vigos eval`` run, checked when they are given.

:class:`EvalConfig` holds what the runner (:mod:`vigos.eval.runner`) needs;
each bad value is a :class:`ValueError` whose message starts with the
option's name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigos import prompts
from vigos.data.rows import BAD_ROW_MODES
from vigos.eval.engines import ENGINES
from vigos.eval.protocols import DEFAULT_PROTOCOL, check_protocol
from vigos.rollout.hf import SamplingParams

__all__ = ["EvalConfig", "default_run_name"]


def default_run_name(model: str) -> str:
    """A short name for a run of ``model``: the last path component, ``:`` turned into ``-``."""
    return model.rstrip("/\\").replace(":", "-").replace("\\", "/").split("/")[-1] or "model"


@dataclass
class EvalConfig:
    """Settings of one evaluation run (sampling defaults: the paper's, METHOD.md).

    ``model`` is a merged model directory, a hub id, ``tiny:<arch>`` or a LoRA
    adapter directory (its ``adapter_config.json`` names the base model).
    ``benchmarks`` are registered names or YAML files, read from
    ``data_dir``. ``k`` is the k of Pass@k/Avg@k; ``n_samples`` (default: k)
    samples are drawn per item, and Pass@k is the unbiased estimate when
    ``n_samples > k``. ``batch_size`` counts questions per generation call
    (each expands to ``n_samples`` sequences); results are flushed after each
    call, and with vLLM a larger value (e.g. 256) keeps the GPU busy.
    ``limit`` keeps the first items of each benchmark. ``engine`` is ``hf``,
    ``vllm`` or ``auto`` (vLLM when it is installed and a GPU is present).
    Items graded ``judge`` are sent to the OpenAI-compatible judge at
    ``judge_url`` (model ``judge_model``, key in ``$judge_api_key_env``);
    without one, the rule verdict stands. ``run_name`` labels the run in
    summaries and reports (default: from ``model``); the files go to ``out_dir``. An item with several
    images shows the model each as its own image, in order; ``tile_images`` tiles them into one picture
    instead, for models that take one image. ``protocol`` is ``official`` or ``paper``
    (:mod:`vigos.eval.protocols`). ``prompt_file`` names a file whose text is the whole user turn,
    used verbatim with ``{question}`` substituted and no pre-fill (it replaces ``student_prompt``).
    ``bad_rows`` is ``skip`` (leave a bad benchmark row out, with a warning naming it) or ``error``
    (stop at it), as for training data.
    """

    model: str
    benchmarks: list[str]
    data_dir: str
    out_dir: str
    k: int = 5
    n_samples: int | None = None
    temperature: float = 1.0
    top_p: float = 0.9
    top_k: int = 50
    max_new_tokens: int = 4096
    batch_size: int = 8
    limit: int | None = None
    seed: int = 0
    student_prompt: str = prompts.STUDENT_PROMPT
    engine: str = "auto"
    server_url: str | None = None
    judge_url: str | None = None
    judge_model: str | None = None
    judge_api_key_env: str = "OPENAI_API_KEY"
    run_name: str | None = None
    tile_images: bool = False
    protocol: str = DEFAULT_PROTOCOL
    prompt_file: str | None = None
    bad_rows: str = "skip"

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError("model is empty: give a model directory, hub id, tiny:<arch> or LoRA adapter directory")
        if isinstance(self.benchmarks, str):
            self.benchmarks = self.benchmarks.split(",")
        names = [str(name).strip() for name in self.benchmarks if str(name).strip()]
        if not names:
            raise ValueError("benchmarks is empty: name at least one, e.g. --benchmarks vilp-f,mathvista")
        self.benchmarks = list(dict.fromkeys(names))
        for option in ("data_dir", "out_dir"):
            if not str(getattr(self, option) or "").strip():
                raise ValueError(f"{option} is empty: give a directory")
        for option, minimum in (("k", 1), ("max_new_tokens", 1), ("batch_size", 1), ("top_k", 0)):
            _check_int(option, getattr(self, option), minimum)
        if self.n_samples is not None:
            _check_int("n_samples", self.n_samples, 1)
            if self.n_samples < self.k:
                raise ValueError(
                    f"n_samples ({self.n_samples}) must be at least k ({self.k}): Pass@k needs k samples per item"
                )
        if self.limit is not None:
            _check_int("limit", self.limit, 1)
        _check_int("seed", self.seed, None)
        if not self.temperature > 0:
            raise ValueError(
                f"temperature must be > 0 (the protocol samples; the paper uses 1.0), got {self.temperature}"
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        self.protocol = check_protocol(self.protocol)
        if self.bad_rows not in BAD_ROW_MODES:
            raise ValueError(f"bad_rows must be one of {', '.join(BAD_ROW_MODES)}, got {self.bad_rows!r}")
        option = "student_prompt"
        if self.prompt_file is not None:
            if self.student_prompt != prompts.STUDENT_PROMPT:
                raise ValueError("prompt_file replaces student_prompt: give one of them, not both")
            option = "prompt_file"
            self.student_prompt = _read_prompt_file(self.prompt_file)
        fields_used = prompts.template_fields(self.student_prompt)
        if "question" not in fields_used or "answer" in fields_used:
            raise ValueError(
                f"{option} must contain {{question}} and must not contain {{answer}} "
                "(the student never sees the reference answer)"
            )
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.engine == "server" and not str(self.server_url or "").startswith(("http://", "https://")):
            raise ValueError(
                "engine 'server' needs server_url (--server-url http://HOST:PORT), the base URL of "
                f"a running 'vllm serve' or 'vigos serve'; got {self.server_url!r}"
            )
        if self.judge_url is not None:
            if not self.judge_url.startswith(("http://", "https://")):
                raise ValueError(f"judge_url must start with http:// or https://, got {self.judge_url!r}")
            if not self.judge_model:
                raise ValueError("judge_model is not set: name the model the judge server serves (--judge-model)")
        if self.run_name is None:
            self.run_name = default_run_name(self.model)

    @property
    def samples_per_item(self) -> int:
        """Samples drawn per item: ``n_samples``, or ``k`` when it is not set."""
        return self.n_samples if self.n_samples is not None else self.k

    def sampling_params(self) -> SamplingParams:
        """The rollout settings of this run."""
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            max_new_tokens=self.max_new_tokens,
            num_samples=self.samples_per_item,
        )

    def sample_settings(self) -> dict[str, Any]:
        """What the recorded samples depend on; a resumed run must match it."""
        return {
            "model": self.model,
            "k": self.k,
            "n_samples": self.samples_per_item,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
            "student_prompt": self.student_prompt,
            "judge_model": self.judge_model if self.judge_url else None,
            "tile_images": self.tile_images,
            "protocol": self.protocol,
            "prompt_prefill": self.student_spec().prefill,
        }

    def student_spec(self) -> prompts.PromptSpec:
        """The student's context: the ViGOS student spec with ``student_prompt``, or the prompt file verbatim."""
        if self.prompt_file is not None:
            return prompts.PromptSpec(self.student_prompt, "")
        return prompts.student_spec(self.student_prompt)

    def to_dict(self) -> dict[str, Any]:
        """The options as a plain dict."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}


def _read_prompt_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"prompt_file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"prompt_file {path} cannot be read as UTF-8 text ({error})") from None


def _check_int(option: str, value: Any, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{option} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{option} must be at least {minimum}, got {value}")
