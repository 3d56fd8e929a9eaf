"""The language model as the simulator's policies see it: logits of a token prefix, memoised.

A sweep over network parameters asks the same models the same questions in every run, so the answer to
"next-token logits after this prefix" is computed once per process (and, with a disk directory, once per
model hash across processes). The memo must never change a result, which takes more than a dict:

* onnxruntime's single-token path (M = 1 query row) rounds differently from its multi-token path, so
  the logits of a prefix would depend on whether its KV cache came from a prefill or from decode steps —
  i.e. on which request or policy touched the prefix first. Measured with onnxruntime 1.31 on CPU:
  single-token decode differs from prefill in ~1e-7 of a logit on every row, while rows computed by calls
  of two or more query tokens are bitwise identical whatever the chunking (tests/test_memo.py checks
  this on every model it can find). So every call here runs at least two query tokens — stepping a
  sequence re-feeds the previous token beside the new one — and each prefix's logits and KV cache are a
  function of the prefix alone. Reusing any cached prefix is then exact, not approximately right.
* Sampling draws from a generator seeded by the caller's seed only, so the order in which requests are
  served never changes what they generate.

Memory is bounded: logits rows and KV caches sit in byte-budgeted LRU maps; a sequence stepped forward
replaces its parent's cache (the parent is a truncation of the child, a view that costs nothing).

A policy that already knows its next question (a draft it just accepted) may `prefetch` it: the model call
starts on one of the model's two worker threads while the simulation goes on with other events, and the
answer is picked up when asked for. onnxruntime releases the GIL while it runs, so a fleet's model calls
overlap with each other and with the event loop on the machine's other core. Which cached prefix a call
starts from is chosen on the simulation's thread when the call is planned, and the memo is only written
there, when the answer is taken; with the two-query-token rule above the rows are the same bits whichever
prefix a call starts from, so prefetching changes when the CPU works, never what any run computes.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from netsim.lm.geometry import ModelGeometry
from netsim.lm.onnx_lm import KVCache, OnnxCausalLM
from netsim.lm.sampling import SamplingSpec, sample
from netsim.lm.tokenizer import Tokenizer

DEFAULT_LOGITS_MEMO_NBYTES = 256 << 20
DEFAULT_KV_MEMO_NBYTES = 512 << 20
DEFAULT_GENERATE_MEMO_ENTRIES = 65_536
_RECENT_SCAN = 32
"""How many recently used KV caches are searched for a shared prefix shorter than _INDEX_STRIDE."""
_INDEX_STRIDE = 16
"""Every cached KV entry is indexed under its prefixes of 16, 32, 48, … tokens, so the cache sharing the
longest prefix with a query is found among hundreds of sequences in flight (a fleet of devices) with a
few dictionary lookups, not by scanning the recent ones only."""

_MAX_PENDING = 2048
"""Prefetched calls kept waiting to be asked for; older ones are dropped (a draft that went elsewhere)."""

Prefix = tuple[int, ...]
V = TypeVar("V")


@dataclass(frozen=True)
class _Plan:
    """One model call: feed `fed` on `base` (the cache of `key[:start]`), then keep `key`'s cache;
    `parent` is the cached entry it extends, replaced by the child once the call's answer is taken."""

    key: Prefix
    start: int
    fed: Prefix
    base: KVCache
    parent: Prefix | None


