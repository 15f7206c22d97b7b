"""WordNet 3.0, the version ImageNet's ids come from, read with nltk and cached as Parquet.

ImageNet's wnid ``n01440764`` is WordNet 3.0's noun at offset 1440764
(``wn.synset_from_pos_and_offset('n', 1440764)``).

Where the data is looked for, in order:

1. ``--wordnet-dir DIR`` or the ``EIC_WORDNET_DIR`` environment variable;
2. nltk's own data path (``python -m nltk.downloader wordnet``);
3. Debian's ``wordnet-base`` and ``wordnet-sense-index`` packages
   (``/usr/share/wordnet``).

A folder without nltk's ``lexnames`` file (Debian's) is laid out once as an
nltk data folder in the cache: links to its files plus a ``lexnames`` written
from the 45 standard lexicographer files (``man 5 lexnames``).

Walking nltk's synsets is slow, so the facts the toolkit needs about every
noun (wnid, lemma, gloss, lexicographer file, depth, hypernym edges) are built
once into a Parquet file in the cache, keyed by WordNet version and data, and
reused: see :func:`load_wordnet_index`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from eic_builder.atomic_files import write_folder_atomically
from eic_builder.cache_folder import cache_dir
from eic_builder.dataset.schemas import NOUN_INDEX_SCHEMA
from eic_builder.dataset.tables import read_metadata, read_table, write_table
from eic_builder.errors import WordNetError

log = logging.getLogger(__name__)

WORDNET_VERSION = "3.0"
DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")
ENV_WORDNET_DIR = "EIC_WORDNET_DIR"

# The 45 lexicographer files of WordNet 3.0 (man 5 lexnames): number, name, syntactic category.
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling",
    "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
    "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation",
    "noun.shape", "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
    "verb.communication", "verb.competition", "verb.consumption", "verb.contact", "verb.creation",
    "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social", "verb.stative",
    "verb.weather", "adj.ppl",
)
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_REQUIRED = ("data.noun", "index.noun", "noun.exc")



def lexnames_text() -> str:
    """The ``lexnames`` file nltk expects: ``NN<TAB>name<TAB>category`` per line."""
    return "".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def wnid_of(offset: int) -> str:
    """The ImageNet wnid of a WordNet 3.0 noun offset."""
    return f"n{offset:08d}"


def offset_of(wnid: str) -> int:
    """The WordNet noun offset of a wnid; raises :class:`WordNetError` for a malformed one."""
    if len(wnid) != 9 or wnid[0] != "n" or not wnid[1:].isdigit():
        raise WordNetError(f"{wnid!r} is not a wnid: expected 'n' followed by 8 digits, e.g. 'n01440764'")
    return int(wnid[1:])


def _has_wordnet_files(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _REQUIRED)


def _lay_out(src: Path) -> Path:
    """An nltk data folder ``<cache>/nltk_data-<id>/corpora/wordnet`` holding a copy of ``src`` plus a
    ``lexnames`` file when it lacks one; returns the ``corpora/wordnet`` folder.

    Copies, not links: nltk refuses to read through links that leave its data roots. The folder
    must be named ``corpora/wordnet``: nltk's reader looks its own version up by that name.
    """
    # keyed by the folder and its files' sizes and times: a folder fixed after a failed try is laid out anew
    record = [str(src.resolve())] + [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                                     for p in sorted(src.iterdir()) if p.is_file()]
    digest = hashlib.sha1("\n".join(record).encode()).hexdigest()[:12]
    dest = cache_dir() / f"nltk_data-{digest}" / "corpora" / "wordnet"
    if (dest / "lexnames").is_file():
        return dest
    import shutil

    def fill(tmp: Path) -> None:
        for item in sorted(src.iterdir()):
            if item.is_file():
                shutil.copyfile(item, tmp / item.name)
        if not (tmp / "lexnames").is_file():
            (tmp / "lexnames").write_text(lexnames_text())

    write_folder_atomically(dest, fill)  # another process may lay it out first: theirs is kept
    log.info("laid out WordNet from %s as an nltk data folder in %s", src, dest)
    return dest


def _authorise(folder: Path) -> None:
    """Put the data root of a ``<root>/corpora/wordnet`` folder first on ``nltk.data.path``:
    nltk reads only below those roots."""
    import nltk.data

    root = str(folder.resolve().parent.parent)
    # first on the path: nltk also looks files up by name ("corpora/wordnet/index.sense") from the first
    # root that has them, which must be this folder's rather than one laid out earlier in this process
    if root in nltk.data.path:
        nltk.data.path.remove(root)
    nltk.data.path.insert(0, root)


@dataclass(frozen=True)
class WordNetSource:
    """Where WordNet was found: ``how`` (option, env, nltk, debian) and the folder nltk reads."""

    how: str
    folder: Path  # a ``corpora/wordnet`` folder, or nltk's ``corpora/wordnet.zip``
    origin: str


def nltk_data_roots() -> list[Path]:
    """The folders nltk searches for its data, in its order (``nltk.data.path`` as nltk builds it),
    computed without importing nltk: importing it costs seconds, and a warm run needs only the key."""
    roots = [os.path.expanduser(d) for d in os.environ.get("NLTK_DATA", "").split(os.pathsep) if d]
    if "APPENGINE_RUNTIME" not in os.environ and os.path.expanduser("~/") != "~/":
        roots.append(os.path.expanduser("~/nltk_data"))
    if os.name == "nt":
        roots += [os.path.join(sys.prefix, "nltk_data"), os.path.join(sys.prefix, "share", "nltk_data"),
                  os.path.join(sys.prefix, "lib", "nltk_data"),
                  os.path.join(os.environ.get("APPDATA", "C:\\"), "nltk_data"),
                  r"C:\nltk_data", r"D:\nltk_data", r"E:\nltk_data"]
    else:
        roots += [os.path.join(sys.prefix, "nltk_data"), os.path.join(sys.prefix, "share", "nltk_data"),
                  os.path.join(sys.prefix, "lib", "nltk_data"), "/usr/share/nltk_data",
                  "/usr/local/share/nltk_data", "/usr/lib/nltk_data", "/usr/local/lib/nltk_data"]
    return [Path(r) for r in roots]


def _find_in_nltk_path() -> Path | None:
    """``<root>/corpora/wordnet`` (a folder) or ``<root>/corpora/wordnet.zip`` as ``nltk.data.find``
    would pick it: a folder on any root first, then a zip."""
    roots = nltk_data_roots()
    for root in roots:
        if (root / "corpora" / "wordnet").is_dir():
            return root / "corpora" / "wordnet"
    for root in roots:
        if (root / "corpora" / "wordnet.zip").is_file():
            return root / "corpora" / "wordnet.zip"
    return None


def find_wordnet(wordnet_dir: str | os.PathLike[str] | None = None) -> WordNetSource:
    """Locate WordNet data in the documented order, or raise :class:`WordNetError` naming the three ways.

    Imports no nltk: only building the index (:func:`open_reader`) needs it."""
    explicit = wordnet_dir or os.environ.get(ENV_WORDNET_DIR)
    if explicit:
        how = "option" if wordnet_dir else "env"
        path = Path(explicit)
        if not _has_wordnet_files(path):
            raise WordNetError(f"WordNet folder {path} (from {'`wordnet_dir`' if wordnet_dir else ENV_WORDNET_DIR}) "
                               f"lacks {', '.join(n for n in _REQUIRED if not (path / n).is_file())}")
        nltk_layout = (path / "lexnames").is_file() and path.resolve().parent.name == "corpora" \
            and path.resolve().name == "wordnet"
        folder = path if nltk_layout else _lay_out(path)
        return WordNetSource(how, folder, str(path))
    found = _find_in_nltk_path()
    if found is not None:
        return WordNetSource("nltk", found, str(found))
    if _has_wordnet_files(DEBIAN_WORDNET_DIR):
        return WordNetSource("debian", _lay_out(DEBIAN_WORDNET_DIR), str(DEBIAN_WORDNET_DIR))
    raise WordNetError(
        "WordNet 3.0 data not found; get it one of three ways: `wordnet_dir` DIR (or EIC_WORDNET_DIR), "
        "python -m nltk.downloader wordnet, or apt-get install wordnet-base wordnet-sense-index"
    )


def open_reader(source: WordNetSource):
    """nltk's WordNet reader on ``source``; checks that it is WordNet 3.0."""
    import warnings

    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    pointer = _pointer(source)
    try:
        with warnings.catch_warnings():  # no Open Multilingual WordNet is wanted here
            warnings.filterwarnings("ignore", message="The multilingual functions are not available")
            reader = WordNetCorpusReader(pointer, None)
    except (OSError, LookupError, ValueError) as exc:
        raise WordNetError(f"nltk cannot read WordNet at {source.origin}: {exc}") from exc
    version = reader.get_version()
    if version != WORDNET_VERSION:
        raise WordNetError(f"WordNet at {source.origin} is version {version}; ImageNet ids need {WORDNET_VERSION}")
    return reader


