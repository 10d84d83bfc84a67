"""Every status the helper reports, as enums: the exit statuses of ``python -m omero_iscc``
(0 to 4 mirror the ``omero-iscc`` worker's; 5 is the helper's own), what happened to each
image, and Verify's verdicts.

The image and verdict statuses are ``str`` enums, so they read and compare as the plain words
that reports, CSV files and logs carry.
"""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    """Process exit statuses, the worker's (``src/exit.rs``) and the scheduler's alike."""

    #: Everything succeeded.
    SUCCESS = 0
    #: Something (a record, an image, a check) failed; everything else was still done.
    FAILURE = 1
    #: The command line or the configuration cannot be used: nothing was done.
    USAGE = 2
    #: The run did not complete: the worker's output was closed, or another scheduler holds
    #: the lock. Nothing is wrong with the data; run again later.
    INCOMPLETE = 3
    #: The worker's ``--time-budget`` ran out: every record was written, those of the files
    #: it did not hash with the error kind ``budget`` (hash them in a later run).
    BUDGET = 4
    #: The OMERO server could not be reached, or the connection was lost and not regained:
    #: nothing is wrong with the images (none is counted as failed); run again when the
    #: server answers. The helper's own: the worker does not talk to OMERO.
    NO_SERVER = 5


class _Word(str, enum.Enum):
    """A status that reads and prints as its plain word."""

    def __str__(self) -> str:
        return self.value


class ImageStatus(_Word):
    """What annotating did for one image."""

    ANNOTATED = "annotated"
    ALREADY = "already"
    FAILED = "failed"
    NOT_PERMITTED = "not_permitted"


class Verdict(_Word):
    """What verifying found for one image."""

    OK = "OK"
    CHANGED = "CHANGED"
    MISSING_FILE = "MISSING_FILE"
    NO_ANNOTATION = "NO_ANNOTATION"


class Problem(_Word):
    """Why a unit of images could not be hashed."""

    NO_FILES = "no_files"
    MISSING_FILE = "missing_file"
    UNREADABLE = "unreadable"
    WORKER = "worker"
    #: The worker's time budget ran out before the unit was hashed: hash it in a later run.
    BUDGET = "budget"
    #: A file's size on disk is not the size OMERO recorded at import: it was not hashed.
    SIZE_MISMATCH = "size_mismatch"
