"""Answers handed in as notebooks (grader/notebooks.py): which file is graded, what of it, and where errors point.

Fast tests check the rules on small notebooks and grade q1 a few times; the slow test
grades every buggy edit of the kit's corpora twice, as a module and as a notebook
holding the same code, and wants the same outcome, points and message per test.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import shutil
import traceback
from pathlib import Path

import click
import nbformat
import pytest

from conftest import EXERCISES, SOLUTIONS, grade, make_submission, messages, question
from grader import exercises, grading, notebooks, submissions

Q1 = "q1_positional_encoding"
MAGIC_CELLS = ["%matplotlib inline", "!pip install x\n%timeit sinusoidal_table(10, 8)"]
WORK_CELL = "for epoch in range(3):\n    print(epoch, sinusoidal_table(4, 2).sum())\nplt.show()"


def cells_of(source: str) -> list[str]:
    """One code cell per top-level statement of ``source`` (decorators included); the docstring left out."""
    lines = source.splitlines()
    body = ast.parse(source).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return ["\n".join(lines[min([s.lineno] + [d.lineno for d in getattr(s, "decorator_list", [])]) - 1:s.end_lineno])
            for s in body]


def write_notebook(path: Path, code_cells: list[str], tags: dict[int, list[str]] | None = None) -> Path:
    """A notebook: a markdown cell, then ``code_cells`` (cell ``i`` of the file is ``code_cells[i - 2]``)."""
    cells = [nbformat.v4.new_markdown_cell("# My answer")]
    for index, source in enumerate(code_cells):
        cell = nbformat.v4.new_code_cell(source)
        if tags and index in tags:
            cell.metadata["tags"] = tags[index]
        cells.append(cell)
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


def as_notebook(module: Path) -> Path:
    """Replace ``module`` by a notebook of the same code, with magics and top-level work the grader must drop."""
    cells = MAGIC_CELLS[:1] + cells_of(module.read_text()) + [WORK_CELL.replace("sinusoidal_table(4, 2).sum()", "1")]
    write_notebook(module.with_suffix(".ipynb"), cells)
    module.unlink()
    return module.with_suffix(".ipynb")


# ----------------------------------------------------------------------------- the module built from a notebook
def test_only_definitions_imports_and_constants_are_kept(tmp_path):
    path = write_notebook(tmp_path / "q9_x.ipynb", [
        "import math",
        "from __future__ import annotations",  # must come first in the module: moved there
        "SIZES = (2, 4)\nEPS = math.sqrt(1e-10)\nname = 'pe'\nmodel = math.floor(2.5)\nresult = EPS * 2\nlate = model\n"
        "ASKED = input()",
        "def f(x):\n    return x * EPS",
        "try:\n    import numpy\nexcept ImportError:\n    numpy = None",
        "if __name__ == '__main__':\n    f(1)",
        "x = input()\nwhile True:\n    pass",
        "import os; os.system('true')",
    ])
    built = notebooks.convert(path)
    namespace: dict = {}
    exec(compile(built.source, "q9_x.py", "exec"), namespace)  # nothing left that runs work
    assert {"SIZES", "EPS", "name", "result", "f", "numpy"} <= namespace.keys()
    assert not {"model", "late", "ASKED", "x", "os"} & namespace.keys()
    assert built.source.splitlines()[1] == "from __future__ import annotations"
    rest = "; the grader imports only definitions, imports and constants"
    assert built.notes == [
        "cell 4: top-level code left out (an assignment model = ... that runs code at line 4, and 2 more)" + rest,
        "cell 7: top-level code left out (an if block at line 1)" + rest,
        "cell 8: top-level code left out (an assignment x = ... that runs code at line 1, and 1 more)" + rest,
        "cell 9: top-level code left out (a call os.system(...) at line 1, and 1 more)" + rest,
    ]


def test_a_constant_reading_a_name_never_assigned_is_left_out(tmp_path):
    """``width: int`` assigns nothing: ``area = width * 2`` would fail the import, so it is left out."""
    built = notebooks.convert(write_notebook(tmp_path / "q9_x.ipynb", ["width: int\narea = width * 2\nDEPTH = 3"]))
    namespace: dict = {}
    exec(compile(built.source, "q9_x.py", "exec"), namespace)
    assert "area" not in namespace and namespace["DEPTH"] == 3
    assert built.notes[0].startswith("cell 2: top-level code left out (an assignment area = ... that reads width")


def test_magics_shell_lines_and_skipped_cells_are_left_out_with_a_note(tmp_path):
    path = write_notebook(tmp_path / "q9_x.ipynb", [
        "!pip install x\nimport math\n%timeit math.sqrt(2)\nmath.sqrt?\nfiles = !ls",
        "%%timeit\nwhile True: pass",
        "raise SystemExit('this cell must not run')",
        "def f():\n    return 1",
    ], tags={2: ["grader-skip"]})
    built = notebooks.convert(path)
    assert built.notes == ["cell 2: IPython magic and shell lines left out (!pip, %timeit, math.sqrt?, files = !ls)",
                           "cell 3: left out (%%timeit cell magic: the grader imports Python only)",
                           "cell 4: left out (tagged grader-skip)"]
    assert "import math" in built.source and "def f" in built.source
    assert "pip" not in built.source and "SystemExit" not in built.source and "while" not in built.source


def test_lines_map_back_to_cell_and_line(tmp_path):
    path = write_notebook(tmp_path / "q9_x.ipynb", ["import math", "x = 1\n\ndef f():\n    y = 2\n    return 1 / 0"])
    built = notebooks.convert(path)
    line = built.source.splitlines().index("    return 1 / 0") + 1
    assert built.lines[line - 1] == (3, 5)
    assert built.lines[0] is None  # the grader's own header line


def test_a_notebook_that_is_not_json_is_one_line_naming_it(tmp_path):
    (tmp_path / "q1_x.ipynb").write_text('{"cells": [')
    (tmp_path / "q2_x.ipynb").write_text(json.dumps({"cells": "no", "nbformat": 4}))
    for name in ("q1_x.ipynb", "q2_x.ipynb"):
        with pytest.raises(notebooks.NotebookError) as error:
            notebooks.convert(tmp_path / name)
        assert str(error.value).startswith(f"{name} is not a valid notebook (") and "\n" not in str(error.value)


def test_a_corrupt_line_map_in_the_worker_folder_is_ignored(tmp_path):
    """Learner code can write its folder: the map is read defensively (no kit traceback)."""
    frame = traceback.FrameSummary("q1_x.py", 1, "f", line="return 1")
    plain = "".join(traceback.format_list([frame]))
    for text, shown in (("[1, 2", plain), (json.dumps({"q1_x.py": {"lines": "no"}}), plain),
                        (json.dumps({"q1_x.py": {"notebook": "n", "lines": [7]}}), "")):  # not a cell: not shown
        (tmp_path / notebooks.MAP_FILE).write_text(text)
        assert notebooks.format_frames([frame], notebooks.line_maps(tmp_path)) == shown


# ----------------------------------------------------------------------------- which file is graded
def test_the_py_is_graded_unless_it_is_the_untouched_stub(tmp_path):
    stub = tmp_path / "stub"
    stub.mkdir()
    shutil.copy(EXERCISES / f"{Q1}.py", stub)
    (stub / f"{Q1}.py").write_text("# my answers below\n" + (stub / f"{Q1}.py").read_text())  # still the stub
    write_notebook(stub / f"{Q1}.ipynb", cells_of((SOLUTIONS / f"{Q1}.py").read_text()))
    assert notebooks.choose(stub)["q1"].graded.name == f"{Q1}.ipynb"
    answered = tmp_path / "answered"
    answered.mkdir()
    shutil.copy(SOLUTIONS / f"{Q1}.py", answered)
    shutil.copy(EXERCISES / "notebooks" / f"{Q1}.ipynb", answered)
    assert notebooks.choose(answered)["q1"].graded.name == f"{Q1}.py"
    half = (EXERCISES / f"{Q1}.py").read_text().replace(
        'raise NotImplementedError("sinusoidal_table is not implemented yet")', "return None")
    (answered / f"{Q1}.py").write_text(half)  # one function answered: no longer the stub
    assert notebooks.choose(answered)["q1"].graded.name == f"{Q1}.py"
    assert notebooks.describe(answered)["q1"]["file_notes"] == [
        f"{Q1}.ipynb not graded: {Q1}.py is graded when it is not the untouched stub"]


def test_a_folder_of_only_notebooks_is_a_submission(tmp_path):
    write_notebook(tmp_path / f"{Q1}.ipynb", ["import math"])
    assert grading.check_submission(tmp_path) == tmp_path.resolve()
    (tmp_path / f"{Q1}.ipynb").unlink()
    with pytest.raises(click.UsageError, match="holds no q"):
        grading.check_submission(tmp_path)


def test_batch_plans_the_notebook_and_notes_the_stub(tmp_path):
    folder = tmp_path / "ann"
    folder.mkdir()
    shutil.copy(EXERCISES / f"{Q1}.py", folder)
    shutil.copy(EXERCISES / "notebooks" / f"{Q1}.ipynb", folder)
    (folder / f"{Q1}.py").write_text((SOLUTIONS / f"{Q1}.py").read_text())
    entry = submissions.Entry("ann", folder, "folder")
    assert submissions.materialize(entry, tmp_path / "scratch") == folder
    plan = submissions.plan_files(entry, folder, {"q1": Q1})
    assert plan.questions == {"q1": f"{Q1}.py"}
    assert plan.notes == [f"{Q1}.ipynb not graded: the q1 answer graded is {Q1}.py"]
    only = tmp_path / "bob"
    only.mkdir()
    shutil.copy(EXERCISES / "notebooks" / f"{Q1}.ipynb", only)
    assert submissions.plan_files(submissions.Entry("bob", only, "folder"), only, {"q1": Q1}).questions == {
        "q1": f"{Q1}.ipynb"}


# ----------------------------------------------------------------------------- graded end to end (q1)
def test_notebook_answer_grades_and_top_level_work_never_runs(tmp_path):
    """Magics, shell lines, a skipped cell, an endless loop and input() in the notebook: full marks, with notes."""
    cells = MAGIC_CELLS + cells_of((SOLUTIONS / f"{Q1}.py").read_text()) + [
        "raise RuntimeError('a skipped cell ran')", "while True:\n    pass", "name = input('your name? ')"]
    write_notebook(tmp_path / f"{Q1}.ipynb", cells, tags={len(cells) - 3: ["skip"]})
    shutil.copy(EXERCISES / f"{Q1}.py", tmp_path)  # the untouched stub beside it: the notebook is graded
    block = question(grade(tmp_path, "q1"), "q1")
    assert block["score"] == block["max_score"] == 10, messages(block)
    assert block["graded_file"] == f"{Q1}.ipynb"
    notes = "\n".join(block["file_notes"])
    assert f"{Q1}.py not graded: {Q1}.ipynb is the untouched stub" in notes
    assert "cell 2: IPython magic" in notes
    assert "cell 3: IPython magic and shell lines left out (!pip, %timeit)" in notes
    count = len(cells) + 1
    assert f"cell {count - 2}: left out (tagged skip)" in notes
    assert f"cell {count - 1}: top-level code left out (a while loop at line 1)" in notes
    assert f"cell {count}: top-level code left out (an assignment name = ... that runs code at line 1)" in notes


def test_errors_in_notebook_code_name_the_cell_and_line(tmp_path):
    cells = cells_of((SOLUTIONS / f"{Q1}.py").read_text())
    table = next(i for i, c in enumerate(cells) if c.startswith("def sinusoidal_table"))
    # a runtime error on line 3 of the sinusoidal_table cell (cell table + 2: the markdown cell comes first)
    source = cells[table].splitlines()
    body = next(i for i, line in enumerate(source) if line.strip().startswith('"""') and i > 0 and
                line.strip().endswith('"""') and len(line.strip()) == 3)
    cells[table] = "\n".join(source[:2] + ["    pass"] + source[2:body + 1] + ["    raise KeyError('oops')"]
                             + source[body + 1:])
    broken = tmp_path / "runtime"
    broken.mkdir()
    write_notebook(broken / f"{Q1}.ipynb", cells)
    where = f"{Q1}.ipynb, cell {table + 2}, line {body + 3}, in sinusoidal_table"
    assert where in messages(question(grade(broken, "q1"), "q1"))
    # a syntax error on line 3 of cell 4
    cells = cells_of((SOLUTIONS / f"{Q1}.py").read_text())
    cells.insert(2, "def helper():\n    x = 1\n    return x +\n")
    syntax = tmp_path / "syntax"
    syntax.mkdir()
    write_notebook(syntax / f"{Q1}.ipynb", cells)
    block = question(grade(syntax, "q1"), "q1")
    assert block["score"] == 0
    assert all(f"({Q1}.ipynb, cell 4, line 3)" in t["message"] for t in block["tests"]), messages(block)