def _pointer(source: WordNetSource):
    from nltk.data import FileSystemPathPointer, ZipFilePathPointer

    if source.folder.suffix == ".zip":
        return ZipFilePathPointer(str(source.folder), "wordnet/")
    _authorise(source.folder)
    return FileSystemPathPointer(str(source.folder))


def _data_key(source: WordNetSource) -> str:
    """A key of the WordNet data: its ``data.noun``'s first 64 KiB and size (read without nltk)."""
    if source.folder.suffix == ".zip":
        import zipfile

        with zipfile.ZipFile(source.folder) as archive:
            size = archive.getinfo("wordnet/data.noun").file_size
            with archive.open("wordnet/data.noun") as f:
                head = f.read(1 << 16)
    else:
        with open(source.folder / "data.noun", "rb") as f:
            head = f.read(1 << 16)
            size = os.fstat(f.fileno()).st_size
    return hashlib.sha1(head + str(size).encode()).hexdigest()[:16]


def build_noun_index(reader) -> pa.Table:
    """Every noun synset as a row of :data:`NOUN_INDEX_SCHEMA` (walks nltk once: seconds to a minute)."""
    wnids, lemmas, glosses, lexnames, hypernyms = [], [], [], [], []
    for synset in reader.all_synsets("n"):
        wnids.append(wnid_of(synset.offset()))
        lemmas.append(synset.lemmas()[0].name().replace("_", " "))
        glosses.append(synset.definition())
        lexnames.append(synset.lexname())
        hypernyms.append(sorted(wnid_of(h.offset()) for h in synset.hypernyms() + synset.instance_hypernyms()))
    order = np.argsort(np.asarray(wnids))
    wnids = [wnids[i] for i in order]
    lemmas = [lemmas[i] for i in order]
    glosses = [glosses[i] for i in order]
    lexnames = [lexnames[i] for i in order]
    hypernyms = [hypernyms[i] for i in order]
    depth = _min_depth(wnids, hypernyms)
    return pa.table({"wnid": wnids, "lemma": lemmas, "gloss": glosses, "lexname": lexnames,
                     "depth": pa.array(depth, pa.int16()), "hypernyms": hypernyms}, schema=NOUN_INDEX_SCHEMA)


