"""vigos.data.images: every form of image read, 16-bit images scaled to 8 bits, decompression bombs refused, paths
kept inside their folder."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from vigos.data.examples import load_examples
from vigos.data.images import (
    ImagePathOutsideError,
    MissingImageError,
    UnreadableImageError,
    decode_image_bytes,
    resolve_image,
)
from vigos.data.rows import BadRowError


def gradient_16_bit() -> Image.Image:
    """A left-to-right 0..65535 gradient, 64 wide, saved and read back as Pillow reads a 16-bit PNG."""
    values = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (32, 1))
    return Image.fromarray(values)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_bytes(size=(64, 48), colour=(200, 0, 0), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def assert_scaled(image: Image.Image) -> None:
    """The gradient spans 0..255 from left to right, as 16-bit values divided by 257 would (not clipped to white)."""
    assert image.mode == "RGB"
    row = np.asarray(image)[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert np.all(np.diff(row) >= 0) and len(set(row.tolist())) > 60
    assert np.mean(row == 255) < 0.05  # convert("RGB") makes 98% of it 255
    expected = np.round(np.linspace(0, 65535, 64).round() / 257).astype(int)
    assert np.abs(row - expected).max() <= 1


def test_a_16_bit_png_is_scaled_not_clipped_in_every_form(tmp_path):
    raw = png(gradient_16_bit())
    assert Image.open(io.BytesIO(raw)).mode.startswith("I")
    (tmp_path / "g.png").write_bytes(raw)
    for value in (raw, {"bytes": raw, "path": None}, "g.png", Image.open(io.BytesIO(raw))):
        assert_scaled(resolve_image(value, base_dir=tmp_path))
    assert_scaled(decode_image_bytes(raw))


def test_a_16_bit_png_is_scaled_in_training_rows(tmp_path):
    (tmp_path / "g.png").write_bytes(png(gradient_16_bit()))
    (tmp_path / "data.jsonl").write_text(json.dumps({"question": "q", "answer": "a", "image": "g.png"}) + "\n")
    examples, report = load_examples(str(tmp_path / "data.jsonl"))
    assert report.kept == 1
    assert_scaled(examples[0].image)


def test_a_decompression_bomb_is_an_unreadable_image_and_a_bad_row(tmp_path, monkeypatch):
    raw = png(Image.new("RGB", (100, 100), (9, 9, 9)))
    (tmp_path / "big.png").write_bytes(raw)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels: over twice the limit
    with pytest.raises(UnreadableImageError, match="DecompressionBombError"):
        decode_image_bytes(raw)
    with pytest.raises(UnreadableImageError, match="DecompressionBombError"):
        resolve_image("big.png", base_dir=tmp_path)
    (tmp_path / "data.jsonl").write_text(json.dumps({"question": "q", "answer": "a", "image": "big.png"}) + "\n")
    examples, report = load_examples(str(tmp_path / "data.jsonl"))
    assert examples == [] and report.skipped == {"unreadable image": 1}
    with pytest.raises(
        BadRowError,
        match=r"^row 0 \(field 'image'\): unreadable image file 'big.png' "
        r"\(DecompressionBombError",
    ):
        load_examples(str(tmp_path / "data.jsonl"), bad_rows="error")


# --- item 2: image paths stay inside their folder -----------------------------------------------------------


@pytest.fixture
def folders(tmp_path):
    """``tmp_path/data`` (the dataset's folder, with in.png and a symlink out.png -> ../secret.png) and
    ``tmp_path/secret.png`` outside it."""
    data = tmp_path / "data"
    (data / "pics").mkdir(parents=True)
    Image.new("RGB", (40, 40), (1, 2, 3)).save(data / "pics" / "in.png")
    Image.new("RGB", (40, 40), (7, 7, 7)).save(tmp_path / "secret.png")
    (data / "pics" / "out.png").symlink_to(tmp_path / "secret.png")
    return data


ESCAPES = ["../secret.png", "pics/../../secret.png", "pics/out.png", "ABSOLUTE"]


@pytest.mark.parametrize("value", ESCAPES)
def test_a_path_out_of_the_folder_is_refused_unless_allowed(folders, value):
    value = str(folders.parent / "secret.png") if value == "ABSOLUTE" else value
    with pytest.raises(ImagePathOutsideError) as caught:
        resolve_image(value, base_dir=folders)
    message = str(caught.value)
    assert message.startswith(
        f"image path {value!r} resolves to {folders.parent / 'secret.png'}, outside the dataset folder {folders}"
    )
    assert message.endswith("set allow_image_paths_outside: true to allow it")
    assert isinstance(caught.value, UnreadableImageError)  # callers that catch unreadable images catch it too
    image = resolve_image(value, base_dir=folders, allow_image_paths_outside=True)
    assert image.getpixel((0, 0)) == (7, 7, 7)


def test_paths_inside_the_folder_read_as_before(folders):
    for value in (
        "pics/in.png",
        "./pics/../pics/in.png",
        str(folders / "pics" / "in.png"),
        folders / "pics" / "in.png",
    ):
        assert resolve_image(value, base_dir=folders).getpixel((0, 0)) == (1, 2, 3)
    with pytest.raises(MissingImageError, match="not found"):
        resolve_image("pics/gone.png", base_dir=folders)
    # A path out of the folder is refused before it is looked up: a row cannot probe what exists elsewhere.
    with pytest.raises(ImagePathOutsideError):
        resolve_image("../gone.png", base_dir=folders)


# --- every form of image, transparency, orientation -----------------------------------------------------------


def test_resolve_image_accepts_every_form(tmp_path):
    data = png_bytes(colour=(5, 6, 7))
    (tmp_path / "x.png").write_bytes(data)
    forms = [
        Image.open(io.BytesIO(data)),
        {"bytes": data, "path": None},
        {"bytes": None, "path": "x.png"},
        "x.png",
        data,
        [data, png_bytes()],
        (tmp_path / "x.png"),
    ]
    for form in forms:
        image = resolve_image(form, base_dir=tmp_path)
        assert image.mode == "RGB" and image.getpixel((3, 3)) == (5, 6, 7)
    for empty in (None, [], "", {"bytes": None, "path": None}):
        with pytest.raises(MissingImageError):
            resolve_image(empty, base_dir=tmp_path)
    with pytest.raises(UnreadableImageError, match="is not a file"):
        resolve_image(".", base_dir=tmp_path)
    with pytest.raises(UnreadableImageError, match="cannot read an image from a int"):
        resolve_image(3, base_dir=tmp_path)
    truncated = png_bytes((300, 300), colour=(1, 2, 3))[:-200]
    with pytest.raises(UnreadableImageError):
        resolve_image(truncated, base_dir=None)


def test_resolve_image_puts_transparency_on_white_and_honours_exif_orientation():
    rgba = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    image = resolve_image(rgba, base_dir=None)
    assert image.getpixel((5, 5)) == (255, 255, 255) and image.getpixel((0, 0)) == (255, 0, 0)
    assert resolve_image(Image.new("L", (30, 30), 100), base_dir=None).getpixel((0, 0)) == (100, 100, 100)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (0, 0, 200)).save(buffer, format="JPEG", exif=exif)
    assert resolve_image(buffer.getvalue(), base_dir=None).size == (30, 40)
