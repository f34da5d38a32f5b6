"""The README's examples run, and .ci/run runs the README's test command verbatim."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from natspull.testing import NatsServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
EXAMPLES = [block for block in re.findall(r"```python\n(.*?)```", README, re.S) if "NATS_URL" in block]
SHELL = re.findall(r"```sh\n(.*?)```", README, re.S)


def test_readme_has_the_two_quick_start_commands() -> None:
    assert [cmd.strip() for cmd in SHELL] == [
        "pip install '.[server,progress]' && natspull demo",
        "pip install -e '.[test]' && python -m pytest",
    ]
    assert SHELL[1].strip() in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_readme_example_runs(nats_server: NatsServer, code: str) -> None:
    assert len(EXAMPLES) >= 5
    env = {**os.environ, "NATS_URL": nats_server.url}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
