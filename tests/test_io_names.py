"""Names are defined once: no tensor or model name of the deployment is written as a string
literal outside core/qfm_core/io_names.py, in any Python file of the repository."""
import ast
import subprocess
import tokenize

from conftest import REPO
from qfm_core import io_names

NAMES = set(io_names.TENSORS) | set(io_names.MODELS)


def literals(path):
    """(line, value) of every plain string literal in a Python file."""
    with open(path, "rb") as f:
        for tok in tokenize.tokenize(f.readline):
            if tok.type == tokenize.STRING:
                try:
                    value = ast.literal_eval(tok.string)
                except (ValueError, SyntaxError):
                    continue
                if isinstance(value, str):
                    yield tok.start[0], value


def test_no_name_literal_outside_the_names_module():
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert len(files) > 50
    owner = "core/qfm_core/io_names.py"
    hits = [f"{f}:{line}: {value!r}" for f in files if f != owner
            for line, value in literals(REPO / f) if value in NAMES]
    assert not hits, "name literals outside io_names (import them from qfm_core.io_names):\n" + "\n".join(hits)
    assert {v for _, v in literals(REPO / owner)} >= NAMES   # the scan does see literals


def test_the_scan_finds_a_literal(tmp_path):
    """The check can fail: a file that spells a tensor name is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text(f'x = {{"{io_names.CROPS}": 1}}\ny = f"{{x}}"\n')
    assert [v for _, v in literals(bad)] == [io_names.CROPS]


def test_names_are_one_style():
    assert all(n == n.upper() and n.replace("_", "").isalpha() for n in io_names.TENSORS)
    assert len(set(io_names.TENSORS)) == len(io_names.TENSORS)
    assert io_names.MATCH_QUERY == io_names.EMBEDDING   # the match input is the embedding on every target
