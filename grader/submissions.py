"""Finding the learners' submissions in a batch folder (or a whole-class zip), unpacking them, hashing them.

The layouts recognised, mixed freely in one folder:

- **Canvas** "Download Submissions": flat files ``<name>_[late_]<user id>_<submission id>_<file>``,
  where ``<file>`` may carry Canvas's resubmission suffix (``q1_positional_encoding-1.py``);
  one learner per user id, their files (or a zip among them) graded together.
- **Moodle** "Download all submissions": a folder per learner,
  ``<Full Name>_<participant id>_assignsubmission_file_/``, holding the files or a zip
  (``_assignsubmission_onlinetext_`` folders are ignored); or, downloaded without
  folders, flat files ``<Full Name>_<participant id>_assignsubmission_file_<file>``.
- **nbgrader**: ``submitted/<learner>/<assignment>/``.
- **plain**: a folder or a ``.zip`` per learner, named by the learner (``alice/``, ``bob.zip``,
  ``José Ñúñez (late)/``; a trailing ``(late)`` is the late flag).

Each learner becomes an :class:`Entry` with the original name, the LMS id, the
late flag and a file-system-safe ``learner`` key (the results folder's name).
Nothing here imports torch or runs learner code: entries are only listed, hashed
and unpacked (safely: no paths outside the target, bounded size). An entry that
cannot be graded (an empty folder, a broken zip, two learners with one id) is
still listed, with the reason, so that it gets a result of 0 points that says why.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import tempfile
import unicodedata
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

from grader.exercises import KIT_ROOT, SUITES

MAX_UNPACKED_BYTES = 50 * 2**20  # a learner's zip that unpacks to more than this is refused (a zip bomb)
MAX_MEMBERS = 2000
MAX_CLASS_BYTES = 4 * 2**30  # a whole-class zip
MAX_CLASS_MEMBERS = 200_000
_LEARNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$")
CANVAS = re.compile(r"^(?P<name>[^_/]+?)_(?:(?P<late>late)_)?(?P<id>\d+)_(?P<submission>\d+)_(?P<file>.+)$",
                    re.IGNORECASE)
CANVAS_COPY = re.compile(r"^(?P<stem>.+?)-(?P<copy>\d+)(?P<suffix>\.[A-Za-z0-9]+)$")  # q1_pe-2.py: 2nd resubmission
MOODLE = re.compile(r"^(?P<name>.+)_(?P<id>\d+)_assignsubmission_(?P<plugin>[a-z]+)_?$")
MOODLE_FILE = re.compile(r"^(?P<name>.+?)_(?P<id>\d+)_assignsubmission_file_(?P<file>.+)$")  # without folders
LATE = re.compile(r"^(?P<name>.+?)[\s_-]*\(late\)$", re.IGNORECASE)
IGNORED = ("__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini")


class MalformedSubmission(ValueError):
    """An entry that cannot be graded; the message is the learner-facing reason."""


@dataclass(frozen=True)
class Entry:
    """One learner's entry.

    Attributes:
        learner: file-system-safe key, the name of the learner's results folder.
        path: the folder or zip (for Canvas flat files, the folder holding them).
        kind: ``folder``, ``zip``, ``files`` (Canvas flat files) or ``file`` (nothing gradable).
        name: the learner's name as the LMS gives it (``José Ñúñez``; the key when empty).
        lms_id: the LMS's id of the learner (Canvas user id, Moodle participant id, nbgrader student id).
        late: the LMS marked the submission late.
        lms: ``canvas``, ``moodle``, ``nbgrader`` or ``plain``.
        files: for ``files``: ``(name graded as, source file)`` pairs.
        notes: what was set aside (an older copy, a file matching no question), shown to the learner.
        problem: why the entry cannot be graded at all (e.g. two learners with one id); empty when it can.
    """

    learner: str
    path: Path
    kind: str
    name: str = ""
    lms_id: str = ""
    late: bool = False
    lms: str = "plain"
    files: tuple[tuple[str, Path], ...] = ()
    notes: tuple[str, ...] = ()
    problem: str = ""

    @property
    def display_name(self) -> str:
        return self.name or self.learner

    @property
    def source(self) -> str:
        """What the learner handed in, by name: the folder or zip, or the flat files."""
        return ", ".join(p.name for _, p in self.files) if self.kind == "files" else self.path.name

    def identity(self) -> dict[str, object]:
        """The fields a result document carries about who submitted (see ``grader.batch``)."""
        return {"learner": self.display_name, "learner_folder": self.learner, "lms": self.lms,
                "lms_id": self.lms_id, "late": self.late}


def slug(name: str) -> str:
    """``José Ñúñez`` → ``Jose_Nunez``: ASCII letters, digits and ``_.@+-`` only."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_.@+-]", "_", ascii_name)).strip("._-")[:100]


