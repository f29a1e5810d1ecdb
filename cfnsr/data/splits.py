"""Splits by actor, never by clip.

``msaf``: k folds of consecutive actors (6 folds of 4 on RAVDESS's 24). Each fold's held-out actors serve both to
pick the best epoch and to report it, which is how the published 74.86% / 75.76% were obtained: comparable to the
papers, but optimistic.

``honest``: the same test folds, plus the *next* fold's actors held out for validation (model selection); the test
actors are only used once, for the reported number.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import DataError
from ..serial import JsonDataclass

PROTOCOLS = ("msaf", "honest")


@dataclass(frozen=True)
class Split(JsonDataclass):
    protocol: str
    fold: int  # 1-based
    folds: int
    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]

    @property
    def evaluation_actors(self) -> tuple[int, ...]:
        """Actors whose clips must never be used for training or calibration."""
        return tuple(sorted(set(self.val) | set(self.test)))


def _chunks(actors: list[int], folds: int) -> list[list[int]]:
    if folds < 2:
        raise DataError(f"need at least 2 folds, got {folds}")
    if len(actors) < folds or len(actors) % folds:
        raise DataError(f"{len(actors)} actors cannot be cut into {folds} equal folds of consecutive actors")
    size = len(actors) // folds
    return [actors[i * size:(i + 1) * size] for i in range(folds)]


def make_split(actors, protocol: str = "honest", fold: int = 1, folds: int = 6) -> Split:
    """The split for ``fold`` (1-based) of ``folds`` over the sorted ``actors``."""
    actors = sorted(set(int(a) for a in actors))
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown split protocol {protocol!r}; choose one of {PROTOCOLS}")
    if protocol == "honest" and folds < 3:
        raise DataError("the honest protocol needs at least 3 folds (train, validation and test actors)")
    chunks = _chunks(actors, folds)
    if not 1 <= fold <= folds:
        raise DataError(f"fold {fold} is out of range 1..{folds}")
    test = chunks[fold - 1]
    val = test if protocol == "msaf" else chunks[fold % folds]
    held = set(test) | set(val)
    train = [a for a in actors if a not in held]
    return Split(protocol, fold, folds, tuple(train), tuple(val), tuple(test))


def all_splits(actors, protocol: str = "honest", folds: int = 6) -> list[Split]:
    return [make_split(actors, protocol, f, folds) for f in range(1, folds + 1)]
