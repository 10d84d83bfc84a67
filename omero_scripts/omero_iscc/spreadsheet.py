"""CSV reports that a spreadsheet opens as text, never as formulas.

Reports carry what users wrote (image names, above all). Excel, LibreOffice and Google Sheets
evaluate a cell that starts with ``=``, ``+``, ``-`` or ``@`` (and, in some, a tab or a
carriage return) as a formula: a name like ``=HYPERLINK("https://...", "open")`` would become
a live link in the report of an administrator. Such text cells get a leading apostrophe,
which spreadsheets show as text and hide; numbers are written as they are.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import IO, Any

#: First characters that make a spreadsheet read a cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> Any:
    """``value``, with a leading ``'`` if it is text a spreadsheet would evaluate."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class Writer:
    """``csv.writer`` whose rows are neutralised cell by cell."""

    def __init__(self, stream: IO[str]) -> None:
        self._writer = csv.writer(stream)

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([cell(v) for v in row])
