"""The README's examples (the Linen one and its NNX twin) run as written."""

import pathlib
import re

import pytest

README = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
EXAMPLES = re.findall(r"```python\n(.*?)```", README, re.S)  # runnable examples; fragments are fenced ```py


def test_readme_has_a_linen_example_and_its_nnx_twin():
    assert len(EXAMPLES) == 2 and "flax.linen" in EXAMPLES[0] and "from flax import nnx" in EXAMPLES[1]


@pytest.mark.parametrize("code", EXAMPLES, ids=["linen", "nnx"][: len(EXAMPLES)])
def test_readme_example_runs(code, capsys):
    exec(compile(code, "README.md", "exec"), {})
    assert "multiply-adds done / dense" in capsys.readouterr().out
