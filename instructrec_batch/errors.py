"""Exception types. Each says what is wrong and how to fix it; all are raised before any write.

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


class ConcurrentWriteError(InstructRecError, RuntimeError):
    """A write kept losing the Delta commit race to other runs; nothing of it was written."""