def test_an_invalid_notebook_scores_zero_with_one_line_and_the_rest_is_graded(tmp_path):
    folder = make_submission(tmp_path)
    (folder / f"{Q1}.py").unlink()
    (folder / f"{Q1}.ipynb").write_text('{"cells": [')
    result = grade(folder, "q1", "q4")
    q1, q4 = question(result, "q1"), question(result, "q4")
    assert q1["score"] == 0 and q4["score"] == q4["max_score"] > 0
    assert {t["message"].split(": ", 1)[1] for t in q1["tests"]} == {
        f"{Q1}.ipynb is not a valid notebook (Notebook does not appear to be JSON: '{{\"cells\": ['): "
        "save it again from Jupyter"}, messages(q1)
    assert all("\n" not in t["message"] for t in q1["tests"])
    assert q1["graded_file"] == f"{Q1}.ipynb" and "file_notes" not in q1  # said once, by the failures


# ----------------------------------------------------------------------------- the corpora, module vs notebook
_LOCATION = re.compile(r'File "(q\d+_\w+)\.py", line \d+|(q\d+_\w+)\.ipynb, cell \d+, line \d+|'
                       r"\((q\d+_\w+)\.(?:py|ipynb), (?:cell \d+, )?line \d+\)")


def _same_place(message: str) -> str:
    """The message with file locations (module line or notebook cell and line) replaced by the module's name."""
    return _LOCATION.sub(lambda m: f"<{next(g for g in m.groups() if g)}>", message)


