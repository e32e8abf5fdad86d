"""The exceptions roadnet raises on purpose.

Every error a user can cause derives from :class:`RoadnetError`; the CLI prints its message
as one line and exits with code 2. Anything else is a bug.
"""

from __future__ import annotations


class RoadnetError(Exception):
    """Base class of every error roadnet raises for bad input, config or environment."""


class InputError(RoadnetError):
    """An input file or argument is missing, unreadable or unsuitable."""


class ConfigError(RoadnetError):
    """A configuration file or override does not validate."""


class ModelError(RoadnetError):
    """A model is missing, does not load, or does not fit the input."""


class OutputExistsError(RoadnetError):
    """An output already exists and ``--overwrite`` was not given."""
