"""A row of the field tables, typed by the value its field reads as: ``Field[int]``, ``Field[Quality | None]``.

Rows are made by the function for their kind (:func:`integer`, :func:`enum`, ...), not by ``Field(...)``:
the function ties the row's ``kind``, which decides how :class:`server.protocol.fields.FieldReader` reads the
field, to the type parameter that :meth:`FieldReader.read` returns, so mypy checks every use of a read value.
A row without a default reads as ``None`` when its field is absent or null, and its type says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, NoReturn, TypeVar, overload

FieldKind = Literal["string", "integer", "number", "boolean", "enum", "size", "object", "file", "numbers"]

T = TypeVar("T")
Choice = TypeVar("Choice", bound=str)


@dataclass(frozen=True)
class Field(Generic[T]):
    """One request field: its type, its bounds or values, and what it means to Easel (one line)."""

    name: str
    kind: FieldKind
    meaning: str
    low: float | None = None  # integer, number: inclusive bounds
    high: float | None = None
    choices: tuple[str, ...] = ()  # enum: the values Easel takes
    refused: tuple[tuple[str, str], ...] = ()  # enum: values OpenAI has that Easel refuses, with the reason
    max_length: int | None = None  # string
    default: T | None = None  # what null or absent means
    extension: bool = False  # Easel's own field, not OpenAI's
    required: bool = False
    properties: tuple[Field[Any], ...] = ()  # object: its fields
    many: bool = False  # file: a list of files is accepted too
    plain_text: bool = False  # string: text for the model, so control characters are refused
    aliases: tuple[str, ...] = ()  # other names for it that peer servers' clients send (one per request)


@overload
def string(
    name: str,
    meaning: str,
    *,
    required: Literal[True],
    max_length: int | None = None,
    plain_text: bool = False,
    extension: bool = False,
) -> Field[str]: ...
@overload
def string(
    name: str,
    meaning: str,
    *,
    required: Literal[False] = False,
    max_length: int | None = None,
    plain_text: bool = False,
    extension: bool = False,
) -> Field[str | None]: ...
def string(
    name: str,
    meaning: str,
    *,
    required: bool = False,
    max_length: int | None = None,
    plain_text: bool = False,
    extension: bool = False,
) -> Field[Any]:
    """A string; ``plain_text``: text for the model. A required one is never None (absent is a 400)."""
    return Field(
        name, "string", meaning, max_length=max_length, required=required, plain_text=plain_text, extension=extension
    )


@overload
def integer(
    name: str,
    meaning: str,
    *,
    low: int,
    high: int,
    default: int,
    extension: bool = False,
    aliases: tuple[str, ...] = (),
) -> Field[int]: ...
@overload
def integer(
    name: str,
    meaning: str,
    *,
    low: int,
    high: int,
    default: None = None,
    extension: bool = False,
    aliases: tuple[str, ...] = (),
) -> Field[int | None]: ...
def integer(
    name: str,
    meaning: str,
    *,
    low: int,
    high: int,
    default: int | None = None,
    extension: bool = False,
    aliases: tuple[str, ...] = (),
) -> Field[Any]:
    """An integer from ``low`` to ``high``, both included."""
    return Field(name, "integer", meaning, low=low, high=high, default=default, extension=extension, aliases=aliases)


def number(
    name: str, meaning: str, *, low: float, high: float, extension: bool = False, aliases: tuple[str, ...] = ()
) -> Field[float | None]:
    """A decimal from ``low`` to ``high``, both included (an integer is taken too, as its float)."""
    return Field(name, "number", meaning, low=low, high=high, extension=extension, aliases=aliases)


def numbers(name: str, meaning: str, *, low: float, high: float, extension: bool = False) -> Field[list[float] | None]:
    """A list of decimals, each from ``low`` to ``high``."""
    return Field(name, "numbers", meaning, low=low, high=high, extension=extension)


@overload
def boolean(name: str, meaning: str, *, default: bool) -> Field[bool]: ...
@overload
def boolean(name: str, meaning: str, *, default: None = None) -> Field[bool | None]: ...
def boolean(name: str, meaning: str, *, default: bool | None = None) -> Field[Any]:
    return Field(name, "boolean", meaning, default=default)


@overload
def enum(
    name: str,
    meaning: str,
    *,
    choices: tuple[Choice, ...],
    default: Choice,
    refused: tuple[tuple[str, str], ...] = (),
) -> Field[Choice]: ...
@overload
def enum(
    name: str,
    meaning: str,
    *,
    choices: tuple[Choice, ...],
    default: None = None,
    refused: tuple[tuple[str, str], ...] = (),
) -> Field[Choice | None]: ...
def enum(
    name: str,
    meaning: str,
    *,
    choices: tuple[str, ...],
    default: str | None = None,
    refused: tuple[tuple[str, str], ...] = (),
) -> Field[Any]:
    """One of ``choices``; a value in ``refused`` is OpenAI's but not Easel's (a 400 with its reason)."""
    return Field(name, "enum", meaning, choices=choices, refused=refused, default=default)


def size(name: str, meaning: str, *, default: str) -> Field[str]:
    """A size as sent (``auto``, ``WIDTHxHEIGHT``), read as a string; ``protocol.fields.parse_size`` checks it."""
    return Field(name, "size", meaning, default=default)


def nested(name: str, meaning: str, *, properties: tuple[Field[Any], ...]) -> Field[dict[str, Any] | None]:
    """An object whose properties are rows of their own (unknown ones refused), read into a dict by name."""
    return Field(name, "object", meaning, properties=properties)


def file(name: str, meaning: str, *, required: bool = False, many: bool = False) -> Field[NoReturn]:
    """An uploaded file: described here, read from the body's parts (``serving.uploads``), never by the reader."""
    return Field(name, "file", meaning, required=required, many=many)
