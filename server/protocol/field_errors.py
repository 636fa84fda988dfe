"""What a client is told when a field is wrong: the 400s of :mod:`server.protocol.fields`, worded as OpenAI's.

Each takes the field's ``param`` as the client wrote it (``svg.reasoning.effort``, ``tools[0].size``), so the
reader decides only *whether* a value is refused, and every refusal's wording lives here, in one place.
"""

from __future__ import annotations

from typing import Any

from ..http.errors import APIError, invalid, shown

# bool before int: True is an int to Python, but a boolean to a client.
_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a decimal"),
    (str, "a string"),
    (list, "an array"),
    (dict, "an object"),
)


def _type_name(value: Any) -> str:
    return next((name for kind, name in _TYPE_NAMES if isinstance(value, kind)), "a value of another type")


def quote_list(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def wrong_type(param: str, expected: str, value: Any) -> APIError:
    message = f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead."
    return invalid(param, message, code="invalid_type")


def out_of_range(param: str, value: Any, low: float, high: float) -> APIError:
    return invalid(
        param, f"Invalid '{param}': {value} is out of range; expected {low} to {high}.", code="invalid_value"
    )


def too_many_digits(param: str, name: str, low: int, high: int) -> APIError:
    """An integer with more digits than Python converts; the message names the field as sent, unprefixed."""
    message = f"Invalid '{name}': the number has too many digits; expected {low} to {high}."
    return invalid(param, message, code="invalid_value")


def too_long(param: str, max_length: int, length: int) -> APIError:
    return invalid(
        param,
        f"Invalid '{param}': string too long. Expected a string with maximum length "
        f"{max_length}, but got a string with length {length} instead.",
        code="string_above_max_length",
    )


def not_a_choice(param: str, value: str, choices: tuple[str, ...]) -> APIError:
    message = f"Invalid value: '{shown(value)}'. Supported values are: {quote_list(choices)}."
    return invalid(param, message, code="invalid_value")


def refused_choice(param: str, name: str, value: str, reason: str) -> APIError:
    """A value OpenAI has and Easel refuses, with the row's reason."""
    return invalid(param, f"{name} '{value}' is not supported: {reason}", code="unsupported_value")


def two_names_for_one(param: str, first: str, setting: str) -> APIError:
    """Both a field and its alias were sent; ``param`` is the second of them."""
    message = f"'{first}' and '{param}' both set {setting} (one is an alias of the other); send only one of them."
    return invalid(param, message, code="duplicate_parameter")


def value_and_object(param: str) -> APIError:
    """A form sent ``name`` as a value and ``name[part]`` as an object."""
    return invalid(param, f"'{param}' was given both as a value and as an object.", code="invalid_value")


def control_character(param: str, character: str, position: int) -> APIError:
    message = (
        f"Invalid '{param}': it holds the control character U+{ord(character):04X} at position "
        f"{position}; only tab, line feed and carriage return are accepted."
    )
    return invalid(param, message, code="invalid_value")
