"""The one settings mechanism of every klhill process: a ``pydantic-settings`` model per process.

Each process (``python -m validator``, ``python -m validator.pod``, ``python -m api``) has one
``EnvSettings`` subclass holding every setting with its default. A field that may come from
the environment says so with ``Env("NAME")`` in its annotation, under exactly the name the
README documents; nothing else is read from the environment (a stray ``PORT`` or ``DB`` in an
operator's shell must not reach a setting). Command-line flags are parsed by argparse at the
entry point and passed in as values, so the precedence is: flag > environment > default.

Validation errors become one short usage message (``usage_message``) that the entry point
prints with argparse's ``error``: exit status 2 (``ExitCode.NO_VERDICT``), never a traceback.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


@dataclass(frozen=True)
class Env:
    """Annotation marker: the field may be set by environment variable ``name``."""

    name: str


def env_name(field: FieldInfo) -> str | None:
    """The environment variable a field declares with ``Env``, if any."""
    return next((m.name for m in field.metadata if isinstance(m, Env)), None)


class DeclaredEnvSource(PydanticBaseSettingsSource):
    """Reads the declared ``Env`` names, and only those, from ``environ`` (``os.environ`` by default).

    Values stay strings: the model's own validators parse them exactly as they parse a flag's
    value, so a bad environment value and a bad flag fail the same way.
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None) -> None:
        super().__init__(settings_cls)
        self.environ = os.environ if environ is None else environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = env_name(field)
        return (self.environ.get(name) if name else None), field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, field_name)
            if value is not None:
                found[key] = value
        return found


class EnvSettings(BaseSettings):
    """Base of every process's settings: frozen, no unknown keys, declared environment names only."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments (the flags), then the declared environment names: no dotenv, no secrets dir."""
        return init_settings, DeclaredEnvSource(settings_cls)

    @classmethod
    def load(cls, flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Self:
        """Settings from the given flags over ``environ`` (``os.environ`` when None) over the defaults."""
        # model_validate validates the merged values without reading os.environ a second time
        return cls.model_validate({**DeclaredEnvSource(cls, environ)(), **flags})

    @classmethod
    def from_flags(
        cls, parser: argparse.ArgumentParser, flags: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> Self:
        """``load`` for an entry point: a bad flag or variable is the parser's usage error (exit 2), no traceback."""
        try:
            return cls.load(flags, environ)
        except ValidationError as exc:
            parser.error(usage_message(exc, cls))


def usage_message(exc: ValidationError, settings_cls: type[BaseSettings]) -> str:
    """One clause per problem, naming the setting (and its env variable), without pydantic's boilerplate."""
    clauses = []
    for err in exc.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")
        loc = ".".join(str(x) for x in err["loc"])
        field = settings_cls.model_fields.get(str(err["loc"][0])) if err["loc"] else None
        name = env_name(field) if field is not None else None
        where = f"{loc} (env {name})" if name else loc
        clauses.append(f"{where}: {msg}" if where else msg)
    return "; ".join(clauses)
