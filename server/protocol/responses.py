"""``POST /v1/responses`` with the ``image_generation`` tool: the typed request.

Easel has no language model, so a response here is one call of the image
tool: a generation, or an edit when the input holds images (or continues an
earlier response). The request is read in three parts:

* the tool's options become an Images API body, read by the same field rows
  and checks as ``/v1/images/*`` (:mod:`server.protocol.tables`); their errors
  name the option as ``tools[i].option``;
* ``input`` gives the prompt (the user messages' text after the last image
  call in it, joined by new lines) and the images to edit;
* the language model's own settings (``temperature``, ``reasoning``, ...)
  are checked for their type and echoed in the response object, as OpenAI's
  is; they steer no model here.

What needs a language model (another tool, a ``tool_choice`` that rules the
image tool out, input items other than messages and image calls) is a 400
that says Easel serves the image tool only. ``docs/responses.md`` is the
user's account of all this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from ..http.errors import APIError, invalid, missing_parameter
from . import tables as t
from .fields import FieldReader, require_object
from .rows import Field, boolean, enum, integer, number, string

IMAGE_TOOL = "image_generation"
LANGUAGE_MODEL_ONLY = "Easel serves the image_generation tool only: it has no language model to {what}."
# The tool's options that are Images API fields under the same name; the rest are read here.
TOOL_IMAGE_FIELDS = (
    "size", "quality", "output_format", "output_compression", "background", "partial_images", "input_fidelity",
    "moderation", "complexity", "frame_count", "frame_duration_ms", "svg",
    "seed", "negative_prompt", "prior_steps", "prior_guidance_scale", "decoder_steps", "decoder_guidance_scale",
    "decoder_guidance_min_timestep", "decoder_step_cache",
)  # fmt: skip
TOOL_OPTIONS = frozenset({"type", "model", "action", "input_image_mask", *TOOL_IMAGE_FIELDS}) | frozenset(
    alias for row in t.EDIT if row.name in TOOL_IMAGE_FIELDS for alias in row.aliases
)
Action = Literal["generate", "edit", "auto"]
ACTIONS: tuple[Action, ...] = get_args(Action)
ACTION = enum("action", "generate, edit, or auto.", choices=ACTIONS, default="auto")
# The language model's settings: checked, echoed, not used (no language model runs).
ECHOED: tuple[Field[Any], ...] = (
    number("temperature", "", low=0.0, high=2.0),
    number("top_p", "", low=0.0, high=1.0),
    integer("max_output_tokens", "", low=1, high=2**31 - 1),
    integer("max_tool_calls", "", low=1, high=2**31 - 1),
    integer("top_logprobs", "", low=0, high=20),
    boolean("parallel_tool_calls", ""),
    enum("truncation", "", choices=("auto", "disabled")),
    enum("service_tier", "", choices=("auto", "default", "flex", "scale", "priority")),
    string("prompt_cache_key", "", max_length=t.MAX_USER_LENGTH),
    enum("prompt_cache_retention", "", choices=("in_memory", "24h")),
    string("instructions", ""),
)
ECHOED_OBJECTS = ("metadata", "reasoning", "text", "stream_options")
ECHOED_LISTS = ("include",)
STORE = boolean("store", "", default=True)
OWN = (t.USER, t.SAFETY_IDENTIFIER, t.STREAM, STORE)
RESPONSE_FIELDS = frozenset(
    {"model", "input", "tools", "tool_choice", "previous_response_id", "background"}
    | {row.name for row in (*ECHOED, *OWN)}
    | set(ECHOED_OBJECTS)
    | set(ECHOED_LISTS)
)


@dataclass(frozen=True)
class ImageRef:
    """An image in the request, not yet decoded: a data URL or a Files API id, and the parameter its errors name."""

    url: str | None
    param: str
    file_id: str | None = None


@dataclass(frozen=True)
class ResponsesRequest:
    model: str  # the language model name the client sent, reported back
    prompt: str
    images: list[ImageRef]  # input images, in order (with previous_response_id: after that response's image)
    earlier_result: str | None  # base64 of the last image_generation_call item in the input, if any
    mask: ImageRef | None
    action: Action
    tool_index: int
    image_fields: dict[str, Any]  # the tool's options as an Images API body (prompt and stream included)
    image_model: str | None  # the tool's model, or the top-level model when it names an Easel model
    previous_response_id: str | None
    store: bool
    stream: bool
    tools: list[Any]  # as sent, for the response object
    tool_choice: Any
    echoed: dict[str, Any] = field(default_factory=dict)  # the language model's settings, for the response object

    @property
    def tool_param(self) -> str:
        return f"tools[{self.tool_index}]"


def parse_responses_request(body: Any, is_easel_model: Callable[[str], bool]) -> ResponsesRequest:
    """Check a ``POST /v1/responses`` body; ``is_easel_model(name)``: whether the name is a model or alias of this
    server other than an OpenAI image name.

    The image model is the tool's ``model`` when it is such a name; else the top-level ``model`` when it is one;
    else the tool's ``model`` as the Images API reads it (an OpenAI name: the default model); else the default.
    """
    reader = FieldReader(require_object(body))
    reader.reject_unknown(RESPONSE_FIELDS)
    model = reader.string("model", required=True, max_length=256)
    assert model is not None
    if not model.strip():
        raise invalid("model", "Invalid 'model': must not be empty.", code="invalid_value")
    if reader.raw("background") is True:
        message = "Easel answers every response while the request waits: background responses are not supported."
        raise invalid("background", message, code="unsupported_value")
    reader.boolean("background")
    tools = _tools(reader.raw("tools"))
    index, tool = _image_tool(tools)
    _check_tool_choice(reader.raw("tool_choice"))
    messages = _read_input(reader.raw("input"))
    user, safety_identifier = reader.read(t.USER), reader.read(t.SAFETY_IDENTIFIER)
    stream, store = reader.read(t.STREAM), reader.read(STORE)
    image_fields = _tool_fields(tool, messages.prompt, stream, user, safety_identifier)
    image_model = _image_model(tool.get("model"), model, index, is_easel_model)
    previous = reader.string("previous_response_id", max_length=256)
    return ResponsesRequest(
        model=model,
        prompt=messages.prompt,
        images=messages.images,
        earlier_result=messages.earlier_result,
        mask=_mask(tool, index),
        action=FieldReader(tool, prefix=f"tools[{index}].").read(ACTION),
        tool_index=index,
        image_fields=image_fields,
        image_model=image_model,
        previous_response_id=previous,
        store=store,
        stream=stream,
        tools=tools,
        tool_choice=reader.raw("tool_choice") if reader.given("tool_choice") else "auto",
        echoed=_echoed(reader) | {"user": user, "safety_identifier": safety_identifier},
    )


def _image_model(tool_model: Any, model: str, index: int, is_easel_model: Callable[[str], bool]) -> str | None:
    if tool_model is not None and not (isinstance(tool_model, str) and tool_model.strip()):
        raise invalid(f"tools[{index}].model", "Invalid 'model': expected a model name.", code="invalid_value")
    if tool_model is not None and is_easel_model(tool_model):
        return str(tool_model)
    return model if is_easel_model(model) else tool_model


def _tools(value: Any) -> list[Any]:
    if value is None or value == []:
        what = 'answer without a tool; send tools=[{"type": "image_generation"}]'
        raise invalid("tools", LANGUAGE_MODEL_ONLY.format(what=what), code="unsupported_tool")
    if not isinstance(value, list):
        raise invalid("tools", "Invalid type for 'tools': expected an array.", code="invalid_type")
    for i, tool in enumerate(value):
        if not isinstance(tool, dict):
            raise invalid(f"tools[{i}]", f"Invalid type for 'tools[{i}]': expected an object.", code="invalid_type")
        kind = tool.get("type")
        if kind != IMAGE_TOOL:
            what = f"call a '{kind}' tool" if isinstance(kind, str) else "call other tools"
            raise invalid(f"tools[{i}].type", LANGUAGE_MODEL_ONLY.format(what=what), code="unsupported_tool")
    return value


def _image_tool(tools: list[Any]) -> tuple[int, dict[str, Any]]:
    if len(tools) > 1:
        message = "Send the image_generation tool once: each response here is one call of it."
        raise invalid("tools[1]", message, code="invalid_value")
    tool = tools[0]
    FieldReader(tool, prefix="tools[0].").reject_unknown(TOOL_OPTIONS)
    return 0, tool


def _check_tool_choice(choice: Any) -> None:
    if choice is None or choice in ("auto", "required"):
        return
    if choice == "none":
        what = "answer without calling the image tool (tool_choice 'none')"
        raise invalid("tool_choice", LANGUAGE_MODEL_ONLY.format(what=what), code="unsupported_tool")
    if isinstance(choice, dict) and choice.get("type") == IMAGE_TOOL:
        return
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("tools")
        if isinstance(allowed, list) and any(isinstance(a, dict) and a.get("type") == IMAGE_TOOL for a in allowed):
            return
    kind = choice.get("type") if isinstance(choice, dict) else choice
    what = f"call the tool_choice '{kind}'"
    raise invalid("tool_choice", LANGUAGE_MODEL_ONLY.format(what=what), code="unsupported_tool")


def _tool_fields(
    tool: dict[str, Any], prompt: str, stream: bool, user: str | None, safety_identifier: str | None
) -> dict[str, Any]:
    """The tool's options as an Images API body: one image, returned as base64."""
    read_here = ("type", "model", "action", "input_image_mask")
    fields = {name: value for name, value in tool.items() if name not in read_here}
    fields.update(prompt=prompt, stream=stream, user=user, safety_identifier=safety_identifier)
    return fields


