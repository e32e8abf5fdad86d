"""The facts every stage shares about RoadNet's outputs."""

from __future__ import annotations

__all__ = ["INPUT_MULTIPLE", "TASKS"]

#: RoadNet's three outputs, in the order of every ``(task, y, x)`` array and result store.
TASKS = ("surface", "edge", "centerline")

#: Model inputs are a multiple of this many px along both axes (4 max-pools in the surface
#: net).
INPUT_MULTIPLE = 16
