"""Finding the learners' submissions in a batch folder, unpacking them, hashing them.

A batch folder holds one entry per learner, named by the learner's id:

- a folder (``alice/q1_positional_encoding.py``, or nested: ``alice/ex4/q1_*.py``),
- a ``.zip`` archive (``bob.zip``, any nesting inside),
- the nbgrader layout ``submitted/<learner>/<set>/``.

Nothing here imports torch or runs learner code: entries are only listed, hashed
and unpacked (safely: no paths outside the target, bounded size). An entry that
cannot be graded (an empty folder, a broken zip, a file that is neither) is still
listed, with the reason, so that it gets a result of 0 points that says why.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from grader.exercises import KIT_ROOT, SUITES

MAX_UNPACKED_BYTES = 50 * 2**20  # a zip that unpacks to more than this is refused (a zip bomb)
MAX_MEMBERS = 2000
_LEARNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$")


class MalformedSubmission(ValueError):
    """An entry that cannot be graded; the message is the learner-facing reason."""


@dataclass(frozen=True)
class Entry:
    """One learner's entry: ``learner`` id, ``path`` (folder or zip), ``kind`` (``folder``/``zip``/``file``)."""

    learner: str
    path: Path
    kind: str


def learner_id(name: str) -> str:
    """A file-system-safe learner id from an entry's name (``bob.zip`` → ``bob``)."""
    stem = name[:-4] if name.lower().endswith(".zip") else name
    if _LEARNER.match(stem):
        return stem
    safe = re.sub(r"[^A-Za-z0-9_.@+-]", "_", stem).lstrip("._-") or "learner"
    return f"{safe[:100]}-{hashlib.sha256(stem.encode()).hexdigest()[:8]}"


def discover(root: Path, exercise: str) -> list[Entry]:
    """The entries of the batch folder ``root``, sorted by learner id.

    The nbgrader layout is recognised by a ``submitted/`` folder: each
    ``submitted/<learner>/<exercise>/`` (or ``submitted/<learner>/`` when that
    learner has no such folder) is an entry.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    nbgrader = root / "submitted"
    entries: dict[str, Entry] = {}
    if nbgrader.is_dir():
        for learner in sorted(nbgrader.iterdir()):
            if learner.name.startswith("."):
                continue
            folder = learner / exercise if (learner / exercise).is_dir() else learner
            entries[learner_id(learner.name)] = Entry(learner_id(learner.name), folder,
                                                      "folder" if folder.is_dir() else "file")
        return sorted(entries.values(), key=lambda e: e.learner)
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or path.name.startswith("_"):
            continue
        kind = "folder" if path.is_dir() else "zip" if path.suffix.lower() == ".zip" else "file"
        learner = learner_id(path.name)
        if learner in entries:  # alice/ and alice.zip: keep the folder, note the clash in its id
            learner = f"{learner}-{kind}"
        entries[learner] = Entry(learner, path, kind)
    return sorted(entries.values(), key=lambda e: e.learner)


def _digest_files(root: Path, digest) -> None:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if "__pycache__" in relative.parts:
            continue
        digest.update(str(relative).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())


def entry_hash(entry: Entry) -> str:
    """A hash of the entry's content (file names and bytes; a zip's bytes)."""
    digest = hashlib.sha256(entry.kind.encode())
    if entry.path.is_dir():
        _digest_files(entry.path, digest)
    elif entry.path.is_file():
        digest.update(entry.path.read_bytes())
    return digest.hexdigest()


def kit_hash(exercise: str, questions: tuple[str, ...] = (), device: str = "cpu") -> str:
    """A hash of what decides a grade besides the submission: engine, suites, reference, options."""
    digest = hashlib.sha256(f"{exercise}|{','.join(questions)}|{device}".encode())
    for folder in (KIT_ROOT / "grader", SUITES / exercise, KIT_ROOT / "reference"):
        for path in sorted(folder.glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _answer_folder(root: Path) -> Path | None:
    """The shallowest folder under ``root`` holding ``q*.py`` files (``__MACOSX`` and hidden ones skipped)."""
    candidates = [
        p.parent for p in root.rglob("q*.py")
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


def _unzip(archive: Path, target: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as handle:
            members = handle.infolist()
            if len(members) > MAX_MEMBERS:
                raise MalformedSubmission(f"{archive.name} holds {len(members)} files (at most {MAX_MEMBERS})")
            if sum(m.file_size for m in members) > MAX_UNPACKED_BYTES:
                raise MalformedSubmission(f"{archive.name} unpacks to more than {MAX_UNPACKED_BYTES >> 20} MiB")
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
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, RuntimeError) as error:
        raise MalformedSubmission(f"{archive.name} is not a readable zip archive ({error})") from None


def materialize(entry: Entry, scratch: Path) -> Path:
    """The folder with the entry's ``q*.py`` files, unpacking a zip into ``scratch`` first.

    Raises:
        MalformedSubmission: nothing gradable in the entry; the message says why.
    """
    if entry.kind == "file":
        raise MalformedSubmission(
            f"{entry.path.name} is neither a folder nor a .zip archive: hand in a folder (or a zip) "
            "holding your q*_*.py files"
        )
    source = entry.path
    if entry.kind == "zip":
        scratch.mkdir(parents=True, exist_ok=True)
        _unzip(entry.path, scratch)
        source = scratch
    folder = _answer_folder(source)
    if folder is None:
        raise MalformedSubmission(
            f"no q*_*.py answer files found in {entry.path.name}: {_describe_contents(source)}"
        )
    problems = []
    for path in sorted(folder.glob("q*.py")):
        try:
            compile(path.read_bytes(), path.name, "exec")
        except (SyntaxError, ValueError) as error:
            problems.append(f"{path.name}: {type(error).__name__}: {error}")
    if problems and len(problems) == len(list(folder.glob("q*.py"))):
        raise MalformedSubmission("none of the answer files is valid Python: " + "; ".join(problems[:3]))
    return folder