class _LRU(Generic[V]):
    """Least-recently-used map holding at most `budget` units (bytes, or entries with size 1)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self.items: OrderedDict[Prefix, tuple[V, int]] = OrderedDict()

    def get(self, key: Prefix) -> V | None:
        hit = self.items.get(key)
        if hit is None:
            return None
        self.items.move_to_end(key)
        return hit[0]

    def put(self, key: Prefix, value: V, size: int) -> list[Prefix]:
        """Store `key`; returns the keys evicted to make room (`key` itself if it alone is too big)."""
        self.pop(key)
        if size > self.budget:
            return [key]
        self.items[key] = (value, size)
        self.used += size
        evicted_keys = []
        while self.used > self.budget:
            old, (_, evicted) = self.items.popitem(last=False)
            self.used -= evicted
            evicted_keys.append(old)
        return evicted_keys

    def pop(self, key: Prefix) -> None:
        old = self.items.pop(key, None)
        if old is not None:
            self.used -= old[1]

    def recent(self, n: int) -> list[tuple[Prefix, V]]:
        out = []
        for key in reversed(self.items):
            out.append((key, self.items[key][0]))
            if len(out) == n:
                break
        return out


class DiskMemo:
    """Logits rows and generated sequences of one model on disk: `<dir>/<model sha256>.sqlite`.

    SQLite in WAL mode lets the processes of a sweep share the file; rows are keyed by a digest of the
    token prefix and stored as raw float32, so a hit returns exactly what the model computed.

    Writes are batched: rows wait in memory (where this process's reads find them) and go to the file in
    one transaction per generated answer (`LanguageModel.generate`), per `FLUSH_ROWS` rows, per
    `FLUSH_AFTER_S` seconds, and on `flush()`/`close()` (a sweep worker flushes after every point) —
    rather than a transaction, with its locking and WAL append, per row of every model call. A process
    that ends without `close()` loses at most its last unflushed rows: a later run recomputes them.

    Several processes may write at once: a batch takes the write lock up front (`BEGIN IMMEDIATE`, so two
    writers never deadlock upgrading a read lock), waits up to `timeout_s` for it, and `INSERT OR IGNORE`
    makes a row that another process wrote first a no-op — the models are deterministic, so both computed
    the same bytes. A batch that
    still finds the file locked stays pending and is tried again at the next flush: the memo is a cache,
    and a row that never lands costs a recomputation, never a different result.
    """

    FLUSH_ROWS = 512
    FLUSH_AFTER_S = 2.0

    def __init__(self, directory: Path, model_sha256: str, vocab_size: int, *, timeout_s: float = 60.0
                 ) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{model_sha256}.sqlite"
        self.vocab_size = vocab_size
        self.db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS logits (key BLOB PRIMARY KEY, row BLOB) WITHOUT ROWID")
        self.db.execute("CREATE TABLE IF NOT EXISTS generated (key BLOB PRIMARY KEY, ids BLOB) WITHOUT ROWID")
        self._pending: dict[str, dict[bytes, bytes]] = {"logits": {}, "generated": {}}
        self._first_pending_s: float | None = None
        self.n_flushes = 0
        """transactions committed so far (tests count them)"""

    @staticmethod
    def digest(*parts: bytes) -> bytes:
        h = hashlib.blake2b(digest_size=20)
        for part in parts:
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
        return h.digest()

    def get_logits(self, prefix: Prefix) -> np.ndarray | None:
        blob = self._get("logits", "row", self._prefix_key(prefix))
        if blob is None or len(blob) != 4 * self.vocab_size:
            return None
        return np.frombuffer(blob, dtype="<f4")

    def put_logits(self, prefix: Prefix, row: np.ndarray) -> None:
        self._put("logits", self._prefix_key(prefix), row.astype("<f4").tobytes())

    def get_generated(self, key: bytes) -> tuple[int, ...] | None:
        blob = self._get("generated", "ids", key)
        return None if blob is None else tuple(int(t) for t in np.frombuffer(blob, dtype="<i8"))

    def put_generated(self, key: bytes, ids: Sequence[int]) -> None:
        self._put("generated", key, np.asarray(ids, dtype="<i8").tobytes())

    @property
    def n_pending(self) -> int:
        return sum(len(rows) for rows in self._pending.values())

    def flush(self) -> bool:
        """Write the pending rows in one transaction; False (rows kept) if the file stayed locked."""
        if not self.n_pending:
            return True
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # locked for the whole timeout: keep the rows for the next flush
            return False
        try:
            for table, rows in self._pending.items():
                if rows:
                    self.db.executemany(f"INSERT OR IGNORE INTO {table} VALUES (?, ?)", rows.items())
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self._pending = {table: {} for table in self._pending}
        self._first_pending_s = None
        self.n_flushes += 1
        return True

    def close(self) -> None:
        """Flush (one last try; rows a locked file refuses are dropped, being a cache) and close."""
        self.flush()
        self.db.close()

    def _get(self, table: str, column: str, key: bytes) -> bytes | None:
        pending = self._pending[table].get(key)
        if pending is not None:
            return pending
        found = self.db.execute(f"SELECT {column} FROM {table} WHERE key = ?", (key,)).fetchone()
        return None if found is None else found[0]

    def _put(self, table: str, key: bytes, blob: bytes) -> None:
        self._pending[table].setdefault(key, blob)
        now = time.monotonic()
        if self._first_pending_s is None:
            self._first_pending_s = now
        if self.n_pending >= self.FLUSH_ROWS or now - self._first_pending_s >= self.FLUSH_AFTER_S:
            self.flush()

    def _prefix_key(self, prefix: Prefix) -> bytes:
        return self.digest(b"logits", np.asarray(prefix, dtype="<i8").tobytes())


class LanguageModel:
    """An `OnnxCausalLM` behind an exact memo; what policies call. One instance per model per process.

    Budgets of 0 turn the memo off (every query recomputes its prefix from scratch) — the reference the
    tests compare the memo against.
    """

    def __init__(self, lm: OnnxCausalLM, *, disk_dir: Path | None = None,
                 logits_memo_nbytes: int = DEFAULT_LOGITS_MEMO_NBYTES,
                 kv_memo_nbytes: int = DEFAULT_KV_MEMO_NBYTES,
                 generate_memo_entries: int = DEFAULT_GENERATE_MEMO_ENTRIES) -> None:
        self.lm = lm
        self.disk = DiskMemo(disk_dir, lm.sha256, lm.geometry.vocab_size) if disk_dir is not None else None
        self._logits: _LRU[np.ndarray] = _LRU(logits_memo_nbytes)
        self._kv: _LRU[KVCache] = _LRU(kv_memo_nbytes)
        self._kv_index: dict[Prefix, set[Prefix]] = {}
        """prefix of _INDEX_STRIDE·k tokens → keys of the KV entries starting with it (live entries only)"""
        self._generated: _LRU[tuple[int, ...]] = _LRU(generate_memo_entries)
        self._pending: dict[Prefix, tuple[_Plan, Future[tuple[np.ndarray, KVCache]]]] = {}
        self._worker: ThreadPoolExecutor | None = None
        self.n_model_calls = 0
        """onnxruntime invocations whose answers were used so far (what the memo saves; tests count them)."""
        self.n_prefetched = 0
        """of those, calls that had been started ahead by `prefetch`"""

    @property
    def name(self) -> str:
        return self.lm.name

    @property
    def geometry(self) -> ModelGeometry:
        return self.lm.geometry

    @property
    def tokenizer(self) -> Tokenizer:
        return self.lm.tokenizer

    @property
    def sha256(self) -> str:
        return self.lm.sha256

    # -- queries -----------------------------------------------------------------------------------

    def next_logits(self, prefix: Sequence[int]) -> np.ndarray:
        """Logits (V,) float32 of the token after `prefix` (read-only; shared with the memo)."""
        key = tuple(prefix)
        if not key:
            raise ValueError(f"{self.name}: next_logits needs at least one token")
        row = self._cached_row(key)
        if row is None:
            row = self._compute(key, first_row=len(key))[-1]
        return row

    def block_logits(self, prefix: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
        """Logits (k, V): row i is `next_logits(prefix + tokens[:i+1])` — one verify call for k drafts.

        Computed together with `next_logits(prefix)` (free: the call has one more row), so a policy that
        verifies drafts finds the distribution of its first draft memoised too.
        """
        if not tokens:
            raise ValueError(f"{self.name}: block_logits needs at least one token")
        full = (*prefix, *tokens)
        start = len(prefix) + 1
        rows = [self._cached_row(full[:n]) for n in range(start, len(full) + 1)]
        cached = [r for r in rows if r is not None]
        if len(cached) == len(rows):
            return np.stack(cached)
        computed = self._compute(full, first_row=max(len(prefix), 1))
        return np.stack(computed[len(computed) - len(tokens):])

    def prefetch(self, prefix: Sequence[int]) -> None:
        """Start computing `next_logits(prefix)` on this model's worker threads (see the module docstring);
        a hint that changes no result. Nothing happens when the answer is memoised or already coming."""
        key = tuple(prefix)
        if not key or key in self._pending or self._cached_row(key) is not None:
            return
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"netsim-{self.name}")
        plan = self._plan(key, first_row=len(key))
        self._pending[key] = (plan, self._worker.submit(self.lm.verify, plan.fed, plan.base))
        while len(self._pending) > _MAX_PENDING:
            self._pending.pop(next(iter(self._pending)))

    def kv_cache(self, prefix: Sequence[int]) -> KVCache:
        """The KV cache of `prefix` (for payloads such as C2C's cache exchange)."""
        key = tuple(prefix)
        if not key:
            return self.lm.empty_cache()
        cache = self._kv.get(key)
        if cache is None:
            self._compute(key, first_row=len(key))
            cache = self._kv.get(key)
            if cache is None:  # larger than the whole KV budget: recompute without keeping it
                cache = self._uncached_kv(key)
        return cache

    def embed(self, ids: Sequence[int]) -> np.ndarray:
        """Input-embedding rows (n, hidden) of `ids` (not memoised: a table lookup)."""
        return self.lm.embed(ids)

    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int, sampling: SamplingSpec,
                 seed: Sequence[int] | int, stop_at_eos: bool = True) -> list[int]:
        """Up to `max_new_tokens` tokens after the prompt; the RNG comes from `seed` alone
        (`np.random.default_rng(seed)`), so results do not depend on call order or on the memo."""
        prompt_ids = [int(t) for t in prompt_ids]
        if not prompt_ids:
            raise ValueError(f"{self.name}: generate needs a non-empty prompt")
        seed_part = np.asarray(seed if isinstance(seed, Sequence) else [seed], dtype="<i8").tobytes()
        eos = self.tokenizer.eos_id if stop_at_eos else None
        key = DiskMemo.digest(np.asarray(prompt_ids, dtype="<i8").tobytes(),
                              sampling.model_dump_json().encode(), seed_part,
                              str((max_new_tokens, eos)).encode())
        memo_key = (int.from_bytes(key, "little"),)
        done = self._generated.get(memo_key)
        if done is None and self.disk is not None:
            done = self.disk.get_generated(key)
        if done is None:
            done = tuple(self._sample_tokens(prompt_ids, max_new_tokens, sampling, seed, eos))
            if self.disk is not None:
                self.disk.put_generated(key, done)
                self.disk.flush()  # a whole answer, its logits rows with it: one transaction
        self._generated.put(memo_key, done, 1)
        return list(done)

    def flush(self) -> None:
        """Write the disk memo's pending rows now (a sweep worker calls this after every point, so the
        other processes of the machine see them; see DiskMemo)."""
        if self.disk is not None:
            self.disk.flush()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(wait=True, cancel_futures=True)
            self._worker = None
        self._pending.clear()
        if self.disk is not None:
            self.disk.close()

    def __repr__(self) -> str:
        return (f"LanguageModel({self.name!r}, logits memo {self._logits.used / 2**20:.1f}/"
                f"{self._logits.budget / 2**20:.0f} MiB, KV memo {self._kv.used / 2**20:.1f}/"
                f"{self._kv.budget / 2**20:.0f} MiB, {self.n_model_calls} model calls)")

    # -- internals ---------------------------------------------------------------------------------

    def _sample_tokens(self, prompt_ids: Sequence[int], max_new_tokens: int, sampling: SamplingSpec,
                       seed: Sequence[int] | int, eos: int | None) -> list[int]:
        rng = np.random.default_rng(list(seed) if isinstance(seed, Sequence) else seed)
        sequence = list(prompt_ids)
        out: list[int] = []
        for _ in range(max_new_tokens):
            token = sample(self.next_logits(sequence), sampling, rng)
            out.append(token)
            sequence.append(token)
            if token == eos:
                break
        return out

    def _cached_row(self, key: Prefix) -> np.ndarray | None:
        row = self._logits.get(key)
        if row is None and self.disk is not None and (row := self.disk.get_logits(key)) is not None:
            self._logits.put(key, row, row.nbytes)
        return row

    def _longest_cached(self, key: Prefix) -> tuple[int, KVCache | None, Prefix | None]:
        """Longest prefix of `key` whose KV cache is memoised: (its length, cache, the entry's key)."""
        for n in (len(key), len(key) - 1):
            if n > 0 and (cache := self._kv.get(key[:n])) is not None:
                return n, cache, key[:n]
        best: tuple[int, KVCache | None, Prefix | None] = (0, None, None)
        target = np.asarray(key)
        for k in range(len(key) // _INDEX_STRIDE * _INDEX_STRIDE, 0, -_INDEX_STRIDE):
            bucket = self._kv_index.get(key[:k])
            if not bucket:
                continue
            for entry_key in sorted(bucket):  # sorted: the same pick in every run, whatever the set order
                n = min(len(entry_key), len(key))
                differ = np.flatnonzero(np.asarray(entry_key[:n]) != target[:n])
                shared = int(differ[0]) if differ.size else n
                if shared > best[0]:
                    best = (shared, self._kv.items[entry_key][0], entry_key)
            if best[2] is not None:  # entries of a deeper bucket share ≥ k tokens; any other shares fewer
                self._kv.get(best[2])  # counts as a use for the LRU order
                return best
        for entry_key, cache in self._kv.recent(_RECENT_SCAN):
            n = min(len(entry_key), len(key))
            differ = np.flatnonzero(np.asarray(entry_key[:n]) != target[:n])
            shared = int(differ[0]) if differ.size else n
            if shared > best[0]:
                best = (shared, cache, entry_key)
        return best

    def _plan(self, key: Prefix, first_row: int) -> _Plan:
        """The call that gives rows for prefix lengths first_row..len(key): the longest cached prefix it
        can start from, and at least two query tokens fed (see the module docstring); a one-token prefix
        is fed twice and only its first row and first cache position are kept."""
        n = len(key)
        shared, cached, entry_key = self._longest_cached(key)
        start = max(0, min(shared, first_row - 1, n - 2))
        base = self.lm.empty_cache() if cached is None or start == 0 else cached.truncate(start)
        fed = key[start:] if n - start >= 2 else (key[0], key[0])
        return _Plan(key, start, fed, base, entry_key)

    def _compute(self, key: Prefix, first_row: int) -> list[np.ndarray]:
        """Run the model once (or take the prefetched call) so that rows for prefix lengths
        first_row..len(key) come out, memoise them and the KV cache of `key`; returns those rows in order."""
        n = len(key)
        pending = self._pending.pop(key, None)
        if pending is not None and pending[0].start < first_row:
            plan, future = pending
            logits, cache = future.result()
            self.n_prefetched += 1
        else:
            plan = self._plan(key, first_row)
            logits, cache = self.lm.verify(plan.fed, plan.base)
        self.n_model_calls += 1
        cache = cache.truncate(n)
        rows = []
        for length in range(first_row, n + 1):
            row = np.array(logits[length - plan.start - 1], dtype=np.float32)  # own copy: frees the block
            row.flags.writeable = False
            self._logits.put(key[:length], row, row.nbytes)
            if self.disk is not None:
                self.disk.put_logits(key[:length], row)
            rows.append(row)
        parent = plan.parent
        replaced = parent is not None and len(parent) <= n and parent == key[:len(parent)]
        if replaced:
            self._kv.pop(parent)  # the parent is a view of the child from now on
        if key in self._kv.items:
            self._unindex(key)  # a key computed again replaces its entry
        evicted = self._kv.put(key, cache, cache.nbytes)
        stored = key in self._kv.items
        # the prefixes parent and child share: the child takes the parent's place in one lookup each
        shared = len(parent) // _INDEX_STRIDE * _INDEX_STRIDE if replaced and parent is not None else 0
        for k in range(_INDEX_STRIDE, shared + 1, _INDEX_STRIDE):
            prefix = key[:k]
            bucket = self._kv_index.get(prefix)
            if bucket is not None:
                bucket.discard(parent)  # type: ignore[arg-type]
                if not stored and not bucket:
                    del self._kv_index[prefix]
            if stored:
                (bucket if bucket is not None else self._kv_index.setdefault(prefix, set())).add(key)
        for gone in evicted:
            self._unindex(gone)
        if stored:
            for k in range(shared + _INDEX_STRIDE, n + 1, _INDEX_STRIDE):
                self._kv_index.setdefault(key[:k], set()).add(key)
        return rows

    def _unindex(self, key: Prefix) -> None:
        for k in range(_INDEX_STRIDE, len(key) + 1, _INDEX_STRIDE):
            bucket = self._kv_index.get(key[:k])
            if bucket is not None:
                bucket.discard(key)
                if not bucket:
                    del self._kv_index[key[:k]]

    def _uncached_kv(self, key: Prefix) -> KVCache:
        fed = key if len(key) >= 2 else (key[0], key[0])
        _, cache = self.lm.verify(fed, self.lm.empty_cache())
        self.n_model_calls += 1
        return cache.truncate(len(key))
