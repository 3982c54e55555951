"""``POST /v1/completions`` with ``prompt_logprobs``: a served teacher's log-probabilities of given token ids.

The request is vLLM's completions shape with token ids as the prompt: ``prompt`` (the teacher's
context: its prompt, each image's placeholder run expanded, then the student's own token ids),
``prompt_logprobs`` (k: the top-k log-probabilities at each position; -1: the whole vocabulary),
``max_tokens`` 1, and the images as base64 data URLs under ``multi_modal_data.image`` in order
(the key vLLM's offline prompts use). Token ids go in, so nothing is re-tokenized: the teacher
predicts each token after exactly the ids the student had.

The answer is vLLM's: ``choices[0].prompt_logprobs`` holds ``null`` for the first position and, for
every later position i, ``{"<token id>": {"logprob", "rank", "decoded_token"}}`` over the k most
likely tokens given positions < i, plus the prompt's own token i when it is not among them. Log-
probabilities are the model's own (temperature 1), in float32. The one generated token is the
greedy one.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from vigos.models.modeling import Context, collate_contexts, encode_image, image_token_id
from vigos.serve.checks import RequestError, image_from_data_url, integer, string

# Fields of vLLM's completions request that this route does not honour: refused unless left at these.
_UNSUPPORTED = {
    "echo": (None, False),
    "logprobs": (None, 0),
    "n": (None, 1),
    "stream": (None, False),
    "suffix": (None, ""),
    "best_of": (None, 1),
}


@dataclass(frozen=True)
class PromptScoring:
    """A checked prompt-scoring request."""

    model: str | None
    prompt: list[int]
    top_k: int  # -1: the whole vocabulary
    images: list[Image.Image]


def prompt_scoring_request(body: dict[str, Any], *, vocab_size: int) -> PromptScoring:
    """The request's fields, checked for type and range; 400 naming the field."""
    for key, unused in _UNSUPPORTED.items():
        if body.get(key) not in unused:
            raise RequestError(400, f"{key}={body[key]!r} is not supported by this server's /v1/completions")
    prompt = body.get("prompt")
    if not isinstance(prompt, list) or not prompt or not all(type(i) is int for i in prompt):
        raise RequestError(
            400, "prompt must be a non-empty list of token ids: this server scores token ids, never text"
        )
    outside = [i for i in prompt if not 0 <= i < vocab_size]
    if outside:
        raise RequestError(400, f"prompt holds token ids outside the vocabulary of {vocab_size}: {outside[:5]}")
    top_k = integer(body, "prompt_logprobs", None)
    if top_k is None:
        raise RequestError(400, "prompt_logprobs is required: this server's /v1/completions scores prompts")
    if not (top_k == -1 or 0 <= top_k <= vocab_size):
        raise RequestError(400, f"prompt_logprobs must be -1 (every token) or between 0 and {vocab_size}, got {top_k}")
    if integer(body, "max_tokens", 16) != 1:
        raise RequestError(400, f"max_tokens must be 1 on this server's /v1/completions, got {body.get('max_tokens')}")
    data = body.get("multi_modal_data") or {}
    if not isinstance(data, dict) or set(data) - {"image"}:
        raise RequestError(400, "multi_modal_data must be an object with one key, 'image'")
    urls = data.get("image", [])
    urls = [urls] if isinstance(urls, str) else urls
    if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
        raise RequestError(400, "multi_modal_data.image must be a data URL or a list of them")
    images = [image_from_data_url(url, f"multi_modal_data.image[{index}]") for index, url in enumerate(urls)]
    return PromptScoring(string(body, "model"), list(prompt), top_k, images)


@torch.no_grad()
def prompt_logprobs(model: torch.nn.Module, processor: Any, request: PromptScoring) -> tuple[list[Any], int]:
    """vLLM's ``prompt_logprobs`` list for ``request`` on ``model``, and the greedy next token."""
    image = encode_image(processor, request.images) if request.images else None
    placeholder = image_token_id(processor)
    found, needed = request.prompt.count(placeholder), image.num_tokens if image else 0
    if found != needed:
        raise RequestError(
            400,
            f"prompt holds {found} image placeholder tokens ({placeholder}) but its {len(request.images)} image(s) "
            f"take {needed}: expand each image's placeholder to its token count, as the processor does",
        )
    tokenizer = processor.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batch = collate_contexts([Context(request.prompt, [], image)], pad_token_id=pad)
    device = next(model.parameters()).device
    batch = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
    was_training = model.training
    model.eval()
    try:
        logits = model(**batch, use_cache=False).logits[0].float()
    finally:
        model.train(was_training)
    log_probs = torch.log_softmax(logits, dim=-1).cpu()
    vocab = log_probs.shape[-1]
    k = vocab if request.top_k == -1 else request.top_k
    # Ranks by sorting once per position (1: the most likely token).
    order = log_probs[:-1].argsort(dim=-1, descending=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(1, vocab + 1).expand_as(order).contiguous())
    rows: list[list[int]] = []
    for position in range(1, len(request.prompt)):
        top = order[position - 1, :k].tolist()
        actual = request.prompt[position]
        rows.append(top if actual in top else [*top, actual])
    needed = sorted({token for row in rows for token in row})
    decoded = dict(zip(needed, processor.tokenizer.batch_decode([[token] for token in needed])))
    result: list[Any] = [None]
    for position, tokens in enumerate(rows):
        values = log_probs[position, tokens].tolist()
        places = ranks[position, tokens].tolist()
        result.append(
            {
                str(token): {"logprob": value, "rank": place, "decoded_token": decoded[token]}
                for token, value, place in zip(tokens, values, places)
            }
        )
    return result, int(log_probs[-1].argmax())


def completion_answer(
    model: str, request: PromptScoring, scored: list[Any], next_token: int, tokenizer: Any
) -> dict[str, Any]:
    """vLLM's completions answer for a scored prompt (one choice, its one greedy token)."""
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": tokenizer.decode([next_token]),
                "token_ids": [next_token],
                "logprobs": None,
                "finish_reason": "length",
                "stop_reason": None,
                "prompt_logprobs": scored,
            }
        ],
        "prompt_token_ids": request.prompt,
        "usage": {
            "prompt_tokens": len(request.prompt),
            "completion_tokens": 1,
            "total_tokens": len(request.prompt) + 1,
        },
    }
