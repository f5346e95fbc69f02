"""Exercise sets: which exist, their questions, and where their files are.

A set is a folder ``grader/suites/<set>/`` of hidden suites, one ``qN_<topic>.py``
per question; the first line of a suite's docstring is the question's title.
Nothing here is specific to ex4.
"""

from __future__ import annotations

import ast
import json
import tokenize
from dataclasses import dataclass
from pathlib import Path

import click

SUITES = Path(__file__).resolve().parent / "suites"
KIT_ROOT = SUITES.parent.parent
RELEASE_MANIFEST = "_release.json"  # in a learner bundle's suites/<set>/: what was released (grader.release)


@dataclass(frozen=True)
class Question:
    """One question: ``id`` (``q3``), ``module`` (``q3_attention``), ``title`` and its hidden suite file."""

    id: str
    module: str
    title: str
    suite: Path


@dataclass(frozen=True)
class ExerciseSet:
    """An exercise set (``ex4``) and its questions, in order."""

    name: str
    questions: tuple[Question, ...]
    withheld: tuple[str, ...] = ()  # in a learner bundle: the questions the instructor grades (not released)

    def select(self, ids: tuple[str, ...]) -> tuple[Question, ...]:
        """The questions named by ``ids`` (all when empty).

        Raises:
            click.UsageError: an id that is not a question of this set, or one not released to learners.
        """
        withheld = [i for i in ids if i in self.withheld]
        if withheld:
            raise click.UsageError(f"{', '.join(withheld)} {'is' if len(withheld) == 1 else 'are'} not part of this "
                                   "release: your instructor grades it")
        known = {q.id: q for q in self.questions}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise click.UsageError(
                f"{self.name} has no question {', '.join(unknown)}; its questions are {', '.join(known)}"
            )
        return tuple(known[i] for i in ids) if ids else self.questions

    def default_submission(self) -> Path:
        """``exercises/<set>`` under the current folder if it exists, else the kit's own."""
        local = Path.cwd() / "exercises" / self.name
        return local if local.is_dir() else KIT_ROOT / "exercises" / self.name

    def solutions(self) -> Path:
        return KIT_ROOT / "solutions" / self.name


def _order(path: Path) -> int:
    return int(path.stem.split("_", 1)[0][1:])


def _title(path: Path) -> str:
    """The first line of the module docstring of ``path`` (else its stem).

    Reads tokens only up to the docstring: parsing a whole suite (``ast.parse``) costs
    about 20 ms, which ``grade`` would pay for every suite before saying anything.
    """
    with path.open("rb") as stream:
        for token in tokenize.tokenize(stream.readline):
            if token.type in (tokenize.ENCODING, tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE):
                continue
            if token.type == tokenize.STRING:
                lines = str(ast.literal_eval(token.string)).strip().splitlines()
                return lines[0] if lines else path.stem
            break
    return path.stem


def names() -> list[str]:
    """The exercise sets this kit can grade."""
    return sorted(p.name for p in SUITES.iterdir() if p.is_dir() and any(p.glob("q*_*.py")))


def load(name: str) -> ExerciseSet:
    """The exercise set ``name``.

    Raises:
        click.UsageError: no such set (the message lists the known ones).
    """
    folder = SUITES / name
    if not name.isidentifier() or not folder.is_dir():
        raise click.UsageError(f"unknown exercise set '{name}'; known sets: {', '.join(names()) or 'none'}")
    questions = []
    for path in sorted(folder.glob("q*_*.py"), key=_order):
        questions.append(Question(path.stem.split("_", 1)[0], path.stem, _title(path), path))
    manifest = folder / RELEASE_MANIFEST
    withheld = tuple(json.loads(manifest.read_text()).get("withheld", {})) if manifest.is_file() else ()
    return ExerciseSet(name, tuple(questions), withheld)
