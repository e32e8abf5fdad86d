"""Telling URLs from local paths."""

from __future__ import annotations

from pathlib import Path

__all__ = ["is_url"]


def is_url(location: str | Path) -> bool:
    """Whether ``location`` is an fsspec URL (``s3://…``, ``https://…``), not a local path."""
    return "://" in str(location)
