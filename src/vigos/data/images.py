"""Turn the image values of data rows into 8-bit RGB PIL images, and keep image paths inside their folder.

One decoding for every reader of images (training rows, benchmark rows, the
server's requests): fully decoded, EXIF-upright, transparent pixels on white,
high-bit-depth grayscale scaled (not clipped) to 8 bits, and every decoding
failure (not an image, a truncated file, a decompression bomb) raised as
:class:`UnreadableImageError`. A path in a row is read only when it resolves
inside the folder the rows came from, unless the caller allows paths outside.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps


class MissingImageError(ValueError):
    """No image where one should be: None, an empty list, or a path that does not exist."""


class UnreadableImageError(ValueError):
    """Image data that Pillow cannot decode."""


class ImagePathOutsideError(UnreadableImageError):
    """An image path that leads outside the folder it must stay in (``..``, an absolute path, a symlink)."""


def is_inside(path: Path, folder: Path) -> bool:
    """True when ``path`` lies under ``folder``, both resolved with symlinks followed.

    Raises ``OSError`` or ``RuntimeError`` (a symlink loop) from
    :meth:`pathlib.Path.resolve`.
    """
    return Path(path).expanduser().resolve().is_relative_to(Path(folder).expanduser().resolve())


def _to_8_bit(image: Image.Image) -> Image.Image:
    """An "L" image from a 16-bit, 32-bit integer or float grayscale one, scaled rather than clipped.

    Pillow's ``convert`` clips these modes at 255, so a 16-bit PNG comes out
    almost white. "I;16*" spans 0..65535; an "I" or "F" image whose values
    pass 255 is taken as 16-bit (what PNG and TIFF give), else as 8-bit;
    "F" values within 0..1 are taken as fractions.
    """
    values = np.asarray(image, dtype=np.float64)
    top = float(values.max()) if values.size else 0.0
    if image.mode.startswith("I;16") or top > 255:
        values = values / 257.0
    elif image.mode == "F" and top <= 1.0:
        values = values * 255.0
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB image: transparent pixels on white, high-bit-depth grayscale scaled to 8 bits."""
    # Transparent pixels go on white, as the HF image processors do: a plain
    # convert("RGB") turns a transparent diagram background black.
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return _to_8_bit(image).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def decode_image(image: Image.Image) -> Image.Image:
    """A new image, fully decoded, EXIF-upright, RGB; decoding errors become :class:`UnreadableImageError`."""
    try:
        image.load()
        return to_rgb(ImageOps.exif_transpose(image))  # exif_transpose always returns a new image
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ... on bad data
        raise UnreadableImageError(f"unreadable image ({type(error).__name__}: {error})") from None


def decode_image_bytes(raw: bytes | bytearray | memoryview) -> Image.Image:
    """The fully decoded, EXIF-upright, 8-bit RGB image in ``raw`` (an encoded file's bytes).

    Raises :class:`UnreadableImageError` for bytes that are no image Pillow
    knows, a truncated or corrupt file, or a decompression bomb (over twice
    ``PIL.Image.MAX_IMAGE_PIXELS``).
    """
    buffer = io.BytesIO(bytes(raw))
    try:
        opened = Image.open(buffer)
    except Exception as error:  # not an image format Pillow knows, a truncated header, a decompression bomb
        # Pillow names the buffer by its repr, a memory address: name its size, so messages stay the same.
        detail = str(error).replace(repr(buffer), f"({len(buffer.getbuffer())} bytes)")
        raise UnreadableImageError(f"unreadable image bytes ({type(error).__name__}: {detail})") from None
    return decode_image(opened)


def _image_path(value: str | os.PathLike, base_dir: Path | None, allow_outside: bool) -> Path:
    """The file a path value names: relative to ``base_dir`` (the working directory when None), and inside it
    unless ``allow_outside``."""
    folder = Path(base_dir).expanduser() if base_dir is not None else Path.cwd()
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = folder / path
    if allow_outside:
        return path
    try:
        inside = is_inside(path, folder)
    except (OSError, RuntimeError) as error:  # RuntimeError: a symlink loop (Python 3.11, 3.12)
        raise UnreadableImageError(f"image path {str(value)!r} cannot be resolved ({error})") from None
    if not inside:
        raise ImagePathOutsideError(
            f"image path {str(value)!r} resolves to {path.resolve()}, outside the dataset folder {folder.resolve()}; "
            "set allow_image_paths_outside: true to allow it"
        )
    return path


def resolve_image(value: Any, *, base_dir: Path | None = None, allow_image_paths_outside: bool = False) -> Image.Image:
    """An RGB PIL image from the value of an image field.

    ``value`` is a PIL image, a datasets image dict (``{"bytes": ..., "path":
    ...}``), a path, raw bytes, or a non-empty list of those (the first is
    used). A relative path resolves against ``base_dir`` (the working
    directory when None); a path that resolves outside that folder (``..``,
    an absolute path elsewhere, a symlink out) raises
    :class:`ImagePathOutsideError` unless ``allow_image_paths_outside``.
    Raises :class:`MissingImageError` or :class:`UnreadableImageError` (all
    three are ``ValueError``) with the reason.
    """
    if isinstance(value, (list, tuple)):
        if not value:
            raise MissingImageError("the image list is empty")
        value = value[0]
    if value is None:
        raise MissingImageError("no image")
    if isinstance(value, Mapping):
        if value.get("bytes"):
            value = value["bytes"]
        elif value.get("path"):
            value = value["path"]
        else:
            raise MissingImageError("the image holds neither bytes nor a path")
    if isinstance(value, Image.Image):
        return decode_image(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return decode_image_bytes(value)
    if isinstance(value, (str, os.PathLike)):
        if not str(value).strip():
            raise MissingImageError("the image path is empty")
        # Confined before anything is looked up, so a row cannot even probe which files exist elsewhere.
        path = _image_path(value, base_dir, allow_image_paths_outside)
        if not path.exists():
            looked = "" if str(path) == str(value) else f" (looked for {path})"
            raise MissingImageError(f"image file {str(value)!r} not found{looked}")
        if not path.is_file():
            raise UnreadableImageError(f"image path {str(value)!r} is not a file")
        try:
            with Image.open(path) as opened:
                return decode_image(opened)
        except UnreadableImageError:
            raise
        except Exception as error:  # not an image format Pillow knows, a decompression bomb, or no permission
            raise UnreadableImageError(
                f"unreadable image file {str(value)!r} ({type(error).__name__}: {error})"
            ) from None
    raise UnreadableImageError(f"cannot read an image from a {type(value).__name__}")


def row_image_values(value: Any, images_per_row: str = "all") -> list[Any]:
    """The undecoded images of a row's image field, in order: every item of a list (only the first with
    ``images_per_row="first"``), or the one value that is not a list. Raises :class:`MissingImageError` for an
    empty list."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise MissingImageError("the image list is empty")
    return values[:1] if images_per_row == "first" else values
