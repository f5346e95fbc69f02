"""Answers handed in as notebooks (``qN_<topic>.ipynb``): which file is graded, and what of it.

A question is answered in its module (``q1_positional_encoding.py``) or in a notebook
with the same stem (``q1_positional_encoding.ipynb``). Nothing here runs learner code:
a notebook is read as data (``nbformat``) and turned into a module that the worker
imports like any other answer.

**Which file** (:func:`choose`): the ``.py`` is graded unless it is still the untouched
stub (the same code as the kit's ``exercises/<set>/<name>.py``; comments, blank lines
and docstrings aside); then the notebook is. A notebook alone is graded.

**What of a notebook** (:func:`convert`): the code cells, in order, as "Restart and Run
All" would see them, but only their top-level *definitions*: imports, ``def`` and
``class`` (with decorators), constants, and ``if``/``try`` blocks holding nothing else.
A constant is an assignment to plain names whose right side calls nothing, or, for
UPPER_CASE names, calls only imported code (``EPS = torch.finfo(torch.float32).eps``);
every name it reads must be defined by what is kept above it. Left out, never run,
each with a one-line note to the learner: other top-level code (training loops,
``print(...)``, ``plt.show()``, ``input()``), IPython magics (``%matplotlib``, ``%%timeit``
cells) and shell lines (``!pip install``), and cells tagged ``grader-skip`` or ``skip``.
A cell that is not valid Python is kept as it is, so importing the module fails with a
``SyntaxError`` that names its cell and line, as a ``.py`` with that error would.

**Where errors point**: the module's lines map back to ``(cell, line)`` (cells counted
from 1 from the top, markdown cells included). :func:`install` writes the map beside the
module in the worker's folder (``.notebooks.json``); the worker's error descriptions
(:func:`format_frames`, :func:`syntax_error_message`) then say ``q1_positional_encoding.ipynb,
cell 4, line 3``. The worker imports this module: it needs only the standard library
there (``nbformat`` is imported when a notebook is read).

How otter-grader and nbgrader do it, and what their users met: see README "Notebooks".
"""

from __future__ import annotations

import ast
import builtins
import json
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path

KIT_ROOT = Path(__file__).resolve().parent.parent
SKIP_TAGS = ("grader-skip", "skip")
MAP_FILE = ".notebooks.json"  # worker folder: {module file: {"notebook": name, "lines": [[cell, line] | None]}}
MAX_NOTEBOOK_BYTES = 20 * 2**20
_ANSWER = re.compile(r"^(q\d+)(?:_[^.]*)?\.(py|ipynb)$")
_MAGIC = re.compile(r"^(\s*)(?:[%!]|[\w.]+(?:\s*,\s*[\w.]+)*\s*=\s*[%!]"  # %time x, !pip .., files = !ls
                    r"|\?{1,2}[\w.]+\s*$|[\w.]+\?{1,2}\s*$)")  # help: ?obj, obj??
_INTERACTIVE = {"input", "print", "breakpoint", "help", "exit", "quit", "open", "exec", "eval", "compile",
                "__import__"}  # builtins a constant may not call
_UNPARSABLE = (SyntaxError, ValueError, RecursionError, MemoryError)  # null bytes, absurd nesting
_BLOCKS = {ast.For: "a for loop", ast.AsyncFor: "a for loop", ast.While: "a while loop", ast.With: "a with block",
           ast.AsyncWith: "a with block", ast.If: "an if block", ast.Try: "a try block"}


class NotebookError(ValueError):
    """The file is not a readable notebook; the message is the learner-facing line, naming the file."""


@dataclass
class Converted:
    """A notebook turned into a module.

    Attributes:
        source: the module's text.
        lines: for each module line (index 0 is line 1), the ``(cell, line)`` it came from,
            or ``None`` for a line the grader wrote.
        notes: one line per left-out part, in the learner's terms (``cell 7: top-level code left out ...``).
    """

    source: str
    lines: list[tuple[int, int] | None]
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- reading
def read_cells(path: Path) -> list[tuple[str, str, tuple[str, ...]]]:
    """``(cell_type, source, tags)`` for every cell of the notebook at ``path``.

    Raises:
        NotebookError: not JSON, not a valid nbformat notebook, or too large.
    """
    import nbformat

    path = Path(path)
    try:
        if path.stat().st_size > MAX_NOTEBOOK_BYTES:
            raise NotebookError(f"{path.name} is larger than {MAX_NOTEBOOK_BYTES >> 20} MiB (clear its outputs)")
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        cells = [(str(cell.cell_type), str(cell.source),
                  tuple(str(t) for t in cell.get("metadata", {}).get("tags", ()))) for cell in notebook.cells]
    except NotebookError:
        raise
    except Exception as error:  # noqa: BLE001 - any parse failure of a learner's file is the learner's
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise NotebookError(f"{path.name} is not a valid notebook ({reason}): save it again from Jupyter") from None
    return cells


