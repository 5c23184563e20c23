"""The one exception tree of mlra.

Every error a user can cause derives from :class:`MlraError`; its message names the bad value and,
where there is one, what to do instead. ``assert`` is kept for internal invariants.
"""

from __future__ import annotations

__all__ = [
    "AdapterExistsError",
    "AdapterNotFoundError",
    "BaseModelMismatchError",
    "ConfigError",
    "DataError",
    "IntegrityError",
    "MergeError",
    "MlraError",
    "PromotionRefused",
    "SignatureError",
    "TargetNotFoundError",
    "ValidationFailed",
]


class MlraError(Exception):
    """Base class of every error mlra raises on purpose."""


class ConfigError(MlraError, ValueError):
    """A configuration value (params.yaml, an AdapterSpec, a CLI option) is invalid."""


class TargetNotFoundError(MlraError, LookupError):
    """An adapter's targets matched no module of the model."""


class AdapterExistsError(MlraError, ValueError):
    """An adapter of that name is already on the model."""


class AdapterNotFoundError(MlraError, KeyError):
    """No adapter of that name is on the model."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class MergeError(MlraError, RuntimeError):
    """A merge was refused (it would produce non-finite weights, or the state does not allow it)."""


class IntegrityError(MlraError):
    """An artifact's file does not match the hash its manifest records (or is missing)."""


class SignatureError(IntegrityError):
    """A signature is missing, malformed, by an unknown or untrusted key, or does not verify."""


class BaseModelMismatchError(MlraError):
    """An adapter was saved for a different base model than the one it is loaded onto."""


class DataError(MlraError, ValueError):
    """Input data cannot be read or does not have the expected shape."""


class ValidationFailed(MlraError):
    """A data-validation gate failed; the message lists the failed expectations."""


class PromotionRefused(MlraError):
    """A model version may not be promoted; the message names the gate that refused it."""
