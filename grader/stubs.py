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
"""

from __future__ import annotations

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


def generate(solutions: Path, exercises: Path) -> list[Path]:
    """Write one stub per ``q*.py`` in ``solutions`` into ``exercises``; return the paths."""
    exercises.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(solutions.glob("q*.py")):
        target = exercises / path.name
        target.write_text(strip_solution(path.read_text()))
        written.append(target)
    return written


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    for name in sys.argv[1:] or ["ex4"]:
        for path in generate(root / "solutions" / name, root / "exercises" / name):
            print(path.relative_to(root))
