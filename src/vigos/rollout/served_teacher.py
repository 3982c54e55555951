"""A teacher role served by an OpenAI-compatible server: its prompt log-probabilities of given token ids.

The request is vLLM's completions shape with token ids as the prompt (``prompt_logprobs: k``,
``max_tokens: 1``; the images as data URLs under ``multi_modal_data.image``), which ``vigos serve``
answers (:mod:`vigos.serve.prompt_scoring`). Token ids go in, so the teacher reads the student's own
tokens, never a re-tokenized text. At start the client checks that the server's tokenizer maps a
probe text (the method's tags, a chat turn) to the student's ids, through vLLM's ``/tokenize``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vigos.errors import ConfigError
from vigos.rollout.vllm_server import (
    RESPONSE_BASE_BYTES,
    RolloutEngineError,
    ServerClient,
    image_data_url,
    server_api_key,
)

# What the vocabulary check tokenizes: the method's tags and a chat turn's special tokens, with text
# whose merges differ between tokenizers.
PROBE = (
    "<|im_start|>user\nLeaves are green. What colour is the leaf in the image?<|im_end|>\n<|im_start|>assistant\n"
    "<description> A small orange leaf at the top. </description>\n<think> It is orange. </think>\n"
    "\\boxed{orange}<|im_end|>"
)
# Bytes one position's entry takes in the answer, per token it lists (id, log-probability, rank, text).
_BYTES_PER_ENTRY = 160


class ServedTeacherClient:
    """`vigos.method.teachers.ServedTeacher` over HTTP: one request per teacher sequence.

    ``url``: the server's base URL; ``option``: the setting that named it, for messages. The served
    model is the server's base model (the first of ``/v1/models``). The API key comes from the
    environment, as for the vLLM rollouts (``$VLLM_API_KEY``, else ``$VIGOS_SERVE_API_KEY``).
    """

    def __init__(self, url: str, *, option: str, timeout: float = 600.0):
        self.source = url
        self.option = option
        self.client = ServerClient(url, timeout=timeout, api_key=server_api_key())
        try:
            models = self.client.get("/v1/models")
        except RolloutEngineError as error:
            raise ConfigError(f"{option} {url!r}: {error}") from None
        self.model = str(models["data"][0]["id"])

    def check_vocabulary(self, tokenizer: Any) -> None:
        """Stop with a :class:`ConfigError` unless the server tokenizes `PROBE` into the student's ids."""
        expected = tokenizer(PROBE, add_special_tokens=False)["input_ids"]
        try:
            served = self.client.post("/tokenize", {"model": self.model, "prompt": PROBE, "add_special_tokens": False})[
                "tokens"
            ]
        except RolloutEngineError as error:
            raise ConfigError(f"{self.option} {self.source!r}: the vocabulary check failed: {error}") from None
        if served != expected:
            first = next(
                (i for i, (a, b) in enumerate(zip(expected, served)) if a != b), min(len(expected), len(served))
            )
            raise ConfigError(
                f"{self.option} {self.source!r} cannot teach this student: the server's tokenizer differs from the "
                f"student's (a probe text is {len(served)} tokens there, {len(expected)} here; they part at token "
                f"{first}). A served teacher reads the student's token ids, so it must share the student's tokenizer."
            )

    def prompt_logprobs(
        self, prompt_ids: Sequence[int], images: Sequence[Any], top_k: int
    ) -> list[dict[int, float] | None]:
        """The server's log-probabilities at each position of ``prompt_ids`` (see `ServedTeacher`)."""
        self.client.max_response_bytes = RESPONSE_BASE_BYTES + len(prompt_ids) * (top_k + 1) * _BYTES_PER_ENTRY
        body = {
            "model": self.model,
            "prompt": list(prompt_ids),
            "max_tokens": 1,
            "prompt_logprobs": top_k,
            "multi_modal_data": {"image": [image_data_url(image) for image in images]},
        }
        answer = self.client.post("/v1/completions", body)
        try:
            scored = answer["choices"][0]["prompt_logprobs"]
        except (KeyError, IndexError, TypeError):
            raise RolloutEngineError(
                f"{self.option} {self.source!r} answered /v1/completions without choices[0].prompt_logprobs: is it "
                "a server that returns prompt log-probabilities (vLLM, vigos serve)?"
            ) from None
        if len(scored) != len(prompt_ids):
            raise RolloutEngineError(
                f"{self.option} {self.source!r} returned {len(scored)} prompt log-probabilities for {len(prompt_ids)} "
                "prompt tokens"
            )
        return [
            None if entry is None else {int(token): float(value["logprob"]) for token, value in entry.items()}
            for entry in scored
        ]
