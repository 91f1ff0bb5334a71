"""The README's Python example runs as written (so it cannot rot)."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        namespace = {}
        exec(compile(code, str(README), "exec"), namespace)
    # the example's outputs are what it says they are
    assert namespace["x"].shape == (64, 1000, 9)
    assert namespace["u"].shape == (8, 100, 3, 3) and np.isfinite(namespace["u"]).all()
