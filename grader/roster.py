"""The class list of ``grade batch --roster FILE``: who should have submitted.

A roster is a CSV file with a header row. Column names are matched without
regard to case, spaces or punctuation; the first of each group that is present is used:

==============  ==========================================================================
field           accepted column names
==============  ==========================================================================
name            ``name``, ``student``, ``full name``, ``student name``, ``learner``; or
                ``first name`` + ``last name`` (``surname``)
id              ``id``, ``student id``, ``user id``, ``canvas id``, ``lms id``, ``learner id``,
                ``participant id``, ``identifier``
sis_user_id     ``sis user id``, ``id number``, ``student number``
sis_login_id    ``sis login id``, ``login``, ``username``, ``login id``
email           ``email``, ``email address``, ``e-mail``
section         ``section``, ``group``
==============  ==========================================================================

A row needs a name or an id. Canvas's own gradebook export is a valid roster
(its ``Points Possible`` row is skipped), and so is Moodle's participants export.
A submission matches a roster row by LMS id (or SIS id), then by login or email
(a plain folder named ``alice`` or ``alice@uni.edu``), then by name (accents,
case, punctuation and the order of the parts ignored: Canvas's ``nunezjose``
matches ``José Ñúñez``).
"""

from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from grader.submissions import Entry

COLUMNS = {
    "name": ("name", "student", "fullname", "studentname", "learner"),
    "first": ("firstname", "givenname"),
    "last": ("lastname", "surname", "familyname"),
    "id": ("id", "studentid", "userid", "canvasid", "lmsid", "learnerid", "participantid", "identifier"),
    "sis_user_id": ("sisuserid", "idnumber", "studentnumber"),
    "sis_login_id": ("sisloginid", "login", "username", "loginid"),
    "email": ("email", "emailaddress"),
    "section": ("section", "group"),
}


class RosterError(ValueError):
    """The roster file cannot be used; the message says why and how to fix it."""


@dataclass(frozen=True)
class Person:
    """One row of the roster."""

    name: str
    id: str = ""
    sis_user_id: str = ""
    sis_login_id: str = ""
    email: str = ""
    section: str = ""

    def fields(self) -> dict[str, str]:
        """What the exports add to a learner's row (the name replaces the submission's)."""
        return {"learner": self.name or self.id, "lms_id": self.id, "sis_user_id": self.sis_user_id,
                "sis_login_id": self.sis_login_id, "email": self.email, "section": self.section}


def _column(header: str) -> str:
    return re.sub(r"[^a-z]", "", header.lower())


def _folded(text: str) -> str:
    """``José Ñúñez`` → ``josenunez``: no accents, case, spaces or punctuation."""
    return re.sub(r"[^a-z0-9]", "", unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower())


def _name_keys(name: str) -> set[str]:
    """The folded name in the orders an LMS writes it: ``José Ñúñez``, ``Ñúñez José``, ``Ñúñez, José``."""
    if "," in name:
        last, _, first = name.partition(",")
        name = f"{first} {last}"
    parts = name.split()
    return {key for key in (_folded(name), _folded(" ".join(parts[-1:] + parts[:-1]))) if key}


def read(path: Path) -> list[Person]:
    """The people of the roster CSV at ``path``.

    Raises:
        RosterError: the file cannot be read, has no name or id column, or has no rows.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise RosterError(f"cannot read the roster {path}: {error}") from None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.reader(text.splitlines(), dialect))
    if not rows:
        raise RosterError(f"the roster {path} is empty: give a CSV file with a header row (name, id, email...)")
    header = [_column(h) for h in rows[0]]
    where = {field: next((header.index(c) for c in names if c in header), None) for field, names in COLUMNS.items()}
    if where["name"] is None and where["id"] is None and where["last"] is None:
        raise RosterError(f"the roster {path} has no name or id column (its columns: {', '.join(rows[0])}); "
                          "name one 'name' or 'id'")
    people = []
    for row in rows[1:]:
        value = {field: (row[index].strip() if index is not None and index < len(row) else "")
                 for field, index in where.items()}
        name = value["name"] or " ".join(p for p in (value["first"], value["last"]) if p)
        if "points possible" in name.lower() or not (name or value["id"]):
            continue  # Canvas's second row, or a blank line
        people.append(Person(name, value["id"], value["sis_user_id"], value["sis_login_id"], value["email"],
                             value["section"]))
    if not people:
        raise RosterError(f"the roster {path} lists nobody")
    return people


def match(people: list[Person], entries: list[Entry]) -> tuple[dict[str, Person], list[Person]]:
    """``({entry key: person}, people who submitted nothing)``: see the module docstring for the rules."""
    by_id: dict[str, Person] = {}
    by_login: dict[str, Person] = {}
    by_name: dict[str, Person] = {}
    for person in people:
        for key in (person.id, person.sis_user_id):
            if key:
                by_id.setdefault(key, person)
        for key in (person.sis_login_id, person.email, person.email.partition("@")[0]):
            if key:
                by_login.setdefault(key.lower(), person)
        for key in _name_keys(person.name):
            by_name.setdefault(key, person)
    rules = (lambda e: by_id.get(e.lms_id) if e.lms_id else None,  # strongest rule first
             lambda e: by_login.get(e.display_name.lower()),
             lambda e: next((by_name[k] for k in _name_keys(e.display_name) if k in by_name), None))
    matched: dict[str, Person] = {}
    for rule in rules:  # a person is matched once: by id before login before name
        for entry in entries:
            person = rule(entry) if entry.learner not in matched else None
            if person is not None and person not in matched.values():
                matched[entry.learner] = person
    taken = set(matched.values())
    return matched, [person for person in people if person not in taken]
