"""The learner stubs are exactly the model answers with the solution regions stripped."""

from __future__ import annotations

import ast

import nbformat
import pytest

from conftest import EXERCISES, SOLUTIONS
from grader.notebooks import convert
from grader.stubs import strip_solution, stub_notebook

FILES = sorted(p.name for p in SOLUTIONS.glob("q*.py"))


@pytest.mark.parametrize("name", FILES)
def test_stub_is_generated_from_solution(name):
    expected = strip_solution((SOLUTIONS / name).read_text())
    assert (EXERCISES / name).read_text() == expected, f"run `python -m grader.stubs ex4` to regenerate {name}"


@pytest.mark.parametrize("name", FILES)
def test_stub_keeps_every_public_name_and_docstring(name):
    def public(source: str) -> dict[str, str | None]:
        """Module-level functions and classes and their methods (not helpers nested in answers)."""
        names = {}
        for node in ast.parse(source).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                names[node.name] = ast.get_docstring(node)
                for method in getattr(node, "body", []) if isinstance(node, ast.ClassDef) else []:
                    if isinstance(method, ast.FunctionDef) and not method.name.startswith("_"):
                        names[f"{node.name}.{method.name}"] = ast.get_docstring(method) or "(method)"
        return names

    solution, stub = public((SOLUTIONS / name).read_text()), public((EXERCISES / name).read_text())
    assert stub == solution
    assert all(stub[name] for name in stub if "." not in name), "every public name carries its specification"


def test_strip_solution_replaces_function_bodies_and_drops_module_regions():
    source = (
        "import math\n# BEGIN SOLUTION\nHELPER = 1\n# END SOLUTION\n\n"
        "class A:\n    def f(self):\n        \"\"\"Doc.\"\"\"\n        # BEGIN SOLUTION\n        return 1\n        # END SOLUTION\n"
    )
    stub = strip_solution(source)
    assert "HELPER" not in stub and "return 1" not in stub
    assert '        raise NotImplementedError("A.f is not implemented yet")\n' in stub


@pytest.mark.parametrize("broken", ["# BEGIN SOLUTION\n", "# END SOLUTION\n", "# BEGIN SOLUTION\n# BEGIN SOLUTION\n"])
def test_strip_solution_rejects_unbalanced_markers(broken):
    with pytest.raises(ValueError):
        strip_solution(broken)


@pytest.mark.parametrize("name", FILES)
def test_stub_notebook_is_generated_from_the_stub(name):
    stub = (EXERCISES / name).read_text()
    path = EXERCISES / "notebooks" / name.replace(".py", ".ipynb")
    assert path.read_text() == stub_notebook(stub, path.stem), f"run `python -m grader.stubs ex4` ({path.name})"


@pytest.mark.parametrize("name", FILES)
def test_stub_notebook_grades_as_the_stub(name):
    """The grader builds from the notebook the stub's own definitions: same names, same code."""
    stub = (EXERCISES / name).read_text()
    module = convert(EXERCISES / "notebooks" / name.replace(".py", ".ipynb"))

    def definitions(source: str) -> list[str]:
        return [ast.unparse(node) for node in ast.parse(source).body
                if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign))]

    assert definitions(module.source) == definitions(stub)
    # the stubs do no top-level work, except q6's one-thread setting (left out of a notebook, with a note)
    assert len(module.notes) == (name == "q6_tests.py")


def test_stub_notebook_cells_follow_the_module():
    """Markdown from the docstring, one cell of imports, one cell per top-level definition."""
    notebook = nbformat.reads(stub_notebook('"""Doc."""\n\nimport math\nX = 1\n\n\ndef f():\n    pass\n\n\n'
                                            '@dataclass\nclass A:\n    pass\n', "q9_x"), as_version=4)
    assert [(c.cell_type, c.source) for c in notebook.cells] == [
        ("markdown", "Doc."), ("code", "import math\nX = 1"), ("code", "def f():\n    pass"),
        ("code", "@dataclass\nclass A:\n    pass")]
