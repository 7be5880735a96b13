"""The README's Python examples run as written, without a single warning."""

import re
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_examples():
    assert len(EXAMPLES) >= 3  # the lecture's code, MLP, training on your own data
    assert any("nn_loss_gradient_closure" in e for e in EXAMPLES)
    assert any("MLP(" in e for e in EXAMPLES)


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_readme_example_runs_without_warnings(index, global_seed):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(compile(EXAMPLES[index], f"README.md example {index}", "exec"), {})
