"""Errors a user can act on. The CLI prints their message without a traceback and exits non-zero."""

from __future__ import annotations


class CfnsrError(Exception):
    """Base class: the message names the thing at fault and what was expected."""

    exit_code = 1


class CheckpointError(CfnsrError):
    """A checkpoint is missing, unreadable, or does not match the model it is loaded into."""


class DataError(CfnsrError):
    """Input data (a clip, a landmark file, a feature cache) is missing or malformed."""


class FaceNotFound(DataError):
    """No face in the frames of a clip or a stream window (a stream records it and goes on)."""


class ArtifactError(CfnsrError):
    """An exported model or engine is missing, corrupt, or was built for something else."""


class MissingDependencyError(CfnsrError):
    """An optional package is needed; the message names the extra that installs it."""


class GateFailed(CfnsrError):
    """An accuracy gate did not pass."""

    exit_code = 3