def test_the_corpus_notebooks_hold_code_a_careless_converter_would_run(tmp_path):
    """The twin notebooks of the slow test are honest: running all their cells fails; the built module does not."""
    shutil.copy(SOLUTIONS / f"{Q1}.py", tmp_path)
    path = as_notebook(tmp_path / f"{Q1}.py")
    code = [cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
    with pytest.raises(SyntaxError):  # the magic line
        compile("\n".join(code), "all_cells", "exec")
    with pytest.raises(NameError, match="plt"):  # the top-level work: a loop, print, plt.show()
        exec(compile("\n".join(code[1:]), "all_cells", "exec"), {})
    exec(compile(notebooks.convert(path).source, f"{Q1}.py", "exec"), {})


def test_every_corpus_edit_builds_back_its_module(tmp_path):
    """Fast and static: the notebook of each buggy edit gives the module's own top-level statements back
    (bare expressions aside: q6's ``torch.set_num_threads(1)`` is top-level work, left out with a note)."""

    def statements(source: str) -> list[str]:
        return [ast.dump(node) for node in ast.parse(source).body if not isinstance(node, ast.Expr)]

    count = 0
    for block in exercises.load("ex4").questions:
        for edit in [None, *importlib.import_module(f"test_suite_{block.id}").BUGGY]:
            text = (SOLUTIONS / f"{block.module}.py").read_text()
            for old, new in edit.edits if edit and edit.file == f"{block.module}.py" else ():
                text = text.replace(old, new)
            module = tmp_path / f"{block.module}.py"
            module.write_text(text)
            assert statements(notebooks.convert(as_notebook(module)).source) == statements(text), (block.id, edit)
            count += 1
    assert count > 100


@pytest.mark.slow
@pytest.mark.parametrize("qid", [q.id for q in exercises.load("ex4").questions])
def test_notebook_and_module_agree_on_every_buggy_edit(qid, tmp_path, record_property):
    """Each buggy edit of the corpus graded as a module and as a notebook of the same code.

    An edit that adds top-level work (q6's ``os._exit(0)`` at import) is the one place they differ by
    design: the notebook's copy is left out, with a note, and never runs.
    """
    module = exercises.load("ex4").select((qid,))[0].module
    edits = importlib.import_module(f"test_suite_{qid}").BUGGY

    def top_level_work(folder: Path) -> list[str]:
        return [ast.dump(n) for n in ast.parse((folder / f"{module}.py").read_text()).body
                if isinstance(n, ast.Expr) and not isinstance(n.value, ast.Constant)]

    pairs, different, by_design = 0, [], 0
    for edit in [None, *edits]:
        folder = make_submission(tmp_path / "py", edit)
        twin = tmp_path / "ipynb" / folder.name
        shutil.copytree(folder, twin)
        as_notebook(twin / f"{module}.py")
        mine, theirs = question(grade(folder, qid), qid), question(grade(twin, qid), qid)
        assert theirs["graded_file"] == f"{module}.ipynb"
        if top_level_work(folder) != top_level_work(SOLUTIONS):
            assert any("top-level code left out" in note for note in theirs["file_notes"]), edit
            by_design += 1
            continue
        for a, b in zip(mine["tests"], theirs["tests"], strict=True):
            pairs += 1
            if (a["name"], a["outcome"], a["points"], _same_place(a["message"])) != (
                    b["name"], b["outcome"], b["points"], _same_place(b["message"])):
                different.append((edit.name if edit else "solutions", a["name"], a["message"], b["message"]))
    record_property("edit_test_pairs", pairs)
    record_property("edits_with_top_level_work", by_design)
    assert not different, different[:3]
