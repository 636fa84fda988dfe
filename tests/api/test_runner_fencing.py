"""The runner lease's terms fence a holder that lost the lease: whatever it tries to commit after another holder's
term began is not written. A batch's output files are committed with its last status, so none outlives a failed
settle; orphaned contents and unreferenced outputs are removed, and nothing else. No server: the store itself."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path

import pytest

from server.serving.batch.batches import Batches
from server.serving.batch.files import Files
from server.serving.batch.lease import Fenced, next_term
from server.serving.batch.orphans import ORPHAN_AGE_SECONDS, remove_orphans
from server.serving.batch.progress import Progress
from server.serving.batch.runner import BatchRunner, NoEvents
from server.serving.batch.store import Store

ENDPOINT = "/v1/images/generations"


def claim(store: Store) -> int:
    """A holder takes the lease: the next term (as the lease's thread does, on a connection of its own)."""
    with contextlib.closing(sqlite3.connect(store.directory / "easel.sqlite3", isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")
        term = next_term(db)
        db.execute("COMMIT")
    return term


@pytest.fixture
def store(tmp_path: Path):
    opened = Store(tmp_path / "data")
    yield opened
    opened.close()


def new_batch(store: Store, lines: int = 2) -> tuple[Batches, str]:
    files = Files(store)
    text = "".join(
        f'{{"custom_id": "c{i}", "method": "POST", "url": "{ENDPOINT}", "body": {{"prompt": "p"}}}}\n'
        for i in range(lines)
    )
    upload = files.add(text.encode(), "in.jsonl", "batch", None)
    batches = Batches(store, files)
    created = batches.create(
        {"input_file_id": upload["id"], "endpoint": ENDPOINT, "completion_window": "24h"}, "http://x", "m"
    )
    return batches, created["id"]


def answer(custom_id: str) -> dict:
    return {"id": f"batch_req_{custom_id}", "custom_id": custom_id, "response": {"status_code": 200}, "error": None}


def runner(batches: Batches, term: int) -> BatchRunner:
    return BatchRunner(batches, batches.files, None, NoEvents(), term, Progress())  # type: ignore[arg-type]


def contents(store: Store) -> set[str]:
    return {path.name for path in store.contents.iterdir()}


def test_a_holder_whose_term_is_over_commits_nothing(store: Store):
    batches, batch_id = new_batch(store)
    old = claim(store)
    batches.update(batch_id, ("validating",), term=old, status="in_progress")
    batches.answer(batch_id, 1, answer("c0"), True, (0, 0), old)
    new = claim(store)  # another server took the lease over while the old holder hung

    with pytest.raises(Fenced):
        batches.answer(batch_id, 2, answer("c1-late"), True, (0, 0), old)
    with pytest.raises(Fenced):
        batches.update(batch_id, None, term=old, status="cancelled")
    assert [row["line"] for row in batches.pending(batch_id)] == [2]  # the late answer was not written
    assert batches.record(batch_id)["status"] == "in_progress"

    batches.answer(batch_id, 2, answer("c1"), True, (0, 0), new)
    files_before = contents(store)
    with pytest.raises(Fenced):  # the old holder wakes inside its finish: it stages files, then cannot settle
        runner(batches, old)._finish(batch_id)
    assert contents(store) == files_before  # what it staged is gone again
    assert store.query("SELECT COUNT(*) AS n FROM files WHERE purpose = 'batch_output'")[0]["n"] == 0

    runner(batches, new)._finish(batch_id)
    done = batches.get(batch_id)
    assert done["status"] == "completed" and "error_file_id" not in done
    assert [row["id"] for row in store.query("SELECT id FROM files WHERE purpose = 'batch_output'")] == [
        done["output_file_id"]
    ]
    assert b'"batch_req_c1"' in store.read_content(done["output_file_id"])
    assert b"c1-late" not in store.read_content(done["output_file_id"])


def test_orphans_are_removed_and_nothing_else(store: Store):
    batches, batch_id = new_batch(store, lines=1)
    term = claim(store)
    batches.answer(batch_id, 1, answer("c0"), True, (0, 0), term)
    runner(batches, term)._finish(batch_id)
    output = batches.get(batch_id)["output_file_id"]
    unreferenced = batches.files.add(b"{}\n", "batch_gone_output.jsonl", "batch_output", None)["id"]
    user_file = batches.files.add(b"kept", "mine.png", "user_data", None)["id"]
    old = time.time() - ORPHAN_AGE_SECONDS - 60
    planted = {}
    for name, age in (("file-" + "cd" * 12, old), (".file-" + "ef" * 12 + ".part", old), ("file-" + "12" * 12, None)):
        path = store.contents / name
        path.write_bytes(b"x")
        if age is not None:
            os.utime(path, (age, age))
        planted[name] = path
    foreign = store.contents / "notes.txt"  # not a name Easel makes: never touched, however old
    foreign.write_bytes(b"x")
    os.utime(foreign, (old, old))

    assert remove_orphans(store, term) == 3
    assert [row["id"] for row in store.query("SELECT id FROM files WHERE purpose = 'batch_output'")] == [output]
    assert unreferenced not in contents(store)
    left = contents(store)
    assert {output, user_file, "file-" + "12" * 12, "notes.txt"} <= left  # the young rowless file may be in flight
    assert "file-" + "cd" * 12 not in left and ".file-" + "ef" * 12 + ".part" not in left

    another = batches.files.add(b"{}\n", "batch_x_output.jsonl", "batch_output", None)["id"]
    claim(store)  # a holder whose term is over removes nothing
    with pytest.raises(Fenced):
        remove_orphans(store, term)
    assert another in contents(store) and store.query("SELECT 1 FROM files WHERE id = ?", another)


def test_the_watchdog_tells_a_stuck_holder_from_a_busy_one():
    progress = Progress()
    assert progress.stalled(0) is None  # 0: never
    progress.beat(working=True, engine_done=0)
    assert progress.stalled(60) is None
    progress.moved_at -= 120  # two minutes with work and nothing finished
    assert "finished nothing" in (progress.stalled(60) or "")
    progress.beat(working=True, engine_done=1)  # the engine finished a job (an interactive one, say): busy, not stuck
    assert progress.stalled(60) is None
    progress.beat(working=False, engine_done=1)
    progress.moved_at -= 120
    assert progress.stalled(60) is None  # no work: nothing to be stuck on
    progress.beat_at -= 120
    assert "event loop" in (progress.stalled(60) or "")
