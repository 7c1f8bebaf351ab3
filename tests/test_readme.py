"""The README's code that claims to run does run, and its first two lines are the
set-up commands CI uses."""

from __future__ import annotations

import re

from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def test_kernel_library_example_runs():
    block = README.split("<!-- readme-example: kernels -->", 1)[1]
    code = re.search(r"```python\n(.*?)```", block, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})


def test_readme_opens_with_the_two_setup_commands():
    first = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert first == ["pip install -e . && edgeconv demo", "pip install -e '.[test]' && pytest"]
