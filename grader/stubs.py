"""Generate learner stubs from model answers (one source, no drift).

A solution module marks the code a learner must write with a pair of comment
lines::

    def sinusoidal_table(max_len, d_model, base=10000.0):
        \"\"\"...the full specification...\"\"\"
        # BEGIN SOLUTION
        ...
        # END SOLUTION

Inside a function the region becomes ``raise NotImplementedError(...)`` naming
the function; at module level (no indentation) the region is dropped. Run
``python -m grader.stubs`` to rewrite ``exercises/<set>/`` from
``solutions/<set>/``; ``tests/test_stubs.py`` checks that they agree.

The same stubs are offered as notebooks, ``exercises/<set>/notebooks/qN_<topic>.ipynb``
(:func:`stub_notebook`): the module docstring as a markdown cell, the imports and
constants as one code cell, then one code cell per top-level function or class. A
learner answers in either; ``grader.notebooks`` says which file is graded.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
_DEF = re.compile(r"^(\s*)(?:async\s+)?def\s+(\w+)")
_CLASS = re.compile(r"^(\s*)class\s+(\w+)")


def _owner(lines: list[str], indent: int) -> str:
    """Qualified name of the function enclosing a region at ``indent``."""
    names, level = [], indent
    for line in reversed(lines):
        m = _DEF.match(line) or _CLASS.match(line)
        if m and len(m.group(1)) < level:
            names.append(m.group(2))
            level = len(m.group(1))
            if level == 0:
                break
    return ".".join(reversed(names)) or "this function"


def strip_solution(source: str) -> str:
    """Return ``source`` with every solution region replaced as described above.

    Raises:
        ValueError: unbalanced or nested markers.
    """
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.splitlines(keepends=True), 1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"line {number}: nested {BEGIN}")
            inside = True
            indent = len(line) - len(line.lstrip())
            if indent:
                name = _owner(out, indent)
                out.append(f'{" " * indent}raise NotImplementedError("{name} is not implemented yet")\n')
        elif stripped == END:
            if not inside:
                raise ValueError(f"line {number}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN} is never closed")
    return "".join(out)


def stub_notebook(stub: str, name: str) -> str:
    """The stub module ``stub`` (text) as a notebook (nbformat 4 JSON text), built with jupytext's percent format.

    ``name`` (the module's stem) seeds the cell ids, so the same stub always gives the same file.
    """
    import jupytext
    import nbformat

    lines = stub.splitlines()
    statements = ast.parse(stub).body
    starts = [min([s.lineno] + [d.lineno for d in getattr(s, "decorator_list", [])]) for s in statements]
    cells: list[tuple[str, list[str]]] = []
    for index, (statement, start) in enumerate(zip(statements, starts)):
        chunk = lines[start - 1:(starts[index + 1] - 1 if index + 1 < len(starts) else len(lines))]
        if index == 0 and isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            cells.append(("markdown", [f"# {line}".rstrip() for line in statement.value.value.strip().splitlines()]))
        elif (isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
              or not cells or cells[-1][0] != "code-shared"):
            shared = not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            cells.append(("code-shared" if shared else "code", chunk))
        else:
            cells[-1][1].extend(chunk)
    text = "\n\n".join(("# %% [markdown]" if kind == "markdown" else "# %%") + "\n" + "\n".join(body).strip("\n")
                        for kind, body in cells) + "\n"
    notebook = jupytext.reads(text, fmt="py:percent")
    notebook.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                         "language_info": {"name": "python"}}
    for number, cell in enumerate(notebook.cells, 1):
        cell.id, cell.metadata = f"{name.replace('_', '-')}-{number}", {}
    return nbformat.writes(notebook, version=4) + "\n"


def generate(solutions: Path, exercises: Path) -> list[Path]:
    """Write one stub per ``q*.py`` in ``solutions`` into ``exercises``, and its notebook into
    ``exercises/notebooks/``; return the paths."""
    (exercises / "notebooks").mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(solutions.glob("q*.py")):
        target, notebook = exercises / path.name, exercises / "notebooks" / f"{path.stem}.ipynb"
        stub = strip_solution(path.read_text())
        target.write_text(stub)
        notebook.write_text(stub_notebook(stub, path.stem))
        written += [target, notebook]
    return written


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    for name in sys.argv[1:] or ["ex4"]:
        for path in generate(root / "solutions" / name, root / "exercises" / name):
            print(path.relative_to(root))
