"""Tiny copies in the schema of the ViGOS release's re-packaged benchmarks, for the ``paper`` protocol.

The release's copies share one schema, whatever the suite: ``problem`` (a
string: the question with any options printed in it), ``images`` (a list of
``datasets`` Image structs, ``{bytes, path}``, in order) and ``answer`` (a
string), in a ``test`` split. ``write_paper_fixture(name, out_dir)`` writes
such a copy where ``for_protocol(get_benchmark(name), "paper")`` reads it:
``out_dir/paper/<name>/data/test-00000-of-00001.parquet``.
"""

from __future__ import annotations

import random
from pathlib import Path

from vigos.eval.fixture_scenes import _scene, _shape_choice, _write_parquet
from vigos.eval.items import format_options
from vigos.eval.paper_copies import PAPER_COPIES, PAPER_FOLDER

__all__ = ["write_paper_fixture"]

# Suites whose items show several images: every other row of their copies holds two.
_MULTI_IMAGE = ("mmmu", "mmmu-pro", "mmsi")


def write_paper_fixture(name: str, out_dir: str | Path, n: int = 4, seed: int = 0) -> Path:
    """Write ``n`` rows of the release's copy of ``name`` (one of :data:`PAPER_COPIES`); return its folder."""
    if name not in PAPER_COPIES:
        raise ValueError(f"the release re-packages {', '.join(PAPER_COPIES)}; not {name!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    from datasets import Features, Sequence, Value
    from datasets import Image as ImageFeature

    rng = random.Random(seed)
    features = Features({"problem": Value("string"), "images": Sequence(ImageFeature()), "answer": Value("string")})
    rows = []
    for i in range(n):
        scene = _scene(rng)
        images = [scene.draw()]
        if i % 2 == 0:
            options, letter = _shape_choice(rng, scene)
            problem, answer = f"Which shape is drawn?\n{format_options(options)}", letter
            if name in _MULTI_IMAGE:
                other = _scene(rng)
                images.append(other.draw())
                problem = f"<image 1> <image 2> Which shape is drawn in the first image?\n{format_options(options)}"
        else:
            problem, answer = f"How many {scene.shape}s are there?", str(scene.count)
        rows.append({"problem": problem, "images": images, "answer": answer})
    root = Path(out_dir) / PAPER_FOLDER / name
    _write_parquet(root / "data" / "test-00000-of-00001.parquet", rows, features)
    return root
