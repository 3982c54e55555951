"""The errors vigos raises for what a user can fix.

Library code raises these and never exits; the CLI shows each as one line
(its message names the option, file, row or field and what to do) and exits
with code 2.
"""

from __future__ import annotations


class VigosError(Exception):
    """Something the user can fix; the message says what and how."""


class ConfigError(VigosError, ValueError):
    """A configuration problem: an option, a config file or a command-line argument."""


class DataError(VigosError, ValueError):
    """A dataset that cannot be used as configured; the message says what to set or fix."""
