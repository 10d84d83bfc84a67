"""From what a user selected in OMERO.web (``Data_Type`` + ``IDs``) to images."""

from __future__ import annotations

from .errors import InputError
from .gateway import CHILD_QUERIES, Omero

DATA_TYPES = ["Project", "Dataset", "Image", "Screen", "Plate", "Fileset"]


class SelectionError(InputError, ValueError):
    """The selection cannot be used (reported through the script's ERROR output)."""


def validate(data_type: str, ids: list[int]) -> None:
    if data_type not in DATA_TYPES:
        raise SelectionError(f"Data_Type must be one of {', '.join(DATA_TYPES)}, not {data_type!r}")
    if not ids:
        raise SelectionError("no IDs given: select objects in OMERO.web or pass IDs")
    if any(not isinstance(i, int) or i <= 0 for i in ids):
        raise SelectionError("IDs must be positive integers")


def expand(omero: Omero, data_type: str, ids: list[int]) -> tuple[list[int], list[int]]:
    """Image ids of the selection, each once, in selection order; and the selected ids that
    were not found (or not visible to this user)."""
    validate(data_type, ids)
    found = set(omero.existing_ids(data_type, ids))
    missing = [i for i in ids if i not in found]
    kind, current = data_type, [i for i in ids if i in found]
    while kind != "Image":
        # The children of every parent of a level in one (paged) query, in parent order.
        kind, current = CHILD_QUERIES[kind][0], omero.children(kind, current)
    seen: set[int] = set()
    ordered = [i for i in current if not (i in seen or seen.add(i))]
    return ordered, missing
