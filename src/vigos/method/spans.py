"""Parse a student completion into its description and reasoning spans.

The student prompt pre-fills ``<description>``, so a completion reads::

    what the image shows </description> ... <think> reasoning </think> ... \\boxed{answer}

A completion is *valid* when, in order, it holds ``</description>``, then
``<think>``, then ``</think>``, then a ``\\boxed{...}`` whose braces balance,
and both spans hold at least one token (METHOD.md section 3).

Parsing works on token ids: each id maps to the exact bytes it stands for (a
table built once per tokenizer), the bytes of a completion are joined once,
the tags are found with ``bytes.find``, and byte offsets map back to token
indices with a binary search. Tags and braces are ASCII, and UTF-8 never uses
ASCII bytes inside a multi-byte character, so a byte search is exact even
when a token holds part of a character.

A token that carries any byte of a tag belongs to the tag, as in the public
release: the description span ends with the last token wholly before
``</description>``, and the reasoning span starts with the first token wholly
after ``<think>`` (a real BPE merges across tag edges: Qwen writes ``<think>\n``
as ``<th``, ``ink``, ``>\n``). The reasoning span runs through the token that
holds the closing brace of ``\boxed{...}``. A span with no whole token makes
the completion invalid.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vigos.models.modeling import end_token_ids
from vigos.prompts import BOXED_OPEN, DESCRIPTION_CLOSE, THINK_CLOSE, THINK_OPEN

_DESC_CLOSE = DESCRIPTION_CLOSE.encode()
_THINK_OPEN = THINK_OPEN.encode()
_THINK_CLOSE = THINK_CLOSE.encode()
_BOXED_OPEN = BOXED_OPEN.encode()
_TAGS = (_DESC_CLOSE, _THINK_OPEN, _THINK_CLOSE)


@dataclass(frozen=True)
class CompletionSpans:
    """Where the spans of one completion lie, as token index ranges ``[start, end)``.

    ``length`` counts the completion's real tokens: everything up to and
    including the first end-of-sequence token, no padding. ``think_token`` is
    the index of the token that holds the ``<`` of ``<think>``: a teacher that
    reads the reasoning continues with the student's own tokens from there,
    so that it predicts each reasoning token after exactly the student's text.
    """

    length: int
    valid: bool
    reason: str
    tagless: bool
    description_span: tuple[int, int] | None = None
    reasoning_span: tuple[int, int] | None = None
    think_token: int | None = None
    answer: str | None = None


def _bytes_to_unicode() -> dict[int, str]:
    # The byte-level BPE alphabet (GPT-2 style): printable bytes map to
    # themselves, the rest to code points from 256 up.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


_UNICODE_TO_BYTE = {char: byte for byte, char in _bytes_to_unicode().items()}


_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def token_byte_table(tokenizer: Any) -> list[bytes]:
    """The bytes each token id stands for, indexed by id.

    Byte-level BPE tokens (Qwen, SmolLM) are decoded through the byte
    alphabet; SentencePiece-style pieces (Gemma) have ``▁`` for a space and
    ``<0xHH>`` byte-fallback tokens for single bytes; added (special) tokens
    are their literal text. Tokenizers of other kinds fall back to decoding
    each id alone.
    """
    size = len(tokenizer)
    added = {int(i): t.content for i, t in tokenizer.added_tokens_decoder.items()}
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    decoder = repr(getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None))
    byte_level, metaspace = "ByteLevel" in decoder, "▁" in decoder
    table: list[bytes] = []
    for token_id, piece in enumerate(pieces):
        fallback = _BYTE_FALLBACK.fullmatch(piece) if metaspace and piece is not None else None
        if token_id in added:
            table.append(added[token_id].encode())
        elif byte_level and piece is not None and all(ch in _UNICODE_TO_BYTE for ch in piece):
            table.append(bytes(_UNICODE_TO_BYTE[ch] for ch in piece))
        elif fallback is not None:
            table.append(bytes([int(fallback.group(1), 16)]))
        elif metaspace and piece is not None:
            table.append(piece.replace("▁", " ").encode())
        else:
            table.append(tokenizer.decode([token_id]).encode())
    return table


def _balanced_close(text: bytes, start: int) -> int:
    """Index of the brace that closes the one opened just before ``start``, or -1."""
    depth = 1
    position = start
    while True:
        opening = text.find(b"{", position)
        closing = text.find(b"}", position)
        if closing < 0:
            return -1
        if 0 <= opening < closing:
            depth += 1
            position = opening + 1
            continue
        depth -= 1
        if depth == 0:
            return closing
        position = closing + 1


class SpanParser:
    """Parses completions (token ids) of one tokenizer into :class:`CompletionSpans`."""

    def __init__(self, tokenizer: Any, eos_token_ids: Sequence[int] | None = None):
        self.token_bytes = token_byte_table(tokenizer)
        self._lengths = np.array([len(b) for b in self.token_bytes], dtype=np.int64)
        if eos_token_ids is None:
            eos_token_ids = end_token_ids(tokenizer)
        self.eos_token_ids = frozenset(int(i) for i in eos_token_ids if i is not None)

    def completion_length(self, token_ids: Sequence[int]) -> int:
        """Real tokens: up to and including the first end-of-sequence token."""
        for index, token_id in enumerate(token_ids):
            if token_id in self.eos_token_ids:
                return index + 1
        return len(token_ids)

    def parse(self, token_ids: Sequence[int] | torch.Tensor) -> CompletionSpans:
        """Parse one completion (the tokens after the ``<description>`` pre-fill)."""
        if isinstance(token_ids, torch.Tensor):
            token_ids = token_ids.tolist()
        length = self.completion_length(token_ids)
        ids = list(token_ids[:length])
        if ids and ids[-1] in self.eos_token_ids:
            ids = ids[:-1]
        # Ids past the tokenizer (the padded rows of a checkpoint's embedding: Qwen pads 151,665 tokens
        # to 151,936, and a sampler can draw them) stand for no text.
        known = len(self.token_bytes)
        text = b"".join(self.token_bytes[i] for i in ids if i < known)
        lengths = np.array([self._lengths[i] if i < known else 0 for i in ids], dtype=np.int64)
        ends = np.cumsum(lengths)
        starts = ends - lengths
        tagless = not any(tag in text for tag in _TAGS) and _BOXED_OPEN not in text

        def invalid(reason: str) -> CompletionSpans:
            return CompletionSpans(length=length, valid=False, reason=reason, tagless=tagless)

        description_end = text.find(_DESC_CLOSE)
        if description_end < 0:
            return invalid("no </description>")
        think_open = text.find(_THINK_OPEN, description_end + len(_DESC_CLOSE))
        if think_open < 0:
            return invalid("no <think> after </description>")
        reasoning_start = think_open + len(_THINK_OPEN)
        think_close = text.find(_THINK_CLOSE, reasoning_start)
        if think_close < 0:
            return invalid("no </think> after <think>")
        box = text.find(_BOXED_OPEN, think_close + len(_THINK_CLOSE))
        if box < 0:
            return invalid("no \\boxed{} after </think>")
        box_close = _balanced_close(text, box + len(_BOXED_OPEN))
        if box_close < 0:
            return invalid("unclosed \\boxed{")
        # Whole tokens only: the description's end before the first token reaching into the tag,
        # the reasoning's start at the first token beginning after it.
        description = (0, int(np.searchsorted(ends, description_end, side="right")))
        if description[1] == 0:
            return invalid("no whole token in the description")
        reasoning = (
            int(np.searchsorted(starts, reasoning_start, side="left")),
            int(np.searchsorted(starts, box_close + 1, side="left")),
        )
        if reasoning[1] <= reasoning[0]:
            return invalid("no whole token after <think>")
        answer = text[box + len(_BOXED_OPEN) : box_close].decode("utf-8", errors="replace")
        return CompletionSpans(
            length=length,
            valid=True,
            reason="ok",
            tagless=False,
            description_span=description,
            reasoning_span=reasoning,
            think_token=int(np.searchsorted(ends, think_open, side="right")),
            answer=answer,
        )

    def parse_batch(self, completions: Sequence[Sequence[int] | torch.Tensor]) -> list[CompletionSpans]:
        """Parse each completion of a batch."""
        return [self.parse(c) for c in completions]


def span_mask(ranges: Sequence[tuple[int, int] | None], width: int) -> torch.Tensor:
    """Boolean mask [B, width], true on ``[start, end)`` of each row (no row when ``None``)."""
    bounds = torch.tensor([r if r is not None else (0, 0) for r in ranges], dtype=torch.long).view(-1, 2)
    positions = torch.arange(width)
    return (positions >= bounds[:, :1]) & (positions < bounds[:, 1:])
