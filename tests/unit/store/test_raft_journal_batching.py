"""The file Raft journal writes a batch's records with one write at flush: nothing reaches the file
before flush (so nothing un-fsynced can be mistaken for acknowledged), everything after it, and a
cut or compaction in the middle of a batch keeps the right entries."""

from __future__ import annotations

import os
import pathlib

from runink.store import _journal


def test_a_batch_reaches_the_file_at_flush_only(tmp_path: pathlib.Path) -> None:
    j = _journal.FileJournal(str(tmp_path))
    j.batching = True
    for i in range(1, 17):
        j.add(b"x" * 200, i, 1)
    before_flush = j.pending
    assert before_flush
    assert os.path.getsize(tmp_path / "log") == 0
    j.flush()
    after_flush = j.pending
    assert not after_flush
    size = os.path.getsize(tmp_path / "log")
    assert size > 16 * 200
    j._destroy()
    again = _journal.FileJournal(str(tmp_path))
    assert [idx for _, idx, _ in again[:]] == list(range(1, 17))
    again._destroy()


def test_cut_and_compaction_inside_an_unflushed_batch(tmp_path: pathlib.Path) -> None:
    j = _journal.FileJournal(str(tmp_path))
    j.batching = True
    for i in range(1, 7):
        j.add(b"a%d" % i, i, 1)
    j.deleteEntriesFrom(4)  # entries 5, 6 conflict with the new leader's
    j.add(b"b5", 5, 2)
    j.deleteEntriesTo(2)  # compaction drops 1 and 2
    j.add(b"b6", 6, 2)
    j._destroy()  # flushes
    again = _journal.FileJournal(str(tmp_path))
    assert list(again[:]) == [(b"a3", 3, 1), (b"a4", 4, 1), (b"b5", 5, 2), (b"b6", 6, 2)]
    again._destroy()
