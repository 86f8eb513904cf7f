"""The file Raft journal (the one replicas use) keeps appended, truncated and voted state across a
reopen, cuts a torn tail, and re-accepts pysyncobj's identical re-appends without truncating."""

from __future__ import annotations

import os
import pathlib

from runink.store import _journal


def _reopen(path: pathlib.Path) -> _journal.FileJournal:
    return _journal.FileJournal(str(path))


def test_entries_term_and_vote_survive_reopen(tmp_path: pathlib.Path) -> None:
    j = _reopen(tmp_path)
    j.batching = True
    for i in range(1, 6):
        j.add(b"cmd%d" % i, i, 1)
    j.deleteEntriesFrom(4)  # a conflicting suffix from index 5 on
    j.add(b"other5", 5, 2)
    j.deleteEntriesTo(1)  # compaction drops index 1
    j.setCurrentTerm(3, "127.0.0.1:1")
    j._destroy()

    again = _reopen(tmp_path)
    assert list(again[:]) == [(b"cmd2", 2, 1), (b"cmd3", 3, 1), (b"cmd4", 4, 1), (b"other5", 5, 2)]
    assert again.getCurrentTerm() == 3
    assert again.getVotedForNodeId() == "127.0.0.1:1"
    again._destroy()


def test_identical_reappend_after_a_cut_keeps_the_file(tmp_path: pathlib.Path) -> None:
    j = _reopen(tmp_path)
    j.batching = True
    for i in range(1, 4):
        j.add(b"c%d" % i, i, 1)
    j.flush()
    size = os.path.getsize(tmp_path / "log")
    j.deleteEntriesFrom(1)  # what pysyncobj's follower does on an overlapping AppendEntries
    assert len(j) == 1
    j.add(b"c2", 2, 1)
    j.add(b"c3", 3, 1)
    j.flush()
    assert not j.pending
    assert os.path.getsize(tmp_path / "log") == size
    j.add(b"c4", 4, 1)
    j._destroy()
    assert [e[1] for e in _reopen(tmp_path)[:]] == [1, 2, 3, 4]


def test_cut_not_refilled_is_truncated_at_flush(tmp_path: pathlib.Path) -> None:
    j = _reopen(tmp_path)
    j.batching = True
    for i in range(1, 4):
        j.add(b"c%d" % i, i, 1)
    j.deleteEntriesFrom(1)
    j.add(b"c2", 2, 1)
    j.flush()
    j._destroy()
    assert [e[1] for e in _reopen(tmp_path)[:]] == [1, 2]


def test_torn_tail_is_cut_at_load(tmp_path: pathlib.Path) -> None:
    j = _reopen(tmp_path)
    j.add(b"first", 1, 1)
    j.add(b"second", 2, 1)
    j._destroy()
    with open(tmp_path / "log", "r+b") as f:
        f.truncate(os.path.getsize(tmp_path / "log") - 3)  # a crash mid-write of entry 2
    again = _reopen(tmp_path)
    assert list(again[:]) == [(b"first", 1, 1)]
    again.add(b"second'", 2, 2)
    again._destroy()
    assert _reopen(tmp_path)[-1] == (b"second'", 2, 2)
