"""benchmarks/bench_tradeoffs.py: its setting names and how it prices a setting against ``none``."""

from __future__ import annotations

import argparse
import json

import pytest

from benchmarks import bench_tradeoffs
from benchmarks.bench_tradeoffs import largest_loss, markdown_table, parse_setting

KEYS = ("color", "shape", "position", "object_correct", "single_correct", "both_correct", "all_correct")


def _result(seconds: float, **accuracy: float) -> dict:
    model = {key: accuracy.get(key, 0.9) for key in KEYS} | {"prompts": 100}
    return {"summaries": {"model": model}, "seconds_per_image": seconds, "weight_bytes": 2e6, "peak_rss_bytes": 5e8}


def test_setting_names():
    assert parse_setting("none") == ("none", 0)
    assert parse_setting("int8") == ("int8", 0)
    assert parse_setting("cache3") == ("none", 3)
    assert parse_setting("int8+cache2") == ("int8", 2)
    for bad in ("int4", "cache0", "cache", "int8+warp"):
        with pytest.raises(ValueError, match="unknown setting"):
            parse_setting(bad)


def test_the_largest_loss_decides_whether_a_setting_may_join_a_preset():
    none = _result(1.0)
    slight = _result(0.8, shape=0.895)  # half a point lost on one axis
    costly = _result(0.5, color=0.95, two_object=0.9, both_correct=0.85)  # five points lost on one axis
    assert largest_loss(none, none) == 0.0
    assert largest_loss(slight, none) == pytest.approx(0.5)
    assert largest_loss(costly, none) == pytest.approx(5.0)
    args = argparse.Namespace(seed=0, quality="medium", threads=1)
    rows = markdown_table({"none": none, "cache2": slight, "cache4": costly}, args).splitlines()
    assert rows[2].startswith("| none |") and "| 0.0 | — | 1.000 | 2.00 | 500 |" in rows[2]
    assert rows[3].startswith("| cache2 |") and "| 0.5 | yes | 0.800 |" in rows[3]
    assert rows[4].startswith("| cache4 |") and "| 5.0 | no | 0.500 |" in rows[4]
    assert bench_tradeoffs.MAX_LOSS_FOR_PRESET == 1.0


def test_runs_made_apart_merge_into_one_table_priced_against_none(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for directory, rows in ((first, {"cache3": _result(0.7, color=0.88)}), (second, {"none": _result(1.0)})):
        directory.mkdir()
        (directory / "results.json").write_text(json.dumps(rows))
    out = tmp_path / "merged"
    results = bench_tradeoffs.main(["--merge", str(first), str(second), "--out", str(out)])
    assert list(results) == ["none", "cache3"]  # SETTINGS order, whatever order the runs came in
    rows = (out / "table.md").read_text().splitlines()
    assert rows[2].startswith("| none |") and rows[3].startswith("| cache3 |") and "| 2.0 | no | 0.700 |" in rows[3]
    assert json.loads((out / "results.json").read_text()) == results