def learner_id(name: str) -> str:
    """A file-system-safe learner key from an entry's name (``bob.zip`` → ``bob``).

    A name that is not already safe keeps a readable transliteration plus a hash of
    the original, so that two names never share a key (``José`` and ``Jose``).
    """
    stem = name[:-4] if name.lower().endswith(".zip") else name
    if _LEARNER.match(stem):
        return stem
    return f"{slug(stem) or 'learner'}-{hashlib.sha256(stem.encode()).hexdigest()[:8]}"


# ----------------------------------------------------------------------------- the class: a folder or a zip
@contextlib.contextmanager
def opened(source: Path) -> Iterator[Path]:
    """The batch folder of ``source``: itself, or a whole-class zip unpacked into a temporary folder.

    A zip whose only top-level entry is a folder without answer files
    (``submissions/``) is entered. The folder is removed on exit.

    Raises:
        FileNotFoundError: ``source`` is neither a folder nor a zip file.
        MalformedSubmission: the class zip cannot be read (the message says why).
    """
    source = Path(source)
    if source.is_dir():
        yield source
        return
    if not (source.is_file() and zipfile.is_zipfile(source)):
        what = "is not a zip archive" if source.is_file() else "does not exist"
        raise FileNotFoundError(f"{source} {what}: give a folder of submissions or a whole-class .zip")
    with tempfile.TemporaryDirectory(prefix="grade-class-") as scratch:
        root = Path(scratch)
        _unzip(source, root, max_members=MAX_CLASS_MEMBERS, max_bytes=MAX_CLASS_BYTES)
        children = [p for p in root.iterdir() if p.name not in IGNORED]
        while (len(children) == 1 and children[0].is_dir() and children[0].name != "submitted"
               and not _answer_files(children[0]) and not MOODLE.match(children[0].name)):
            root = children[0]
            children = [p for p in root.iterdir() if p.name not in IGNORED]
        yield root


