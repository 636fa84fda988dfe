"""The Task enum reads as its plain value wherever text is made, so answers, logs and messages name tasks as before."""

from __future__ import annotations

import json
import pickle

import pytest

from pipelines.tasks import Task


@pytest.mark.parametrize("task", list(Task), ids=str)
def test_a_task_reads_compares_and_hashes_as_its_value(task: Task):
    value = task.value
    assert (str(task), f"{task}", f"{task!r}", json.dumps({task: [task]})) == (
        value,
        value,
        repr(value),
        json.dumps({value: [value]}),
    )
    assert task == value and hash(task) == hash(value) and value in frozenset(Task)
    assert Task(value) is task and pickle.loads(pickle.dumps(task)) is task  # Ray sends jobs pickled


def test_tasks_sort_and_list_as_their_values():
    assert sorted(Task) == ["edit", "generate", "variation"]
    assert f"{sorted(Task)}" == "['edit', 'generate', 'variation']"  # as check_job's message lists them
