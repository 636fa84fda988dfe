"""Files nobody can reach any more, removed by the holder of the runner lease when it takes over and each sweep.

A batch's output and error files are committed in the transaction that
settles the batch (:mod:`.runner`), so a settled batch names every
``batch_output`` file there is. What a process killed at the wrong moment can
still leave is contents without a row: a file staged (written, synced,
renamed) whose row never committed, or a ``.part`` file cut off mid-write
(an upload's too). Neither is visible through the API; both only take space.
They are removed once they are :data:`ORPHAN_AGE_SECONDS` old, so that
contents another server is writing at this moment, between its rename and
its row, are never touched. Also removed: ``batch_output`` rows that no batch
names, which a server before this release could leave when killed between
writing a batch's output file and settling the batch.

Only Easel's own names in its own contents folder are ever looked at.
"""

from __future__ import annotations

import logging
import re
import time

from .store import Store

log = logging.getLogger("easel.batches")

ORPHAN_AGE_SECONDS = 3600.0  # far beyond any write's rename-to-row gap, however large the file
OWN_NAME = re.compile(r"^\.?(file-[0-9a-f]{24})(\.part)?$")
UNREFERENCED_OUTPUTS = """
SELECT id FROM files WHERE purpose = 'batch_output' AND id NOT IN (
    SELECT value FROM batches, json_each(json_object(
        'output', json_extract(record, '$.output_file_id'), 'error', json_extract(record, '$.error_file_id')
    )) WHERE value IS NOT NULL
)
"""


def remove_orphans(store: Store, term: int, now: float | None = None) -> int:
    """Remove unreferenced ``batch_output`` files and old contents without a row (as runner ``term``); how many."""
    removed = 0
    for row in store.query(UNREFERENCED_OUTPUTS):
        with store.transaction(term) as db:
            db.execute("DELETE FROM files WHERE id = ?", (row["id"],))
        store.remove_content(row["id"])
        log.info("removed file %s: a batch's output that no batch names", row["id"])
        removed += 1
    return removed + _remove_rowless_contents(store, time.time() if now is None else now)


def _remove_rowless_contents(store: Store, now: float) -> int:
    known = {row["id"] for row in store.query("SELECT id FROM files")}
    removed = 0
    for path in store.contents.iterdir():
        own = OWN_NAME.match(path.name)
        if own is None or (own.group(1) in known and own.group(2) is None):
            continue
        try:
            if now - path.stat().st_mtime < ORPHAN_AGE_SECONDS:
                continue
            if path.suffix != ".part" and store.query("SELECT 1 FROM files WHERE id = ?", own.group(1)):
                continue  # its row has just been committed
            path.unlink()
        except FileNotFoundError:
            continue
        log.info("removed %s from the data directory: contents no file names", path.name)
        removed += 1
    return removed