# ----------------------------------------------------------------------------- discovery
def discover(root: Path, exercise: str) -> list[Entry]:
    """The learners' entries in the batch folder ``root``, sorted by key.

    The nbgrader layout is recognised by a ``submitted/`` folder: each
    ``submitted/<learner>/<exercise>/`` (or ``submitted/<learner>/`` when that
    learner has no such folder) is an entry. Otherwise every Canvas flat file,
    Moodle folder, plain folder or zip of ``root`` is sorted into its learner.
    Hidden names and names starting with ``_`` are skipped.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    nbgrader = root / "submitted"
    if nbgrader.is_dir():
        entries = []
        for learner in sorted(nbgrader.iterdir()):
            if learner.name.startswith((".", "_")):
                continue
            folder = learner / exercise if (learner / exercise).is_dir() else learner
            entries.append(Entry(learner_id(learner.name), folder, "folder" if folder.is_dir() else "file",
                                 name=learner.name, lms_id=learner.name, lms="nbgrader"))
        return _unique_keys(entries)
    flat: dict[tuple[str, str], list[tuple[re.Match, Path]]] = {}  # (lms, id) -> that learner's files
    entries = []
    for path in sorted(root.iterdir()):
        if path.name.startswith((".", "_")) or path.name in IGNORED:
            continue
        if path.is_file() and (match := MOODLE_FILE.match(path.name)):
            flat.setdefault(("moodle", match["id"]), []).append((match, path))
        elif path.is_file() and (match := CANVAS.match(path.name)):
            flat.setdefault(("canvas", match["id"]), []).append((match, path))
        elif path.is_dir() and (match := MOODLE.match(path.name)):
            if match["plugin"] == "file":
                entries.append(Entry(f"{slug(match['name']) or 'learner'}_{match['id']}", path, "folder",
                                     name=match["name"], lms_id=match["id"], lms="moodle"))
        else:
            kind = "folder" if path.is_dir() else "zip" if path.suffix.lower() == ".zip" else "file"
            stem = path.name[:-4] if kind == "zip" else path.name
            late = LATE.match(stem)
            name = late["name"] if late else stem
            entries.append(Entry(learner_id(name), path, kind, name=name, lms_id="", late=bool(late)))
    for (lms, user_id), files in sorted(flat.items()):
        entries.extend(_flat_learners(root, lms, user_id, files))
    return _unique_keys(_flag_shared_ids(entries))


def _flat_learners(root: Path, lms: str, user_id: str, files: list[tuple[re.Match, Path]]) -> list[Entry]:
    """The learner(s) of one user id among flat files (Canvas, or Moodle without folders); several
    names under one id each get the problem. Canvas's ``-N`` copies: the highest is graded."""
    by_name: dict[str, list[tuple[re.Match, Path]]] = {}
    for match, path in files:
        by_name.setdefault(match["name"], []).append((match, path))
    learners = []
    for name, own in sorted(by_name.items()):
        chosen: dict[str, tuple[int, Path]] = {}
        notes = []
        for match, path in own:
            original = match["file"]
            copy = CANVAS_COPY.match(original) if lms == "canvas" else None
            target, number = (copy["stem"] + copy["suffix"], int(copy["copy"])) if copy else (original, 0)
            previous = chosen.get(target)
            if previous is None or number > previous[0]:
                if previous is not None:
                    notes.append(f"{previous[1].name} is an older copy of {target}: graded {path.name}")
                chosen[target] = (number, path)
            else:
                notes.append(f"{path.name} is an older copy of {target}: graded {previous[1].name}")
        learners.append(Entry(f"{slug(name) or 'learner'}_{user_id}", root, "files", name=name, lms_id=user_id,
                              late=any(m.groupdict().get("late") for m, _ in own), lms=lms,
                              files=tuple(sorted((t, p) for t, (_, p) in chosen.items())), notes=tuple(notes)))
    return learners


def _flag_shared_ids(entries: list[Entry]) -> list[Entry]:
    """Entries that claim one learner (one LMS id, or one plain name) get a problem naming the others."""
    claims: dict[tuple[str, str], list[Entry]] = {}
    for entry in entries:
        claims.setdefault((entry.lms, entry.lms_id or entry.display_name), []).append(entry)
    flagged = []
    for entry in entries:
        rivals = claims[(entry.lms, entry.lms_id or entry.display_name)]
        if len(rivals) > 1:
            names = ", ".join(sorted(e.source for e in rivals))
            what = f"{entry.lms} id {entry.lms_id}" if entry.lms_id else f"name {entry.display_name!r}"
            entry = replace(entry, problem=f"{len(rivals)} submissions claim the {what} ({names}): "
                                           "keep one, or rename the others, and grade again")
        flagged.append(entry)
    return flagged


def _unique_keys(entries: list[Entry]) -> list[Entry]:
    """Sorted by key; a key taken twice gets ``-2``, ``-3``... in order of the source names."""
    seen: dict[str, int] = {}
    unique = []
    for entry in sorted(entries, key=lambda e: (e.learner.lower(), e.source)):
        count = seen.get(entry.learner.lower(), 0) + 1
        seen[entry.learner.lower()] = count
        unique.append(entry if count == 1 else replace(entry, learner=f"{entry.learner}-{count}"))
    return sorted(unique, key=lambda e: e.learner)


