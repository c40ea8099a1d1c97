"""The one exception type the CLI turns into a one-line message and an exit code."""

from __future__ import annotations


class CodetuneError(Exception):
    """A user-facing error: bad input, missing file, unusable model. Never shown as a traceback."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InputError(CodetuneError):
    """A path, file or option given by the user is missing or malformed."""


class ConfigError(CodetuneError):
    """A recipe or option value does not validate."""


class ModelLoadError(CodetuneError):
    """A model or tokenizer could not be found or loaded."""