# ----------------------------------------------------------------------------- one cell
def _without_magics(source: str) -> tuple[str, list[str]]:
    """The cell with IPython magic and shell lines replaced by ``pass`` (line numbers kept); the magics seen."""
    try:
        ast.parse(source)
        return source, []  # valid Python: nothing to replace (a "%" line inside a string stays)
    except _UNPARSABLE:
        pass
    lines, seen = source.split("\n"), []
    for number, line in enumerate(lines):
        match = _MAGIC.match(line)
        if match:
            seen.append(line.strip().split()[0] if line.strip()[:1] in "%!" else line.strip()[:30])
            lines[number] = f"{match.group(1)}pass"
    return "\n".join(lines), seen


def _names_read(node: ast.AST) -> tuple[set[str], list[ast.Call]]:
    """Names an expression reads and the calls it makes when evaluated (lambda bodies are not evaluated)."""
    reads, stores, calls = set(), set(), []

    def walk(item: ast.AST) -> None:
        if isinstance(item, ast.Lambda):
            for default in item.args.defaults + [d for d in item.args.kw_defaults if d is not None]:
                walk(default)
            return
        if isinstance(item, ast.Name):
            (stores if isinstance(item.ctx, ast.Store) else reads).add(item.id)
        if isinstance(item, ast.Call):
            calls.append(item)
        for child in ast.iter_child_nodes(item):
            walk(child)

    walk(node)
    return reads - stores, calls


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


class _Scope:
    """Names bound by the statements kept so far (``*`` imports bind everything)."""

    def __init__(self) -> None:
        self.bound = set(dir(builtins)) | {"__name__", "__file__", "__doc__"}
        self.imported = set(dir(builtins)) - _INTERACTIVE
        self.star = False

    def knows(self, names: set[str]) -> bool:
        return self.star or names <= self.bound

    def bind(self, statement: ast.stmt) -> None:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            for alias in statement.names:
                if alias.name == "*":
                    self.star = True
                name = alias.asname or alias.name.split(".")[0]
                self.bound.add(name)
                self.imported.add(name)
        elif isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.bound.add(statement.name)
        else:
            for node in ast.walk(statement):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    self.bound.add(node.id)


