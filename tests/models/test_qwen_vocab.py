"""Qwen's real vocabulary: the quicktok data format, the conversion to a tokenizers BPE, the family tokens and
templates, and the make-tiny command; the converted tokenizer must give quicktok's own ids."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import unicodedata
from importlib import resources

import pytest
import quicktok
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from transformers import AutoProcessor

from vigos.cli import main
from vigos.models import qwen_vocab
from vigos.models.qwen_vocab import (
    NUM_RANKS,
    PADDED_VOCAB_SIZE,
    added_tokens,
    chat_template,
    parse_ranks,
    parse_specials,
)
from vigos.models.tiny import make_tiny

LAST_ID = {"qwen2_vl": 151656, "qwen2_5_vl": 151664, "qwen3_vl": 151668}
TAGS = ("<description>", "</description>", "<think>", "</think>", "\\boxed{")
CORPUS = [
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    "for (int i = 0; i < n; ++i) { s += a[i]; }  // C\r\n",
    "\\frac{a}{b} + \\sqrt{x^2 + y^2} = \\int_0^1 f(t)\\,dt \\quad \\boxed{\\frac{1}{2}}",
    "数学题：三角形的面积是多少？答案是 12。日本語のテキスト、한국어 텍스트。",
    "emoji 🙂🙃👍🏽 👨‍👩‍👧 flags 🇫🇷🇯🇵 and ❤️",
    "a  b   c    d     e\n\n\n\n  \n \t \t\n",
    "      leading spaces and trailing      ",
    "café naïve Ångström e\u0301 a\u0308 o\u0302\u0323 \u212b \ufb01 \u1e9b\u0323 Hangul \u1100\u1161\u11a8",
    "I'm you're they've we'll it's He'd SHE'S don't",
    "1234567890 3.14159 1e-10 0x1F 1,000,000 -42 +7",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "<|vision_start|><|image_pad|><|vision_end|>What colour?",
    '<tool_call>{"name": "f"}</tool_call> <|fim_prefix|>x<|fim_suffix|>',
    "<description> A red circle. </description>\n<think> The circle is red. </think>\n\\boxed{red}",
    "prefix<think>inside</think>suffix",
] + [
    f"{left}{tag}{right}"
    for tag in TAGS
    for left in ("", " ", "\n", "x", "  ", ".\n")
    for right in ("", " ", "\n", "\n\n", " A", "}", "x")
]


@pytest.fixture(scope="module")
def encoding():
    return quicktok.get_encoding("qwen3")


@pytest.fixture(scope="module")
def family(qwen_vocab_model_dir):
    """(arch, the processor loaded back from that family's real-vocabulary checkpoint)."""
    return qwen_vocab_model_dir.name, AutoProcessor.from_pretrained(qwen_vocab_model_dir)


@pytest.fixture(scope="module")
def family_tokenizer(family):
    """(arch, that family's tokenizer as loaded back)."""
    arch, processor = family
    return arch, processor.tokenizer


def quicktok_ids(encoding, tokenizer, text: str) -> list[int]:
    """quicktok's ids of ``text`` with this family's added tokens as tokens and the later ones as plain text."""
    added = set(tokenizer.get_added_vocab())
    return encoding.encode(text, allowed_special=added, disallowed_special=())


def pack_vocab(tokens: list[bytes]) -> bytes:
    records = b"".join(struct.pack("<H", len(t)) + t + struct.pack("<I", rank) for rank, t in enumerate(tokens))
    return struct.pack("<I", len(tokens)) + records


def test_parse_ranks_reads_the_format():
    tokens = [bytes([b]) for b in range(256)] + [b"ab", b"abc"]
    assert parse_ranks(pack_vocab(tokens)) == tokens
    with pytest.raises(ValueError, match="truncated"):
        parse_ranks(pack_vocab(tokens)[:-3])
    with pytest.raises(ValueError, match="trailing bytes"):
        parse_ranks(pack_vocab(tokens) + b"\0")
    with pytest.raises(ValueError, match="misses a single byte"):
        parse_ranks(pack_vocab(tokens[1:]))
    swapped = bytearray(pack_vocab(tokens))
    swapped[-4:] = struct.pack("<I", 9)
    with pytest.raises(ValueError, match="holds rank 9"):
        parse_ranks(bytes(swapped))


def test_quicktok_files_hold_the_qwen_ranks_and_specials(encoding):
    data = resources.files("quicktok").joinpath("data")
    tokens = parse_ranks(data.joinpath("qwen3.vocab").read_bytes())
    assert len(tokens) == NUM_RANKS
    for rank in (0, 1000, 50_000, NUM_RANKS - 1):
        assert encoding.decode_single_token_bytes(rank) == tokens[rank]
    specials = parse_specials(data.joinpath("qwen3.special").read_bytes())
    assert list(specials.values()) == list(range(NUM_RANKS, NUM_RANKS + 26))
    assert specials["<|endoftext|>"] == 151643 and specials["</think>"] == 151668


@pytest.mark.parametrize("arch", sorted(LAST_ID))
def test_family_added_tokens(arch):
    added = added_tokens(arch)
    assert [token_id for _, token_id, _ in added] == list(range(NUM_RANKS, LAST_ID[arch] + 1))
    ids = {name: token_id for name, token_id, _ in added}
    assert (ids["<|endoftext|>"], ids["<|im_start|>"], ids["<|im_end|>"]) == (151643, 151644, 151645)
    assert (ids["<|vision_start|>"], ids["<|image_pad|>"], ids["<|video_pad|>"]) == (151652, 151655, 151656)
    # Special up to <|video_pad|>; the tool, FIM and think tags are ordinary added tokens.
    assert [name for name, _, special in added if not special] == [name for name, i, _ in added if i > 151656]
    if arch == "qwen3_vl":
        assert (ids["<think>"], ids["</think>"]) == (151667, 151668)


def test_loaded_tokenizer_has_the_family_tokens(family_tokenizer):
    arch, tok = family_tokenizer
    assert type(tok).__name__ == "Qwen2Tokenizer"
    assert len(tok) == LAST_ID[arch] + 1 <= PADDED_VOCAB_SIZE
    assert (tok.eos_token, tok.pad_token, tok.bos_token, tok.unk_token) == ("<|im_end|>", "<|endoftext|>", None, None)
    assert (tok.eos_token_id, tok.pad_token_id) == (151645, 151643)
    decoder = tok.added_tokens_decoder
    for name, token_id, special in added_tokens(arch):
        assert (decoder[token_id].content, decoder[token_id].special) == (name, special)


def test_ids_equal_quicktok_on_a_varied_corpus(family_tokenizer, encoding):
    _, tok = family_tokenizer
    for text in CORPUS:
        assert tok(text, add_special_tokens=False)["input_ids"] == quicktok_ids(encoding, tok, text), text


def test_every_token_of_the_vocabulary_encodes_as_quicktok_does(encoding):
    # Each token's own text (those that are whole UTF-8) is the hardest case for the merge order: a wrong
    # order shows up as a token reached by other merges, or not at all.
    tokenizer = qwen_vocab.build_qwen_tokenizer("qwen2_vl")
    texts = []
    for rank in range(NUM_RANKS):
        try:
            texts.append(encoding.decode_single_token_bytes(rank).decode())
        except UnicodeDecodeError:
            continue
    assert len(texts) > 140_000
    got = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    mismatched = [text for text, enc in zip(texts, got) if enc.ids != encoding.encode_ordinary(text)]
    assert not mismatched, mismatched[:10]


@settings(max_examples=150, deadline=None)
@given(text=st.text())
def test_ids_equal_quicktok_on_random_text(family_tokenizer, encoding, text):
    _, tok = family_tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == quicktok_ids(encoding, tok, text)
    assert tok.decode(ids) == encoding.decode(ids)
    # Without an added token's text inside, decoding gives the text back, in NFC as the normalizer wrote it.
    assume(not any(name in text for name in tok.get_added_vocab()))
    assert tok.decode(ids) == unicodedata.normalize("NFC", text)


@settings(max_examples=100, deadline=None)
@given(
    parts=st.lists(
        st.one_of(st.sampled_from(TAGS + ("<|im_end|>", "<|image_pad|>", " ", "\n", "\n\n")), st.text(max_size=8)),
        max_size=8,
    )
)
def test_ids_equal_quicktok_around_tags_and_added_tokens(family_tokenizer, encoding, parts):
    _, tok = family_tokenizer
    text = "".join(parts)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == quicktok_ids(encoding, tok, text)
    # Added tokens are matched before NFC, as quicktok does: an added token's text always comes back.
    assert tok.decode(ids) == encoding.decode(ids)


@pytest.mark.parametrize("text", CORPUS[:10])
def test_decode_round_trips(family_tokenizer, text):
    _, tok = family_tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == unicodedata.normalize("NFC", text)


def test_bpe_merges_across_our_tags(family_tokenizer):
    arch, tok = family_tokenizer

    def pieces(text: str) -> list[str]:
        return [tok.decode([i]) for i in tok(text, add_special_tokens=False)["input_ids"]]

    # A tag's closing ">" and the newline after it are one token, in every family.
    assert pieces(">\n") == [">\n"]
    assert pieces("</description>\n") == ["</", "description", ">\n"]
    assert pieces("<description> A") == ["<", "description", ">", " A"]
    assert pieces(" </description>\n") == [" </", "description", ">\n"]
    assert pieces("\\boxed{42}") == ["\\", "boxed", "{", "4", "2", "}"]
    if arch == "qwen3_vl":
        # Added tokens: never merged with their neighbours, and kept by skip_special_tokens.
        assert pieces("<think>\n") == ["<think>", "\n"] and pieces(" <think> ") == [" ", "<think>", " "]
        ids = tok("<|im_start|><think>x</think><|im_end|>", add_special_tokens=False)["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == "<think>x</think>"
    else:
        # Plain text: the same tag is different tokens after a space, and its ">" takes the newline.
        assert pieces("<think>\n") == ["<th", "ink", ">\n"]
        assert pieces(" <think> ") == [" <", "think", ">", " "]
        assert pieces("</think>\n") == ["</", "think", ">\n"]


def test_chat_templates_in_the_real_layout(family):
    arch, processor = family
    system = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" if arch != "qwen3_vl" else ""
    image = "<|vision_start|><|image_pad|><|vision_end|>"

    def render(messages: list[dict], **options) -> str:
        return processor.apply_chat_template(messages, tokenize=False, **options)

    only_image = [{"role": "user", "content": [{"type": "image"}]}]
    assert render(only_image, add_generation_prompt=True) == (
        f"{system}<|im_start|>user\n{image}<|im_end|>\n<|im_start|>assistant\n"
    )
    question = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Same?"}]
    two_images = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": [{"type": "text", "text": "No."}]},
    ]
    assert render(two_images) == (
        f"{system}<|im_start|>user\n{image}{image}Same?<|im_end|>\n<|im_start|>assistant\nNo.<|im_end|>\n"
    )
    assert render(two_images[:1], add_vision_id=True).count("Picture 2: ") == 1
    # A system message of its own replaces the default one.
    own = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert render(own, add_generation_prompt=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert processor.tokenizer.chat_template == chat_template(arch)


def test_converted_tokenizer_is_cached_on_disk(monkeypatch, tmp_path):
    calls = []

    class Converted:
        def to_str(self) -> str:
            return '{"converted": true}'

    def convert(tokens: list[bytes]) -> Converted:
        calls.append(len(tokens))
        return Converted()

    monkeypatch.setattr(qwen_vocab, "convert_ranks", convert)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    # The undecorated function: the module's in-process cache would hide the disk cache.
    assert qwen_vocab._base_json.__wrapped__() == '{"converted": true}'
    assert qwen_vocab._base_json.__wrapped__() == '{"converted": true}'
    assert calls == [NUM_RANKS]
    assert [p.name for p in (tmp_path / "vigos").iterdir()] == [f"qwen_bpe_{qwen_vocab.fingerprint()}.json"]
    # An unwritable cache costs the conversion again, never an error.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "vigos" / f"qwen_bpe_{qwen_vocab.fingerprint()}.json"))
    assert qwen_vocab._base_json.__wrapped__() == '{"converted": true}'
    assert calls == [NUM_RANKS, NUM_RANKS]


def test_make_tiny_command_with_the_real_vocabulary(qwen_vocab_root, capsys):
    # The fixtures' directory and recipe: whichever comes first builds it, the other finds it complete.
    out = qwen_vocab_root / "qwen3_vl"
    assert main(["make-tiny", "--arch", "qwen3_vl", "--vocab", "qwen", "--out", str(out)]) == 0
    assert "(micro, qwen vocabulary)" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["text_config"]["vocab_size"] == PADDED_VOCAB_SIZE and config["tie_word_embeddings"] is True
    recipe = json.loads((out / "vigos_tiny.json").read_text())["recipe"]
    assert (recipe["vocab"], recipe["size"], recipe["qwen_vocab"]) == ("qwen", "micro", qwen_vocab.fingerprint())


def test_importing_vigos_leaves_quicktok_alone():
    script = "import sys, vigos.cli, vigos.models.qwen_vocab, vigos.models.tiny; sys.exit('quicktok' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", script], timeout=300).returncode == 0, "vigos imported quicktok"


def test_without_quicktok_make_tiny_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "quicktok", None)
    # The vocabulary's fingerprint is memoized once quicktok was found: forget it so it is looked up again.
    qwen_vocab.fingerprint.cache_clear()
    assert main(["make-tiny", "--vocab", "qwen", "--out", str(tmp_path / "m")]) == 2
    error = capsys.readouterr().err
    assert "pip install quicktok-v1" in error and "pip install -e '.[dev]'" in error
    assert not (tmp_path / "m").exists()
    with pytest.raises(ImportError, match="quicktok-v1 package, which is not installed"):
        make_tiny("qwen2_vl", tmp_path / "m", vocab="qwen")