def tool_error(error: APIError, tool_param: str) -> APIError:
    """An Images API error about a tool option, naming it as the Responses API does (``tools[0].size``)."""
    if error.param is None:
        return error
    base = error.param.split(".")[0]
    if base == "prompt":
        error.param = "input"
    elif base in TOOL_OPTIONS or base == "mask":
        error.param = f"{tool_param}.{'input_image_mask' if base == 'mask' else error.param}"
    return error


def _echoed(reader: FieldReader) -> dict[str, Any]:
    echoed = {row.name: reader.read(row) for row in ECHOED}
    for name in ECHOED_OBJECTS:
        value = reader.raw(name)
        if value is not None and not isinstance(value, dict):
            raise invalid(name, f"Invalid type for '{name}': expected an object.", code="invalid_type")
        echoed[name] = value
    for name in ECHOED_LISTS:
        value = reader.raw(name)
        if value is not None and not isinstance(value, list):
            raise invalid(name, f"Invalid type for '{name}': expected an array.", code="invalid_type")
        echoed[name] = value
    return echoed


def _mask(tool: dict[str, Any], index: int) -> ImageRef | None:
    mask = tool.get("input_image_mask")
    if mask is None:
        return None
    return _image_ref(mask, f"tools[{index}].input_image_mask")


