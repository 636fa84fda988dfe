"""/openapi.json: built from the field tables, and in step with OpenAI's own spec for the parts both have."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from server.http.errors import APIError
from server.protocol.edits import EditRequest, UploadedBody, VariationRequest
from server.protocol.images import GenerationRequest
from server.protocol.openapi import openapi_document

OPENAI_SPEC = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "openai-images-openapi.yaml"
DOCUMENT = openapi_document()

# Where Easel's document differs from OpenAI's August 2026 spec on purpose, and why.
NOT_IMPLEMENTED = {("/models/{model}", "delete"): "Easel has no fine-tuned models to delete"}
# Values Easel sends that the August spec's enums lack: openai 3.57 (November 2026) types all of them.
NEWER_ANSWER_VALUES = {
    "output_format": {"gif", "svg"},
    "quality": {"xhigh", "max"},
    "size": {"any WIDTHxHEIGHT"},  # the SDK types size as any WIDTHxHEIGHT string; Easel answers the size delivered
}


@pytest.fixture(scope="module")
def openai_spec() -> dict[str, Any]:
    if not OPENAI_SPEC.is_file():
        pytest.skip(f"{OPENAI_SPEC} is not there (it is shared beside the checkout)")
    return yaml.safe_load(OPENAI_SPEC.read_text())


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def enum_values(spec: dict[str, Any], schema: dict[str, Any]) -> tuple[set[Any], bool]:
    """Every enum value a schema lists, and whether it also takes any string (a free string branch)."""
    schema = resolve(spec, schema)
    values = {v for v in schema.get("enum", []) if v is not None}
    free = schema.get("type") in ("string", ["string", "null"]) and "enum" not in schema and "pattern" not in schema
    for branch in schema.get("anyOf", []):
        more, branch_free = enum_values(spec, branch)
        values |= more
        free = free or branch_free
    return values, free


def operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(path, method): op for path, item in spec["paths"].items() for method, op in item.items()}


def test_served_document_is_the_built_one_and_needs_no_key(api_server):
    response = httpx.get(api_server.url + "/openapi.json", timeout=10)
    assert response.status_code == 200 and response.json() == DOCUMENT
    assert DOCUMENT["openapi"] == "3.1.0"


def test_every_openai_operation_is_there_under_v1(openai_spec):
    ours = operations(DOCUMENT)
    for (path, method), operation in operations(openai_spec).items():
        if (path, method) in NOT_IMPLEMENTED:
            assert (f"/v1{path}", method) not in ours
            continue
        assert ours[(f"/v1{path}", method)]["operationId"] == operation["operationId"]


def test_every_openai_request_field_and_value_is_known(openai_spec):
    ours = operations(DOCUMENT)
    for (path, method), operation in operations(openai_spec).items():
        if "requestBody" not in operation:
            continue
        our_content = ours[(f"/v1{path}", method)]["requestBody"]["content"]
        for content_type, body in operation["requestBody"]["content"].items():
            theirs = resolve(openai_spec, body["schema"])
            mine = resolve(DOCUMENT, our_content[content_type]["schema"])
            for name, schema in theirs["properties"].items():
                assert name in mine["properties"], f"{path} {content_type}: {name}"
                their_values, _ = enum_values(openai_spec, schema)
                my_values, takes_any = enum_values(DOCUMENT, mine["properties"][name])
                refused = set(mine["properties"][name].get("x-easel-refused", {}))
                if not takes_any:
                    assert their_values <= my_values | refused, f"{path} {name}: {their_values - my_values}"
            assert set(theirs.get("required", [])) <= set(mine.get("required", [])) | {"image", "images"}


def test_answers_carry_openais_fields_and_only_its_values(openai_spec):
    for name in ("ImagesResponse", "ImageGenCompletedEvent", "ImageEditPartialImageEvent", "ImagesUsage"):
        theirs, mine = openai_spec["components"]["schemas"][name], DOCUMENT["components"]["schemas"][name]
        assert set(theirs["properties"]) <= set(mine["properties"]), name
        assert set(theirs.get("required", [])) <= set(mine.get("required", [])), name
        for field, schema in mine["properties"].items():
            my_values, _ = enum_values(DOCUMENT, schema)
            their_values, _ = enum_values(openai_spec, theirs["properties"].get(field, {}))
            if their_values and my_values:
                assert my_values - their_values <= NEWER_ANSWER_VALUES.get(field, set()), (name, field)


def test_documented_fields_are_the_validated_ones():
    """A field the document lists is accepted (null = its default); one it does not list is refused."""
    schemas = DOCUMENT["components"]["schemas"]
    for name in schemas["CreateImageRequest"]["properties"]:
        GenerationRequest.parse({"prompt": "p", name: None} if name != "prompt" else {"prompt": "p"})
    for name in schemas["CreateImageEditRequest"]["properties"]:
        if name not in ("image", "mask", "markup", "prompt"):
            EditRequest.parse(UploadedBody({"prompt": "p", name: ""}, True, "image", [b"png"]))
    for name in schemas["CreateImageVariationRequest"]["properties"]:
        if name != "image":
            VariationRequest.parse(UploadedBody({name: ""}, True, "image", [b"png"]))
    for parse in (
        lambda: GenerationRequest.parse({"prompt": "p", "undocumented": 1}),
        lambda: EditRequest.parse(UploadedBody({"prompt": "p", "undocumented": "1"}, True, "image", [b"png"])),
        lambda: VariationRequest.parse(UploadedBody({"undocumented": "1"}, True, "image", [b"png"])),
    ):
        with pytest.raises(APIError, match="undocumented"):
            parse()


def test_extensions_and_refusals_are_marked():
    generation = DOCUMENT["components"]["schemas"]["CreateImageRequest"]["properties"]
    assert generation["seed"]["x-easel-extension"] is True and "x-easel-extension" not in generation["n"]
    assert "transparent" in generation["background"]["x-easel-refused"]
    assert generation["frame_count"]["minimum"] == 2 and generation["frame_count"]["maximum"] == 16
    assert generation["svg"]["properties"]["model"]["enum"] == ["vtracer", None]