# ----------------------------------------------------------------------------- hashes
def _digest_files(root: Path, digest) -> None:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if "__pycache__" in relative.parts:
            continue
        digest.update(str(relative).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())


def entry_hash(entry: Entry) -> str:
    """A hash of the entry's content (file names and bytes; a zip's bytes) and of any problem found."""
    digest = hashlib.sha256(f"{entry.kind}\0{entry.problem}".encode())
    if entry.kind == "files":
        for target, path in entry.files:
            digest.update(target.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    elif entry.path.is_dir():
        _digest_files(entry.path, digest)
    elif entry.path.is_file():
        digest.update(entry.path.read_bytes())
    return digest.hexdigest()


# modules that only present or export grades: a change to them re-renders reports, never regrades a class
PRESENTATION = frozenset({"__main__.py", "cli.py", "class_report.py", "exports.py", "gradescope.py", "release.py",
                          "report.py", "roster.py"})


def kit_hash(exercise: str, questions: tuple[str, ...] = (), device: str = "cpu") -> str:
    """A hash of what decides a grade besides the submission: engine, suites, reference, options."""
    digest = hashlib.sha256(f"{exercise}|{','.join(questions)}|{device}".encode())
    for folder in (KIT_ROOT / "grader", SUITES / exercise, KIT_ROOT / "reference"):
        for path in sorted(folder.glob("*.py")):
            if folder == KIT_ROOT / "grader" and path.name in PRESENTATION:
                continue
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- unpacking
def _answer_files(folder: Path) -> list[Path]:
    """The ``q*.py`` and ``q*.ipynb`` files of ``folder`` itself (answers as modules or notebooks)."""
    return sorted([*folder.glob("q*.py"), *folder.glob("q*.ipynb")])


def _answer_folder(root: Path) -> Path | None:
    """The shallowest folder under ``root`` holding ``q*.py`` or ``q*.ipynb`` files (``__MACOSX``, hidden
    ones and ``.ipynb_checkpoints`` skipped)."""
    candidates = [
        p.parent for p in [*root.rglob("q*.py"), *root.rglob("q*.ipynb")]
        if not any(part.startswith((".", "__")) for part in p.relative_to(root).parts)
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda p: (len(p.relative_to(root).parts), str(p)))


def _describe_contents(root: Path) -> str:
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    if not names:
        return "it is empty"
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"it holds {shown}"


def _unzip(archive: Path, target: Path, *, max_members: int = MAX_MEMBERS, max_bytes: int = MAX_UNPACKED_BYTES) -> None:
    """Unpack ``archive`` into ``target``: no absolute paths, no ``..``, no symlinks, bounded size."""
    try:
        with zipfile.ZipFile(archive) as handle:
            members = handle.infolist()
            if len(members) > max_members:
                raise MalformedSubmission(f"{archive.name} holds {len(members)} files (at most {max_members})")
            if sum(m.file_size for m in members) > max_bytes:
                raise MalformedSubmission(f"{archive.name} unpacks to more than {max_bytes >> 20} MiB")
            for member in members:
                name = Path(member.filename)
                if member.is_dir() or member.filename.endswith("/"):
                    continue
                if name.is_absolute() or ".." in name.parts or (member.external_attr >> 28) == 0o12:
                    continue  # a path outside the target, or a symlink: never written
                destination = target / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                with handle.open(member) as source, open(destination, "wb") as sink:
                    shutil.copyfileobj(source, sink)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, RuntimeError,
            ValueError) as error:
        if isinstance(error, MalformedSubmission):
            raise
        raise MalformedSubmission(f"{archive.name} is not a readable zip archive ({error})") from None