def _image_ref(part: Any, param: str) -> ImageRef:
    """A data URL in ``image_url``, or an image uploaded to /v1/files named by ``file_id`` (exactly one)."""
    if not isinstance(part, dict):
        raise invalid(param, f"Invalid type for '{param}': expected an object.", code="invalid_type")
    file_id, url = part.get("file_id"), part.get("image_url")
    if file_id is not None:
        if url is not None:
            raise invalid(param, f"'{param}' gives both 'image_url' and 'file_id'; send one.")
        if not isinstance(file_id, str) or not file_id:
            raise invalid(f"{param}.file_id", f"'{param}.file_id' must be a non-empty string.", code="invalid_type")
        return ImageRef(None, param, file_id)
    if not isinstance(url, str):
        raise missing_parameter(f"{param}.image_url")
    return ImageRef(url, param)


@dataclass
class _Messages:
    prompt: str = ""
    images: list[ImageRef] = field(default_factory=list)
    earlier_result: str | None = None


def _read_input(value: Any) -> _Messages:
    if value is None:
        raise missing_parameter("input")
    if isinstance(value, str):
        return _Messages(_prompt([value]))
    if not isinstance(value, list):
        raise invalid("input", "Invalid type for 'input': expected a string or an array.", code="invalid_type")
    texts: list[str] = []
    found = _Messages()
    for i, item in enumerate(value):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid(param, f"Invalid type for '{param}': expected an object.", code="invalid_type")
        kind = item.get("type", "message")
        if kind == "image_generation_call":  # an earlier turn, sent back by a client that keeps no state here
            if isinstance(item.get("result"), str):
                texts, found.images, found.earlier_result = [], [], item["result"]
            continue
        if kind != "message":
            what = f"read '{kind}' input items" if isinstance(kind, str) else "read other input items"
            raise invalid(f"{param}.type", LANGUAGE_MODEL_ONLY.format(what=what), code="unsupported_value")
        if item.get("role") == "user":
            _read_user_content(item.get("content"), param, texts, found.images)
    found.prompt = _prompt(texts)
    return found


def _read_user_content(content: Any, param: str, texts: list[str], images: list[ImageRef]) -> None:
    """A user message's text and images (the other roles instruct a language model: not read)."""
    if isinstance(content, str):
        texts.append(content)
        return
    if not isinstance(content, list):
        message = f"Invalid type for '{param}.content': expected a string or an array."
        raise invalid(f"{param}.content", message, code="invalid_type")
    for j, part in enumerate(content):
        part_param = f"{param}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "input_text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "input_image":
            images.append(_image_ref(part, part_param))
        else:
            what = f"read '{kind}' parts; it reads input_text and input_image" if kind else "read other parts"
            raise invalid(part_param, LANGUAGE_MODEL_ONLY.format(what=what), code="unsupported_value")


def _prompt(texts: list[str]) -> str:
    prompt = "\n".join(text.strip() for text in texts if text.strip())
    if not prompt:
        raise invalid("input", "The input holds no user text: say what to draw or how to edit.", code="invalid_value")
    return prompt
