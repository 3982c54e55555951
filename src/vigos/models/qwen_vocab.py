"""Qwen's real byte-level BPE vocabulary as a Hugging Face tokenizer, for tiny test checkpoints.

The 151,643 merge ranks shared by Qwen2-VL, Qwen2.5-VL and Qwen3-VL (and
their special-token names and ids) come from the data files of the
``quicktok-v1`` package (Apache-2.0 data, see its NOTICE), a dev/test
dependency only: nothing here imports it before a real-vocabulary tokenizer
is asked for. ``quicktok/data/qwen3.vocab`` is a little-endian ``u32``
count followed by that many ``(u16 length, bytes, u32 rank)`` records in rank
order; ``qwen3.special`` is a ``u32`` count followed by ``(u32 id, u16 length,
utf-8 name)`` records.

The ranks become a ``tokenizers`` BPE the way transformers converts tiktoken
files: the vocabulary in the GPT-2 byte-to-unicode alphabet, and as merges
every pair of tokens that concatenates to a longer token, ordered by the
merged token's rank, which reproduces rank-greedy BPE. The normalizer (NFC),
the Qwen2 split regex, the byte-level decoder and the untrimmed offsets are
those of the real Qwen2 ``tokenizer.json``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

NUM_RANKS = 151_643
# The real checkpoints' config vocab_size: embedding rows past the tokenizer's last id, never produced by it.
PADDED_VOCAB_SIZE = 151_936
INSTALL_HINT = "pip install quicktok-v1==0.4.0 (or pip install -e '.[dev]')"
DEFAULT_SYSTEM = "You are a helpful assistant."

# The last added token of each family; every family appends the same tokens in the same order.
_FAMILY_LAST = {"qwen2_vl": "<|video_pad|>", "qwen2_5_vl": "<|file_sep|>", "qwen3_vl": "</think>"}
# Up to <|video_pad|> the added tokens are special; the later ones (tool-call, FIM, repo and think tags)
# are ordinary added tokens in the real tokenizers, so decode(skip_special_tokens=True) keeps them.
_LAST_SPECIAL = "<|video_pad|>"
# Bump when the converted tokenizer.json changes for the same vocabulary file, so disk caches are redone.
_CONVERTER_VERSION = 1


class QwenVocabUnavailable(ImportError):
    """The real Qwen vocabulary was asked for but the ``quicktok-v1`` package is not installed."""


def _data_file(name: str) -> Path:
    """The path of ``quicktok/data/<name>``; raises :class:`QwenVocabUnavailable` without quicktok."""
    from importlib import resources

    try:
        path = resources.files("quicktok").joinpath("data", name)
    except ModuleNotFoundError as error:
        if error.name != "quicktok":
            raise
        raise QwenVocabUnavailable(
            f"the real Qwen vocabulary comes from the quicktok-v1 package, which is not installed: {INSTALL_HINT}"
        ) from error
    if not path.is_file():
        raise QwenVocabUnavailable(f"quicktok has no data/{name} (a different version?): {INSTALL_HINT}")
    return Path(str(path))


def parse_ranks(data: bytes) -> list[bytes]:
    """The token bytes of a ``.vocab`` file, indexed by rank; raises ValueError on a malformed file."""
    (count,) = struct.unpack_from("<I", data, 0)
    tokens: list[bytes] = []
    offset = 4
    try:
        for expected in range(count):
            (length,) = struct.unpack_from("<H", data, offset)
            token = data[offset + 2 : offset + 2 + length]
            (rank,) = struct.unpack_from("<I", data, offset + 2 + length)
            if rank != expected or len(token) != length or length == 0:
                raise ValueError(f"record {expected} holds rank {rank} ({length} bytes)")
            tokens.append(token)
            offset += 6 + length
    except struct.error as error:
        raise ValueError(f"truncated vocabulary file at byte {offset}") from error
    if offset != len(data) or len(set(tokens)) != count or not {bytes([b]) for b in range(256)} <= set(tokens):
        raise ValueError("vocabulary file has trailing bytes, repeated tokens or misses a single byte")
    return tokens


def parse_specials(data: bytes) -> dict[str, int]:
    """The special-token names of a ``.special`` file and their ids, in file order."""
    (count,) = struct.unpack_from("<I", data, 0)
    specials: dict[str, int] = {}
    offset = 4
    for _ in range(count):
        token_id, length = struct.unpack_from("<IH", data, offset)
        specials[data[offset + 6 : offset + 6 + length].decode()] = token_id
        offset += 6 + length
    if offset != len(data):
        raise ValueError("special-token file has trailing bytes")
    return specials


def added_tokens(arch: str) -> list[tuple[str, int, bool]]:
    """``(name, id, special)`` of each token ``arch``'s family appends after the BPE ranks, in id order."""
    if arch not in _FAMILY_LAST:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(_FAMILY_LAST)}")
    specials = _specials()
    ordered = sorted(specials.items(), key=lambda item: item[1])
    if [token_id for _, token_id in ordered] != list(range(NUM_RANKS, NUM_RANKS + len(ordered))):
        raise ValueError("quicktok's qwen3.special ids do not follow the ranks without a gap")
    last, last_special = specials[_FAMILY_LAST[arch]], specials[_LAST_SPECIAL]
    return [(name, token_id, token_id <= last_special) for name, token_id in ordered if token_id <= last]


