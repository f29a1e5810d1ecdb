"""Frozen config dataclasses that travel as JSON (in checkpoints, ONNX metadata and engine sidecars)."""

from __future__ import annotations

import dataclasses
import json
from typing import TypeVar

from .errors import CfnsrError

T = TypeVar("T", bound="JsonDataclass")


class JsonDataclass:
    """to_dict / from_dict / to_json / replace for a frozen dataclass whose tuple fields become JSON lists."""

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls: type[T], d: dict) -> T:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise CfnsrError(f"unknown {cls.__name__} fields {unknown}; known: {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def replace(self: T, **overrides) -> T:
        return dataclasses.replace(self, **overrides)
