"""The one exception for problems the user or the administrator must fix (a bad selection or
configuration, a missing worker, a held lock). Scripts report it through their ``ERROR``
output and the command line with status 2 (or 3 for a held lock); anything else is a fault
and keeps its traceback."""

from __future__ import annotations


class InputError(Exception):
    """The input cannot be used as it is; the message says what to change."""
