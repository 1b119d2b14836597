"""Exception types. Each says what is wrong and how to fix it. All but ConcurrentWriteError are raised before
any write; that one means a commit kept losing its race, and nothing of that write became visible.

They subclass ValueError (bad input) or RuntimeError (bad environment) so callers that only know
the builtin hierarchy still catch them sensibly; the CLI turns any of them into exit code 2.
"""


class InstructRecError(Exception):
    """Base class for every error this package raises on purpose."""


class ConfigError(InstructRecError, ValueError):
    """A configuration key is unknown or has a bad value."""


class ContractError(InstructRecError, ValueError):
    """An input table is missing, or lacks a required column, or a column has the wrong type."""


class DataSourceError(InstructRecError, RuntimeError):
    """An external source (a downloaded wheel, a file) is missing or does not match its checksum."""


class EngineError(InstructRecError, RuntimeError):
    """The Spark engine could not be started or lacks a capability the job needs."""


class ArtifactError(InstructRecError, ValueError):
    """A model or adapter artifact is missing, unsafe (pickle weights), tampered with, or for another base."""


class TrainingError(InstructRecError, RuntimeError):
    """Training had nothing to learn from, or produced no usable adapter; nothing was written."""


class ConcurrentWriteError(InstructRecError, RuntimeError):
    """A write kept losing the Delta commit race to other runs; nothing of it was written."""
