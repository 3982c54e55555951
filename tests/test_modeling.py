"""Our context encoding equals the processor's, and hidden states match the model's logits."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from vigos.modeling import Context, collate_contexts, encode_image, final_hidden_states, image_token_id, output_head, tokenize_prompt
from vigos.prompts import render_prompt


@pytest.mark.parametrize("fixture_name", ["tiny_model_dir", "tiny_qwen3_dir"])
def test_encoding_matches_processor_and_hidden_states_give_logits(request, fixture_name):
    path = request.getfixturevalue(fixture_name)
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    image = Image.new("RGB", (100, 80), (10, 200, 30))
    text = render_prompt(processor, "What is shown?", "<description>")
    ours = tokenize_prompt(processor, text, encode_image(processor, image))
    enc = processor(text=[text], images=[image], return_tensors="pt", return_mm_token_type_ids=True)
    assert ours == enc["input_ids"][0].tolist()
    appended = processor.tokenizer(" a green box", add_special_tokens=False)["input_ids"]
    contexts = [Context(ours, appended, encode_image(processor, image)), Context(ours, [], encode_image(processor, image))]
    batch = collate_contexts(contexts, pad_token_id=processor.tokenizer.pad_token_id, image_token=image_token_id(processor))
    assert torch.equal(batch["pixel_values"], torch.cat([enc["pixel_values"]] * 2))
    with torch.no_grad():
        hidden = final_hidden_states(model, batch)
        logits = model(**batch).logits
    assert torch.allclose(hidden @ output_head(model).T, logits, atol=1e-5)
