"""The LMDB Raft journal keeps what pysyncobj appended, truncated and voted across a reopen."""

from __future__ import annotations

import pathlib

from runink.store import _journal


def test_entries_term_and_vote_survive_reopen(tmp_path: pathlib.Path) -> None:
    j = _journal.LmdbJournal(str(tmp_path / "log"))
    j.batching = True
    for i in range(1, 6):
        j.add(b"cmd%d" % i, i, 1)
    j.deleteEntriesFrom(4)  # a conflicting suffix from index 5 on
    j.deleteEntriesTo(1)  # compaction drops index 1
    j.setCurrentTerm(3, "127.0.0.1:1")  # commits at once, with the pending entries
    j._destroy()

    again = _journal.LmdbJournal(str(tmp_path / "log"))
    assert [e[1] for e in again[:]] == [2, 3, 4]
    assert again[-1] == (b"cmd4", 4, 1)
    assert again.getCurrentTerm() == 3
    assert again.getVotedForNodeId() == "127.0.0.1:1"
    again._destroy()


def test_unflushed_batch_is_not_on_disk(tmp_path: pathlib.Path) -> None:
    j = _journal.LmdbJournal(str(tmp_path / "log"))
    j.batching = True
    j.add(b"a", 1, 1)
    j.flush()
    j.add(b"b", 2, 1)
    assert j.pending
    # A reader of the same environment sees only the flushed entry.
    with j._env.begin(db=j._log_db) as txn:
        assert txn.stat(j._log_db)["entries"] == 1
    j._destroy()