def _stage(entry: Entry, scratch: Path) -> Path:
    """Where the entry's files can be read: the folder itself, or ``scratch`` with them copied or unpacked."""
    if entry.kind == "folder" and (_answer_folder(entry.path) or not list(entry.path.glob("*.zip"))):
        return entry.path
    scratch.mkdir(parents=True, exist_ok=True)
    if entry.kind == "zip":
        _unzip(entry.path, scratch)
        return scratch
    sources = entry.files if entry.kind == "files" else [(p.name, p) for p in sorted(entry.path.iterdir())
                                                          if p.is_file()]
    for target, path in sources:  # a Moodle folder or Canvas upload holding a zip: unpack it beside the rest
        if path.suffix.lower() == ".zip":
            _unzip(path, scratch / Path(target).stem)
        else:
            shutil.copyfile(path, scratch / target)
    return scratch


def materialize(entry: Entry, scratch: Path) -> Path:
    """The folder with the entry's ``q*.py`` (or ``q*.ipynb``) files, copying or unpacking into ``scratch`` first.

    Raises:
        MalformedSubmission: nothing gradable in the entry; the message says why.
    """
    if entry.problem:
        raise MalformedSubmission(entry.problem)
    if entry.kind == "file":
        raise MalformedSubmission(
            f"{entry.path.name} is neither a folder nor a .zip archive: hand in a folder (or a zip) "
            "holding your q*_*.py files (or q*_*.ipynb notebooks)"
        )
    source = _stage(entry, scratch)
    folder = _answer_folder(source)
    if folder is None:
        raise MalformedSubmission(f"no q*_*.py answer files found in {entry.source} (nor q*_*.ipynb notebooks): "
                                  f"{_describe_contents(source)}")
    problems = []
    for path in sorted(folder.glob("q*.py")):
        try:
            compile(path.read_bytes(), path.name, "exec")
        except (SyntaxError, ValueError) as error:
            problems.append(f"{path.name}: {type(error).__name__}: {error}")
    if problems and len(problems) == len(_answer_files(folder)):  # notebooks are read when graded
        raise MalformedSubmission("none of the answer files is valid Python: " + "; ".join(problems[:3]))
    return folder


@dataclass
class Plan:
    """What will be graded for one entry: ``questions`` maps a question id to the file graded for it."""

    questions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def plan_files(entry: Entry, folder: Path, modules: dict[str, str]) -> Plan:
    """Which answer files of ``folder`` (from :func:`materialize`) map to which question.

    ``modules`` maps a question id to its module (``q1`` → ``q1_positional_encoding``).
    A question answered in both a module and a notebook maps to the file
    ``grader.notebooks.choose`` grades, and the other is noted. A ``q*.py`` or
    ``q*.ipynb`` file (or, for Canvas, any uploaded file) that is no question's
    module is noted, as are the entry's own notes (older copies).
    """
    from grader.notebooks import choose

    chosen = choose(folder)
    graded = {choice.graded.name for choice in chosen.values()}
    by_module = {module: qid for qid, module in modules.items()}
    result = Plan(notes=list(entry.notes))
    origin = {target: path.name for target, path in entry.files}
    unmatched = [path.name for target, path in entry.files  # Canvas: every upload should be an answer
                 if Path(target).stem not in by_module and path.suffix.lower() != ".zip"]
    for path in sorted([*folder.glob("*.py"), *folder.glob("*.ipynb")]):
        qid = by_module.get(path.stem)
        if qid is not None and path.name in graded:
            result.questions[qid] = origin.get(path.name, path.name)
        elif qid is not None:
            result.notes.append(f"{origin.get(path.name, path.name)} not graded: the {qid} answer graded is "
                                f"{origin.get(chosen[qid].graded.name, chosen[qid].graded.name)}")
        elif path.name.startswith("q") and path.name not in origin:
            unmatched.append(path.name)
    example = next(iter(modules.values()), "q1_topic")
    result.notes += [f"{name} matches no question (answer files are named like {example}.py)" for name in unmatched]
    return result
