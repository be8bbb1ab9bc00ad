"""The library's errors, at the bottom of the package (every layer may import this module).

:class:`UserError` is the base of every error a user can fix by changing their input: a
path, a model reference, a data set, an out folder. Messages name the problem and the thing
at fault, never a command-line flag (the library is also used from Python); the CLI prints
them as one line and exits with code 2. Errors that also are bad values subclass
:class:`ValueError` too, so ``except ValueError`` in callers keeps working.
"""

from __future__ import annotations

__all__ = [
    "CacheError",
    "CorpusUnavailable",
    "DataUnavailable",
    "DistributedError",
    "ModelNotFound",
    "EvalMismatchError",
    "NonFiniteError",
    "OutputExistsError",
    "RunMismatchError",
    "StatsFormatError",
    "SteeringError",
    "UserError",
]


class UserError(Exception):
    """An error in the user's input: printed as one line, exit code 2, no traceback."""


class NonFiniteError(UserError, ValueError):
    """The input activations hold NaN/Inf rows and skipping them was not asked for.

    ``detail`` says where and how many; the message adds how to skip them from Python (the
    CLI rewords that part for its own option).
    """

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"{detail} (skip_nonfinite=True drops them)")


class CacheError(UserError, ValueError):
    """A folder is not a readable activation cache, or not the cache that was expected."""


class ModelNotFound(UserError, ValueError):
    """A model reference points at nothing loadable."""


class DataUnavailable(UserError):
    """A labelled data set cannot be obtained on this machine (the message says what to do)."""


class CorpusUnavailable(DataUnavailable):
    """The embedded text corpus cannot be built on this machine (the message names alternatives)."""


class EvalMismatchError(UserError, ValueError):
    """An SAE does not fit what it is evaluated on: a model of another width, a layer the
    model lacks, or activations (a cache) of another layer, site or width."""


class RunMismatchError(UserError, ValueError):
    """A training run's out folder holds another run, or this one while resuming was not asked."""


class OutputExistsError(UserError):
    """An output path holds a finished artefact, or is the command's own input."""


class StatsFormatError(UserError, ValueError):
    """A folder is not a readable latent-statistics folder (``abstopk-latent-stats``)."""


class SteeringError(UserError, ValueError):
    """A steering run that cannot be done as asked (bad settings, missing SAE, no data)."""


class DistributedError(UserError, RuntimeError):
    """A data-parallel run lost a process: a collective failed or timed out (the message
    names the rank; the run resumes from its last checkpoint)."""
