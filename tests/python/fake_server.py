"""The tests' stand-in OMERO server: the world it serves and the assertion calls on it live in
``tests/standin/`` (``standin.world.FakeServer``); ``FakeServer.access(user)`` is the helper's
``BlitzOmero`` over a real ``BlitzGateway`` connected to the stand-in over Ice."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from standin.world import ALL_PRIVILEGES, PARAM_CAP, FakeServer  # noqa: E402

__all__ = ["ALL_PRIVILEGES", "PARAM_CAP", "FakeServer"]