def _min_depth(wnids: list[str], hypernyms: list[list[str]]) -> np.ndarray:
    index = {w: i for i, w in enumerate(wnids)}
    children: list[list[int]] = [[] for _ in wnids]
    roots = []
    for i, parents in enumerate(hypernyms):
        if not parents:
            roots.append(i)
        for parent in parents:
            children[index[parent]].append(i)
    depth = np.full(len(wnids), -1, dtype=np.int16)
    queue = deque(roots)
    for root in roots:
        depth[root] = 0
    while queue:
        i = queue.popleft()
        for c in children[i]:
            if depth[c] < 0:
                depth[c] = depth[i] + 1
                queue.append(c)
    return depth


@dataclass
class WordNetIndex:
    """The noun hierarchy of WordNet 3.0 as arrays: fast ancestor, descendant and distance queries."""

    table: pa.Table
    source: str = ""
    _pos: dict[str, int] = field(default_factory=dict, repr=False)
    _parents: list[list[int]] = field(default_factory=list, repr=False)
    _children: list[list[int]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        wnids = self.table["wnid"].to_pylist()
        self._pos = {w: i for i, w in enumerate(wnids)}
        self._parents = [[self._pos[parent] for parent in ps] for ps in self.table["hypernyms"].to_pylist()]
        self._children = [[] for _ in wnids]
        for i, ps in enumerate(self._parents):
            for parent in ps:
                self._children[parent].append(i)
        self.wnids = wnids
        self.lemmas = self.table["lemma"].to_pylist()
        self.glosses = self.table["gloss"].to_pylist()
        self.lexnames = self.table["lexname"].to_pylist()
        self.depths = self.table["depth"].to_numpy()

    def __len__(self) -> int:
        return len(self.wnids)

    def __contains__(self, wnid: object) -> bool:
        return wnid in self._pos

    def noun_wnids(self) -> frozenset[str]:
        """Every WordNet 3.0 noun id."""
        return frozenset(self._pos)

    def position(self, wnid: str) -> int:
        """Row of ``wnid``; raises :class:`WordNetError` for a malformed or unknown id."""
        offset_of(wnid)
        if wnid not in self._pos:
            raise WordNetError(f"{wnid} is not a WordNet {WORDNET_VERSION} noun synset")
        return self._pos[wnid]

    def _closure(self, wnids: Iterable[str], edges: list[list[int]]) -> set[int]:
        seen: set[int] = set()
        stack = [self.position(w) for w in wnids]
        while stack:
            for j in edges[stack.pop()]:
                if j not in seen:
                    seen.add(j)
                    stack.append(j)
        return seen

    def ancestors(self, wnids: Iterable[str]) -> set[str]:
        """Every strict hypernym (transitively, instance hypernyms included) of any of ``wnids``."""
        return {self.wnids[i] for i in self._closure(wnids, self._parents)}

    def descendants(self, wnids: Iterable[str]) -> set[str]:
        """Every strict hyponym (transitively) of any of ``wnids``."""
        return {self.wnids[i] for i in self._closure(wnids, self._children)}

    def nearest(self, targets: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """For every noun, the nearest of ``targets`` along hypernym/hyponym edges (multi-source BFS).

        Returns (index into ``self.wnids`` of the nearest target or -1, hop distance or -1), arrays
        of shape (len(self),). Ties go to the target found first from the lower wnid.
        """
        n = len(self.wnids)
        nearest = np.full(n, -1, dtype=np.int64)
        hops = np.full(n, -1, dtype=np.int64)
        queue: deque[int] = deque()
        for i in sorted(self.position(t) for t in targets):
            nearest[i], hops[i] = i, 0
            queue.append(i)
        while queue:
            i = queue.popleft()
            for j in (*self._parents[i], *self._children[i]):
                if hops[j] < 0:
                    hops[j], nearest[j] = hops[i] + 1, nearest[i]
                    queue.append(j)
        return nearest, hops


def load_wordnet_index(wordnet_dir: str | os.PathLike[str] | None = None, rebuild: bool = False) -> WordNetIndex:
    """The cached noun index of WordNet 3.0, built from nltk on first use (or with ``rebuild``)."""
    source = find_wordnet(wordnet_dir)
    key = _data_key(source)
    path = cache_dir() / f"wordnet-{WORDNET_VERSION}-nouns-{key}.parquet"
    if path.is_file() and not rebuild:
        return WordNetIndex(read_table(path, "wordnet_nouns"), source=read_metadata(path).get("origin", ""))
    log.info("building the WordNet %s noun index from %s (once; cached in %s)", WORDNET_VERSION, source.origin, path)
    try:
        table = build_noun_index(open_reader(source))
    except WordNetError:
        raise
    except Exception as exc:  # nltk fails in many ways on files that are not WordNet's
        raise WordNetError(f"WordNet data from {source.origin} cannot be read ({type(exc).__name__}: {exc}); it "
                           "must be WordNet 3.0: Debian's wordnet-base + wordnet-sense-index, or "
                           "`python -m nltk.downloader wordnet`") from exc
    write_table(table, path, "wordnet_nouns", {"wordnet_version": WORDNET_VERSION, "origin": source.origin,
                                               "found_by": source.how})
    return WordNetIndex(table, source=source.origin)
