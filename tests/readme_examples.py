"""README's example runs: found, re-run, and (with ``--write``) written back from the real output.

An example is a fenced ``console`` block in README.md whose first line is ``$ grade ...``;
the rest of the block is what that command printed, run from the kit's root with
``COLUMNS=100``. ``tests/test_readme.py`` re-runs each one and checks its closing line;
``python tests/readme_examples.py --write`` regenerates every block from a real run.
Timings (``(4.0 s)``) vary between runs and are compared as ``(… s)``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"```console\n\$ (?P<command>grade [^\n]*)\n(?P<output>.*?)```", re.S)
TIMING = re.compile(r"\(\d+(\.\d+)? s\)")


@dataclass(frozen=True)
class Example:
    """One example: the command as README shows it (after ``$ ``) and the output README shows."""

    command: str
    output: str

    @property
    def closing_line(self) -> str:
        return closing_line(self.output)


def closing_line(output: str) -> str:
    """The last non-blank line of ``output``, its timing replaced by ``(… s)``."""
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    return TIMING.sub("(… s)", lines[-1]) if lines else ""


def examples(text: str | None = None) -> list[Example]:
    """The example blocks of README (or of ``text``), in order."""
    text = README.read_text() if text is None else text
    return [Example(m["command"], m["output"]) for m in BLOCK.finditer(text)]


def run(command: str) -> str:
    """Run a README command from the kit's root with the current interpreter's ``grade``; stdout and stderr."""
    words = shlex.split(command.split("  #")[0])
    assert words[0] == "grade", command
    environment = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    environment.pop("PYTEST_CURRENT_TEST", None)
    done = subprocess.run([sys.executable, "-m", "grader", *words[1:]], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=600)
    return "\n".join(line.rstrip() for line in (done.stdout + done.stderr).rstrip().splitlines()) + "\n"


def write() -> None:
    """Re-run every example and write its real output into README."""
    def replace(match: re.Match) -> str:
        return f"```console\n$ {match['command']}\n{run(match['command'])}```"

    README.write_text(BLOCK.sub(replace, README.read_text()))


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/readme_examples.py --write")
    write()
