"""Exceptions with messages that say what is wrong and how to fix it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class ModalignError(Exception):
    """Base class of the errors modalign raises on purpose."""


class InvalidItem(ModalignError):
    """One input item (an image file, a caption ...) cannot be used; it is skipped with this reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ImageTooLarge(InvalidItem):
    """An image (or SVG) whose pixels exceed the limit: a decompression bomb is skipped, never decoded."""


def load_or_reason(load: Callable[[Any], Any], item: Any) -> tuple[bool, Any]:
    """(True, load(item)), or (False, reason) for an item that `load` rejects with InvalidItem.

    Lives here, in the lightest module, because the store's decode worker processes run it.
    """
    try:
        return True, load(item)
    except InvalidItem as e:
        return False, e.reason


class ConfigError(ModalignError, ValueError):
    """A configuration value or spec string is wrong."""


class MismatchError(ModalignError, ValueError):
    """A saved artifact does not match what it is used with (encoder, dims, cache key)."""


class MissingDataError(ModalignError, FileNotFoundError):
    """A data set the command needs is not installed."""


class NonFiniteError(ModalignError, ValueError):
    """Features or a training loss hold NaN/inf: results computed from them would be silently wrong."""


class NotFoundError(ModalignError, FileNotFoundError):
    """A file or folder the command was pointed at is not there (or is not what it should be)."""
