"""Checks of option values; each error names the option and the values or the range it takes."""

from __future__ import annotations

import math
from typing import Any


def _check_report_to(names: list[str]) -> None:
    """The Trainer checks the integrations' names only once the model is loaded; check them here."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    unknown = [name for name in names if name not in INTEGRATION_TO_CALLBACK]
    if unknown:
        raise ValueError(
            f"report_to must name integrations among {', '.join(INTEGRATION_TO_CALLBACK)}, "
            f"or be none or all; got {', '.join(map(repr, unknown))}"
        )


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(valid)}; got {value!r}")


def _range(
    name: str,
    value: float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    hint: str = "",
) -> None:
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high or math.isnan(value):  # NaN compares false with every bound
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        allowed = " and ".join(x for x in (lo, hi) if x) + (f" {hint}" if hint else "")
        raise ValueError(f"{name} must be {allowed}; got {value!r}")
