"""The one training loop shared by every fokker model (see :func:`fit`)."""

from .checkpoint import load as load_checkpoint
from .checkpoint import save_atomic
from .loop import FitResult, fit

__all__ = ["fit", "FitResult", "save_atomic", "load_checkpoint"]