def _left_out(statement: ast.stmt, scope: _Scope) -> str | None:
    """Why a top-level statement is left out (``a for loop``), or ``None`` when it is kept (``scope`` updated)."""
    if isinstance(statement, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        scope.bind(statement)
        return None
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
        return None  # a docstring or a bare string: nothing runs
    if isinstance(statement, (ast.Assign, ast.AnnAssign)):
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        names = [n for t in targets for n in (t.elts if isinstance(t, ast.Tuple) else [t])]
        text = ast.unparse(targets[0])[:30]
        if not all(isinstance(n, ast.Name) for n in names):
            return f"an assignment to {text}"
        if statement.value is not None:
            reads, calls = _names_read(statement.value)
            if not scope.knows(reads):
                return f"an assignment {text} = ... that reads {', '.join(sorted(reads - scope.bound))}"
            upper = all(n.id.isupper() for n in names)
            if calls and not (upper and all(_root(c.func) in scope.imported for c in calls)):
                return f"an assignment {text} = ... that runs code"
            scope.bind(statement)  # ``x: int`` alone binds nothing
        return None
    if isinstance(statement, (ast.If, ast.Try)):
        if isinstance(statement, ast.If):
            reads, calls = _names_read(statement.test)
            if not scope.knows(reads) or any(_root(c.func) not in scope.imported for c in calls):
                return _BLOCKS[ast.If]
        inner = statement.body + statement.orelse + [s for h in getattr(statement, "handlers", []) for s in h.body]
        inner += getattr(statement, "finalbody", [])
        trial = _Scope()
        trial.bound, trial.imported, trial.star = set(scope.bound), set(scope.imported), scope.star
        if all(isinstance(s, ast.Pass) or _left_out(s, trial) is None for s in inner):
            scope.bound, scope.imported, scope.star = trial.bound, trial.imported, trial.star
            return None
        return _BLOCKS[type(statement)]
    if isinstance(statement, ast.Expr):
        value = statement.value
        return f"a call {ast.unparse(value.func)[:30]}(...)" if isinstance(value, ast.Call) else "an expression"
    return _BLOCKS.get(type(statement), f"a {type(statement).__name__.lower()} statement")


def _first_line(statement: ast.stmt) -> int:
    return min([statement.lineno] + [d.lineno for d in getattr(statement, "decorator_list", [])])


# ----------------------------------------------------------------------------- the module
def convert(path: Path) -> Converted:
    """The module graded for the notebook at ``path``, with its line map and notes (see the module docstring).

    Raises:
        NotebookError: the file is not a readable notebook.
    """
    header = f"# built by the grader from {Path(path).name!r}: its definitions, imports and constants\n"
    future: list[tuple[str, tuple[int, int]]] = []  # ``from __future__`` lines go first
    body: list[tuple[str, tuple[int, int] | None]] = []
    notes: list[str] = []
    scope = _Scope()
    for number, (kind, source, tags) in enumerate(read_cells(path), 1):
        if kind != "code" or not source.strip():
            continue
        skip = next((t for t in tags if t in SKIP_TAGS), None)
        if skip:
            notes.append(f"cell {number}: left out (tagged {skip})")
            continue
        if source.lstrip().startswith("%%"):
            magic = source.lstrip().split()[0]
            notes.append(f"cell {number}: left out ({magic} cell magic: the grader imports Python only)")
            continue
        code, magics = _without_magics(source)
        if magics:
            shown = ", ".join(dict.fromkeys(magics))
            notes.append(f"cell {number}: IPython magic and shell lines left out ({shown[:60]})")
        lines = code.split("\n")
        try:
            statements = ast.parse(code).body
        except _UNPARSABLE:  # kept as it is: importing fails at this cell and line
            body += [(line + "\n", (number, i)) for i, line in enumerate(lines, 1)]
            continue
        dropped: list[tuple[int, str]] = []
        kept: list[ast.stmt] = []
        for statement in statements:
            why = _left_out(statement, scope)
            if why is None:
                kept.append(statement)
            elif not isinstance(statement, ast.Pass):
                dropped.append((statement.lineno, why))
        taken = {line for s in statements if s not in kept and not isinstance(s, ast.Pass)
                 for line in range(_first_line(s), s.end_lineno + 1)}
        for statement in kept:
            span = range(_first_line(statement), statement.end_lineno + 1)
            if taken & set(span):  # shares a line with left-out code (``import x; train()``)
                dropped.append((statement.lineno, "a statement on a line with left-out code"))
                continue
            target = future if isinstance(statement, ast.ImportFrom) and statement.module == "__future__" else body
            target += [(lines[i - 1] + "\n", (number, i)) for i in span]
            body.append(("\n", None))
        if dropped:
            line, why = min(dropped)
            more = f", and {len(dropped) - 1} more" if len(dropped) > 1 else ""
            notes.append(f"cell {number}: top-level code left out ({why} at line {line}{more}); "
                         "the grader imports only definitions, imports and constants")
    entries = [(header, None)] + future + body
    return Converted("".join(text for text, _ in entries), [where for _, where in entries], notes)


# ----------------------------------------------------------------------------- which file
@dataclass
class Choice:
    """The answer files of one question: the one graded, and the other one present (if any)."""

    graded: Path
    other: Path | None = None

    @property
    def is_notebook(self) -> bool:
        return self.graded.suffix == ".ipynb"


def _code_only(source: str) -> str:
    """The module's code without docstrings, comments or formatting (for comparing with the stub)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def is_untouched_stub(path: Path) -> bool:
    """Whether the module at ``path`` is one of the kit's shipped stubs (``exercises/*/<same name>``), unchanged."""
    try:
        mine = _code_only(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return False
    for stub in sorted(KIT_ROOT.glob(f"exercises/*/{Path(path).name}")):
        try:
            if _code_only(stub.read_text(encoding="utf-8")) == mine:
                return True
        except (OSError, SyntaxError, ValueError):
            continue
    return False


def choose(folder: Path) -> dict[str, Choice]:
    """The file graded for each question answered in ``folder`` (``{"q1": Choice(...)}``), by the rule above.

    Only the folder's own files count (``q1_*.py``, ``q1.py``, ``q1_*.ipynb``; the first by name of each kind).
    """
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(Path(folder).iterdir()):
        match = _ANSWER.match(path.name)
        if match and path.is_file():
            found.setdefault(match.group(1), {}).setdefault(match.group(2), path)
    choices = {}
    for qid, files in sorted(found.items(), key=lambda item: int(item[0][1:])):
        module, notebook = files.get("py"), files.get("ipynb")
        if notebook is not None and (module is None or is_untouched_stub(module)):
            choices[qid] = Choice(notebook, module)
        else:
            choices[qid] = Choice(module, notebook)
    return choices


def has_answers(folder: Path) -> bool:
    """Whether ``folder`` holds any ``q*.py`` or ``q*.ipynb`` answer file."""
    return bool(choose(folder))


def _converted(path: Path) -> Converted | str:
    """:func:`convert`, or the one-line reason why the notebook cannot be graded (never a kit traceback)."""
    try:
        return convert(path)
    except NotebookError as error:
        return str(error)
    except Exception as error:  # noqa: BLE001 - a learner's file the converter chokes on: said in their terms
        return f"the grader could not read {path.name} ({type(error).__name__}: {error})"[:300]


def install(source: Path, target: Path) -> None:
    """Write the module of every notebook graded in ``source`` into the worker's folder ``target``.

    The ``.py`` files are already in ``target`` (``grader.judge``); a graded notebook's
    module replaces the stub beside it, and its line map goes to ``target/.notebooks.json``.
    A notebook that cannot be read becomes a module whose import raises ``ImportError``
    with the one-line reason, so that question scores 0 and the others are graded.
    """
    maps = {}
    for choice in choose(source).values():
        if not choice.is_notebook:
            continue
        if choice.other is not None:
            (target / choice.other.name).unlink(missing_ok=True)
        module = target / f"{choice.graded.stem}.py"
        converted = _converted(choice.graded)
        if isinstance(converted, str):
            converted = Converted(f"raise ImportError({converted!r})\n", [None])
        module.write_text(converted.source, encoding="utf-8")
        maps[module.name] = {"notebook": choice.graded.name, "lines": converted.lines}
    if maps:
        (target / MAP_FILE).write_text(json.dumps(maps), encoding="utf-8")


def describe(folder: Path) -> dict[str, dict]:
    """Per question answered in ``folder``: ``{"graded_file": name, "file_notes": [...]}`` for the result document.

    ``file_notes`` (only when there is something to say) names the other file present and
    why it was not graded, and what of a graded notebook was left out (an unreadable
    notebook is said by its question's failures, not here).
    """
    described = {}
    for qid, choice in choose(folder).items():
        notes = []
        if choice.other is not None:
            notes.append(f"{choice.other.name} not graded: " + (
                f"{choice.graded.name} is the untouched stub" if choice.is_notebook
                else f"{choice.graded.name} is graded when it is not the untouched stub"))
        if choice.is_notebook:
            converted = _converted(choice.graded)  # an unreadable one: its tests' messages say so, once
            notes += [] if isinstance(converted, str) else converted.notes
        described[qid] = {"graded_file": choice.graded.name, **({"file_notes": notes} if notes else {})}
    return described


# ----------------------------------------------------------------------------- worker side: errors
def line_maps(workdir: Path) -> dict[str, dict]:
    """The line maps written by :func:`install` (``{}`` when none, or when the file is not as written)."""
    try:
        maps = json.loads((Path(workdir) / MAP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(maps, dict) or not all(isinstance(m, dict) and isinstance(m.get("lines"), list)
                                             for m in maps.values()):
        return {}
    return maps


def _where(maps: dict[str, dict], filename: str, lineno: int | None) -> str | None:
    """``q1_x.ipynb, cell 4, line 3`` for a line of a notebook's module; ``""`` for a grader-written line."""
    entry = maps.get(Path(filename or "").name)
    if entry is None or lineno is None:
        return None
    lines = entry["lines"]
    place = lines[lineno - 1] if 0 < lineno <= len(lines) else None
    if not (isinstance(place, list) and len(place) == 2):
        return ""
    return f"{entry['notebook']}, cell {place[0]}, line {place[1]}"


def format_frames(frames: list[traceback.FrameSummary], maps: dict[str, dict]) -> str:
    """A traceback of learner frames, with lines of notebook modules named by notebook, cell and line."""
    out = []
    for frame in frames:
        where = _where(maps, frame.filename, frame.lineno)
        if where is None:
            out.extend(traceback.format_list([frame]))
        elif where:  # Python's own lines (code, carets) under the notebook's place
            code = traceback.format_list([frame])[0].partition("\n")[2]
            out.append(f"  {where}, in {frame.name}\n{code}")
    return "".join(out)


def syntax_error_message(error: SyntaxError, maps: dict[str, dict]) -> str | None:
    """``invalid syntax (q1_x.ipynb, cell 4, line 3)`` for a syntax error in a notebook's module, else ``None``."""
    where = _where(maps, error.filename, error.lineno)
    return f"{error.msg} ({where})" if where else None
