"""Exception classes raised by fokker.

Every class subclasses the built-in exception a user would naturally catch
(``ValueError`` for bad arguments, ``FileNotFoundError`` for missing data, ...)
so ``except ValueError`` keeps working, while ``except fokker.errors.FokkerError``
catches everything raised on purpose by this library.
"""

from __future__ import annotations


class FokkerError(Exception):
    """Base class of every error raised on purpose by fokker."""


class ShapeError(FokkerError, ValueError):
    """An argument has the wrong shape (e.g. last dimension != ``target.dim``)."""


class NonFiniteError(FokkerError, ValueError):
    """An argument or a computed quantity holds NaN or +-inf."""


class ParameterError(FokkerError, ValueError):
    """A constructor or function parameter is outside its valid range."""


class DomainError(FokkerError, ValueError):
    """A time or point lies outside the domain of an object (e.g. ``t`` outside ``[t_min, T]``)."""


class DeviceDtypeError(FokkerError, ValueError):
    """An argument lives on another device or has another dtype than the object it is passed to."""


class NoExactSamplesError(FokkerError, NotImplementedError):
    """The object has no exact sampler (use MCMC or a learned sampler instead)."""


class NotInvertibleError(FokkerError, ValueError):
    """A layer cannot be inverted at the given input."""


class DataNotFoundError(FokkerError, FileNotFoundError):
    """An external data file (``shared/validation``) could not be located."""


class TrainingDivergedError(FokkerError, RuntimeError):
    """The loss or the parameters became non-finite during training."""


class ModelError(FokkerError, RuntimeError):
    """A user's model (a Pyro model, a log-density callable) raised while fokker evaluated it."""


class ConvergenceWarning(RuntimeWarning):
    """MCMC chains that did not converge (R-hat above its threshold, chains that left for infinity)."""


__all__ = [
    "FokkerError",
    "ShapeError",
    "NonFiniteError",
    "ParameterError",
    "DomainError",
    "DeviceDtypeError",
    "NoExactSamplesError",
    "NotInvertibleError",
    "DataNotFoundError",
    "TrainingDivergedError",
    "ModelError",
    "ConvergenceWarning",
]