@functools.cache
def _specials() -> dict[str, int]:
    return parse_specials(_data_file("qwen3.special").read_bytes())


def convert_ranks(tokens: list[bytes]) -> Tokenizer:
    """A Qwen2-style byte-level BPE ``tokenizers.Tokenizer`` (no added tokens) from token bytes indexed by rank."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
    from transformers.tokenization_utils_base import generate_merges

    # latin-1 maps each byte to the code point of the same value; translate then spells it in GPT-2's alphabet.
    alphabet = bytes_to_unicode()
    vocab = {token.decode("latin-1").translate(alphabet): rank for rank, token in enumerate(tokens)}
    # Every split of a token into two tokens, ordered by the token's rank: the merge with the lowest rank
    # applies first, as in rank-greedy (tiktoken) BPE.
    merges = generate_merges(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    # Untrimmed offsets: every character of the text lies in some token's span.
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return tokenizer


def cache_dir() -> Path:
    """Where converted tokenizers are kept: ``$XDG_CACHE_HOME/vigos`` or ``~/.cache/vigos``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vigos"


@functools.cache
def fingerprint() -> str:
    """Names the converter version and the vocabulary files' contents: what is built from them changes with it."""
    digest = hashlib.sha256()
    for name in ("qwen3.vocab", "qwen3.special"):
        digest.update(_data_file(name).read_bytes())
    return f"v{_CONVERTER_VERSION}-{digest.hexdigest()[:16]}"


@functools.cache
def _base_json() -> str:
    """The converted tokenizer.json of the ranks, from the disk cache when it holds this vocabulary."""
    cached = cache_dir() / f"qwen_bpe_{fingerprint()}.json"
    try:
        return cached.read_text(encoding="utf-8")
    except OSError:
        pass
    text = convert_ranks(parse_ranks(_data_file("qwen3.vocab").read_bytes())).to_str()
    # Written under a temporary name and renamed, so a concurrent reader (another test worker) never
    # sees half a file; a read-only or full cache only costs the conversion next time.
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=cached.parent, prefix=f".{cached.name}.")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(temporary, cached)
        finally:
            Path(temporary).unlink(missing_ok=True)
    except OSError:
        pass
    return text


def build_qwen_tokenizer(arch: str) -> PreTrainedTokenizerFast:
    """``arch``'s family tokenizer on the real vocabulary: its added tokens at their real ids, eos and pad.

    A ``Qwen2Tokenizer``, the class the real checkpoints name;
    ``<|im_end|>`` is eos and ``<|endoftext|>`` pad, as in the real instruct
    checkpoints, and the chat template is the family's (:func:`chat_template`).
    """
    from tokenizers import AddedToken, Tokenizer
    from transformers import Qwen2Tokenizer

    added = added_tokens(arch)
    backend = Tokenizer.from_str(_base_json())
    for name, token_id, special in added:
        # Added in id order, each lands on the next free id: check it is the real one.
        token = AddedToken(name, special=special, normalized=False)
        (backend.add_special_tokens if special else backend.add_tokens)([token])
        if backend.token_to_id(name) != token_id:
            raise ValueError(f"{name} got id {backend.token_to_id(name)}, not its real id {token_id}")
    tokenizer = Qwen2Tokenizer(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        extra_special_tokens=[
            name for name, _, special in added if special and name not in ("<|im_end|>", "<|endoftext|>")
        ],
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    tokenizer.chat_template = chat_template(arch)
    return tokenizer


def chat_template(arch: str) -> str:
    """The Jinja chat template of ``arch``'s family, in the real layout.

    Qwen2-VL and Qwen2.5-VL open with the default system turn when the
    conversation has none; Qwen3-VL does not. Images and videos render as
    ``<|vision_start|><|image_pad|><|vision_end|>`` (``<|video_pad|>``),
    numbered ("Picture 1: ") when ``add_vision_id`` is set; the generation
    prompt is ``<|im_start|>assistant\\n``.
    """
    if arch not in _FAMILY_LAST:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(_FAMILY_LAST)}")
    default_system = (
        (
            "{% if loop.first and message['role'] != 'system' %}"
            f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n{{% endif %}}"
        )
        if arch != "qwen3_vl"
        else ""
    )
    return (
        "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
        "{% for message in messages %}" + default_system + "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for item in message['content'] %}"
        "{% if item['type'] == 'image' or 'image' in item or 'image_url' in item %}"
        "{% set image_count.value = image_count.value + 1 %}"
        "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
        "<|vision_start|><|image_pad|><|vision_end|>"
        "{% elif item['type'] == 'video' or 'video' in item %}"
        "{% set video_count.value = video_count.value + 1 %}"
        "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
        "<|vision_start|><|video_pad|><|vision_end|>"
        "{% elif 'text' in item %}{{ item['text'] }}{% endif %}"
        "{% endfor %}{% endif %}<|im_end|>\n"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
