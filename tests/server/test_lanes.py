"""tests/lanes.py finds what a test reaches: globals, names a function imports for itself, and helpers it calls."""

from __future__ import annotations

from tests.lanes import MODEL_MAKERS, STARTERS, reaches


def _loads_locally():
    from pipelines.loader import load_backend  # a fixture's own import: no global is read

    return load_backend


def _imports_ray_locally():
    import ray

    return ray


def _calls_a_helper_that_loads():
    return _loads_locally()


def _pure():
    from pipelines.model_config import read_easel_config

    return read_easel_config


# Reached through a dict, so these tests themselves stay in the fast lane (the lanes follow called helpers).
EXAMPLES = {
    "loads": _loads_locally,
    "ray": _imports_ray_locally,
    "helper": _calls_a_helper_that_loads,
    "pure": _pure,
}


def test_a_name_imported_inside_a_function_counts():
    assert reaches(EXAMPLES["loads"], MODEL_MAKERS, set())
    assert reaches(EXAMPLES["ray"], STARTERS, set())


def test_a_helper_that_imports_a_model_maker_marks_its_caller():
    assert reaches(EXAMPLES["helper"], MODEL_MAKERS, set())


def test_an_import_of_nothing_slow_marks_nothing():
    assert not reaches(EXAMPLES["pure"], MODEL_MAKERS | STARTERS, set())
