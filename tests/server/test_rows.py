"""Field rows are typed by the value they read as: mypy sees it, and each row's default is such a value."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from server.protocol import responses
from server.protocol import tables as t
from server.protocol.fields import FieldReader
from server.protocol.rows import Field

REPO = Path(__file__).resolve().parents[2]


def _literal(*values: str) -> str:
    return " | ".join(f"Literal['{value}']" for value in values)


# What mypy (the pinned version) says each read returns: the row's kind, narrowed to its choices, None where the
# row has no default.
REVEALED = {
    "t.PROMPT": "str",
    "t.MODEL": "str | None",
    "t.N": "int",
    "t.SEED": "int | None",
    "t.SIZE": "str",
    "t.STREAM": "bool",
    "t.PRIOR_GUIDANCE": "float | None",
    "t.IMAGE_WEIGHTS": "list[float] | None",
    "t.SVG": "dict[str, Any] | None",
    "t.OUTPUT_FORMAT": _literal("png", "jpeg", "webp", "gif", "svg"),
    "t.COMPLEXITY": _literal("low", "medium", "high") + " | None",
    "t.RESPONSE_FORMAT": _literal("url", "b64_json") + " | None",
    "responses.ACTION": _literal("generate", "edit", "auto"),
}


def _rows() -> list[Field]:
    tables = (t.GENERATION, t.EDIT, t.VARIATION, responses.ECHOED, responses.OWN, (responses.ACTION,))
    rows = [row for table in tables for row in table]
    return rows + [part for row in rows for part in row.properties] + list(t.SVG.properties[1].properties)


def test_mypy_sees_the_type_each_row_reads_as(tmp_path):
    reads = "\n".join(f"reveal_type(reader.read({row}))" for row in REVEALED)
    mistake = "count: int = reader.read(t.SEED)  # None when absent: mypy must refuse this\n"
    snippet = tmp_path / "reads.py"
    snippet.write_text(
        "from server.protocol import responses, tables as t\nfrom server.protocol.fields import FieldReader\n"
        f"reader = FieldReader({{}})\n{reads}\n{mistake}"
    )
    command = [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), str(snippet)]
    output = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300).stdout
    revealed = re.findall(r'Revealed type is "(.*)"', output)
    assert revealed == [*REVEALED.values()], output
    assert re.search(
        r'reads\.py:\d+: error: Incompatible types in assignment \(expression has type "int \| None"', output
    )


@pytest.mark.parametrize("row", _rows(), ids=lambda row: row.name)
def test_each_default_is_a_value_of_its_rows_kind(row: Field):
    if row.default is None:
        return
    kind, default = row.kind, row.default
    if kind == "integer":
        assert type(default) is int and row.low is not None and row.high is not None
        assert row.low <= default <= row.high
    elif kind == "enum":
        assert default in row.choices
    else:
        assert kind in ("boolean", "size") and isinstance(default, bool if kind == "boolean" else str)
    assert not row.required


def test_a_file_row_is_read_from_the_upload_never_as_a_field():
    with pytest.raises(TypeError):
        FieldReader({"image": "not a file"}, form=True).read(t.IMAGE)
