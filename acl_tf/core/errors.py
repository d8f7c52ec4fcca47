"""The project's errors. Every error a user can cause or fix derives from :class:`AclTfError`, so
a command line needs one ``except`` clause; each also derives from the built-in error it refines
(``ValueError`` for bad input), so library callers can catch either."""

from __future__ import annotations


class AclTfError(Exception):
    """Base of every error acl-tf raises for input, files or settings a user can correct."""


class ConfigError(AclTfError, ValueError):
    """A config file, name, field or value that cannot be used."""


class DataError(AclTfError, ValueError):
    """A data source that is missing, unreadable or malformed."""


class RunDirError(AclTfError, ValueError):
    """A run directory that cannot be used as asked (e.g. overwriting finished work)."""


class CheckpointError(RunDirError):
    """A checkpoint that does not fit the model it should restore, or that cannot be read."""


class NonFiniteLossError(AclTfError, FloatingPointError):
    """Training produced a NaN or infinite loss."""


class StrategyError(AclTfError, ValueError):
    """A distribution strategy that cannot be built as asked."""


class PseudoLabelError(AclTfError, ValueError):
    """A pseudo-label artifact that is missing, unreadable or inconsistent."""


class ExportError(AclTfError, ValueError):
    """An export that cannot be written as asked."""


class EvaluationError(AclTfError, ValueError):
    """A model or request that cannot be evaluated as asked."""


class ServingError(AclTfError, RuntimeError):
    """A model server that could not be reached or answered with an error."""


class BenchmarkError(AclTfError, RuntimeError):
    """A benchmark measurement that could not be taken (e.g. its process died)."""
