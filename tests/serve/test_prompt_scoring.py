"""`vigos serve`'s /v1/completions with prompt_logprobs (a served teacher's answer) and /tokenize: the served
top-k equals the local model's, and malformed requests are refused naming the field."""

from __future__ import annotations

import json
import re

import pytest
import torch
from PIL import Image

from serve_requests import JSON, png, send
from vigos.models.modeling import Context, collate_contexts, encode_image, tokenize_prompt
from vigos.prompts import render_prompt
from vigos.rollout.served_teacher import PROBE, ServedTeacherClient

IMAGE = Image.new("RGB", (56, 84), (200, 30, 30))


def _context(processor) -> tuple[list[int], torch.Tensor]:
    """A teacher context (a prompt with the image, then some appended ids) and its local log-probabilities."""
    image = encode_image(processor, IMAGE)
    prompt = tokenize_prompt(processor, render_prompt(processor, "What colour?", "<description>", 1), image)
    ids = prompt + processor.tokenizer(" A red square. </description>", add_special_tokens=False)["input_ids"]
    batch = collate_contexts([Context(ids, [], image)], pad_token_id=processor.tokenizer.pad_token_id)
    return ids, batch


def test_served_top_k_is_the_local_models(url, policy):
    ids, batch = _context(policy.processor)
    with torch.no_grad():
        local = torch.log_softmax(policy.model(**batch).logits[0].float(), -1)
    served = ServedTeacherClient(url, option="test").prompt_logprobs(ids, [IMAGE], 5)
    assert served[0] is None and len(served) == len(ids)
    for position in range(1, len(ids)):
        entry = served[position]
        top = local[position - 1].topk(5)
        expected = dict(zip(top.indices.tolist(), top.values.tolist()))
        # The prompt's own token is listed too, when it is not among the top 5.
        expected[ids[position]] = local[position - 1, ids[position]].item()
        assert entry.keys() == expected.keys()
        for token, value in expected.items():
            assert entry[token] == pytest.approx(value, abs=1e-5)


def test_the_answer_has_vllms_shape_with_ranks(url, policy):
    ids, _ = _context(policy.processor)
    request = {"model": "tiny", "prompt": ids, "max_tokens": 1, "prompt_logprobs": 2}
    request["multi_modal_data"] = {"image": [png(IMAGE)]}
    status, answer, _ = send(url, "POST", "/v1/completions", json.dumps(request).encode(), JSON)
    assert status == 200, answer
    choice = answer["choices"][0]
    assert answer["object"] == "text_completion" and choice["prompt_logprobs"][0] is None
    assert len(choice["token_ids"]) == 1 and answer["prompt_token_ids"] == ids
    for entry in choice["prompt_logprobs"][1:]:
        ranks = sorted(value["rank"] for value in entry.values())
        assert ranks[:2] == [1, 2] and all(isinstance(value["decoded_token"], str) for value in entry.values())


@pytest.mark.parametrize(
    "change,message",
    [
        ({"prompt": "text"}, "prompt must be a non-empty list of token ids"),
        ({"prompt": [10**9]}, "outside the vocabulary"),
        ({"prompt_logprobs": None}, "prompt_logprobs is required"),
        ({"prompt_logprobs": -2}, "prompt_logprobs must be -1"),
        ({"max_tokens": 4}, "max_tokens must be 1"),
        ({"echo": True}, "echo=True is not supported"),
        ({"multi_modal_data": {"video": []}}, "multi_modal_data must be an object with one key, 'image'"),
        ({"multi_modal_data": {"image": ["file:///etc/passwd"]}}, r"multi_modal_data.image\[0\] must be a base64"),
        ({"multi_modal_data": None}, "image placeholder tokens"),
        ({"model": "other"}, "The model `other` does not exist"),
    ],
)
def test_malformed_scoring_requests_are_refused_naming_the_field(url, policy, change, message):
    ids, _ = _context(policy.processor)
    request = {"model": "tiny", "prompt": ids, "max_tokens": 1, "prompt_logprobs": 2}
    request["multi_modal_data"] = {"image": [png(IMAGE)]}
    request.update(change)
    status, answer, _ = send(url, "POST", "/v1/completions", json.dumps(request).encode(), JSON)
    assert status in (400, 404), answer
    assert re.search(message, answer["error"]["message"]), answer


def test_tokenize_gives_the_tokenizers_ids(url, policy):
    request = {"prompt": PROBE, "add_special_tokens": False}
    status, answer, _ = send(url, "POST", "/tokenize", json.dumps(request).encode(), JSON)
    assert status == 200
    assert answer["tokens"] == policy.processor.tokenizer(PROBE, add_special_tokens=False)["input_ids"]
    assert answer["count"] == len(answer["tokens"])
    ServedTeacherClient(url, option="test").check_vocabulary(policy.processor.tokenizer)
