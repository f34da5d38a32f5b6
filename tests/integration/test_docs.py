"""The documentation site (mkdocs.yml, docs/): its examples run, its API reference names every
public name, it builds with ``mkdocs build --strict``, and it renders and searches in Chromium.

Every ```python block of docs/**/*.md runs like the README's (tests/integration/test_readme.py):
in a subprocess (as a script, example.py), with NATS_URL set to a fresh server, in a temporary
directory. An HTML comment
on the line before a block changes that:

* ``<!-- not-run: REASON -->``: not run (REASON says why; it must not be empty);
* ``<!-- file: NAME.py -->``: written to NAME.py in the directory of every later block of the
  same page (a module those blocks import, e.g. a worker handler), and compiled, not run;
* ``<!-- run: pytest -->``: written to a test file and run with pytest (the natspull fixtures).
"""

from __future__ import annotations

import ast
import base64
import contextlib
import dataclasses
import functools
import http.server
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import natspull
import natspull.testing
import natspull.trio
from natspull.testing import NatsServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CHROMIUM = "/usr/bin/chromium"
BLOCK_TIMEOUT = 30  # each block is meant to take well under 10 s; this is the hard stop
MARKER = re.compile(r"<!--\s*(not-run|file|run):\s*(.*?)\s*-->")


@dataclasses.dataclass(frozen=True)
class Block:
    page: str  # relative to docs/
    line: int
    code: str
    kind: str  # "run", "pytest", "file" or "not-run"
    arg: str  # the file name or the reason

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def doc_blocks() -> list[Block]:
    blocks = []
    for path in sorted(DOCS.rglob("*.md")):
        text = path.read_text()
        for match in re.finditer(r"^```python\n(.*?)^```$", text, re.S | re.M):
            line = text.count("\n", 0, match.start()) + 1
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = MARKER.fullmatch(before.strip())
            kind, arg = ("run", "") if marker is None else marker.groups()
            if kind == "run" and arg:
                assert arg == "pytest", f"{path}:{line}: unknown marker run: {arg}"
                kind = "pytest"
            blocks.append(Block(str(path.relative_to(DOCS)), line, match.group(1), kind, arg))
    return blocks


BLOCKS = doc_blocks()
RUN = [block for block in BLOCKS if block.kind in ("run", "pytest")]


def test_docs_have_python_blocks_and_every_skip_has_a_reason() -> None:
    assert len(RUN) >= 20, [block.id for block in RUN]
    for block in BLOCKS:
        if block.kind == "not-run":
            assert block.arg, f"{block.id}: a not-run block must say why"
        if block.kind == "file":
            assert re.fullmatch(r"\w+\.py", block.arg), f"{block.id}: file: needs a module name"
        ast.parse(block.code, filename=block.id)  # every block, run or not, is valid Python


@pytest.mark.parametrize("block", RUN, ids=[block.id for block in RUN])
def test_doc_block_runs(nats_server: NatsServer, block: Block, tmp_path: pathlib.Path) -> None:
    for other in BLOCKS:  # the modules written by earlier blocks of the same page
        if other.page == block.page and other.kind == "file" and other.line < block.line:
            (tmp_path / other.arg).write_text(other.code)
    env = {**os.environ, "NATS_URL": nats_server.url, "PYTHONPATH": str(tmp_path)}
    if block.kind == "pytest":
        (tmp_path / "test_block.py").write_text(block.code)
        # -c /dev/null: not the repository's setup.cfg (its -n 4 and strict warnings filters)
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-c",
            os.devnull,
            "-p",
            "no:cacheprovider",
            "test_block.py",
        ]
    else:  # a file, not -c: multiprocessing's spawn imports the main module again
        (tmp_path / "example.py").write_text(block.code)
        cmd = [sys.executable, "example.py"]
    started = time.monotonic()
    result = subprocess.run(
        cmd,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"{block.id}\n{result.stdout}\n{result.stderr}"
    # (a Traceback may be logged on purpose, e.g. by a failing handler; a thread's may not)
    assert "Exception in thread" not in result.stderr, result.stderr
    assert "Exception ignored" not in result.stderr, result.stderr
    assert time.monotonic() - started < BLOCK_TIMEOUT


# ---------------------------------------------------------------- the API reference


def test_api_reference_documents_every_public_name() -> None:
    documented = set()
    for path in (DOCS / "reference").glob("*.md"):
        documented.update(re.findall(r"^::: ([\w.]+)\s*$", path.read_text(), re.M))
    public = {f"natspull.{name}" for name in natspull.__all__}
    public |= {f"natspull.trio.{name}" for name in natspull.trio.__all__}
    public |= {f"natspull.testing.{name}" for name in natspull.testing.__all__}
    assert sorted(public - documented) == []
    assert sorted(documented - public) == []  # nothing private, nothing stale


# ---------------------------------------------------------------- the built site


def mkdocs_command() -> list[str]:
    tools = ("mkdocs", "material", "mkdocstrings_handlers")
    missing = [name for name in tools if not importlib.util.find_spec(name)]
    if missing:
        pytest.skip(f"the docs tools are not installed ({', '.join(missing)}): pip install -e '.[docs]'")
    return [sys.executable, "-m", "mkdocs"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [*mkdocs_command(), "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return site_dir


def test_mkdocs_build_strict(site: pathlib.Path) -> None:
    assert (site / "index.html").is_file()
    assert (site / "search" / "search_index.json").is_file()
    # The old paths of the contributor pages still work (code comments and the README link them).
    for page in ("architecture", "reliability", "observability"):
        assert (site / page / "index.html").is_file(), page
    api = (site / "reference" / "consumers" / "index.html").read_text()
    assert 'id="natspull.Consumer.messages"' in api


@pytest.fixture(scope="module")
def served(site: pathlib.Path) -> Iterator[str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, name="docs-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe:
    JSON messages ending in NUL, written to the browser's fd 3, read from its fd 4)."""

    FLAGS = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--remote-debugging-pipe",
        "--window-size=1280,900",
    ]

    def __init__(self, profile: pathlib.Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        args = " ".join([CHROMIUM, *self.FLAGS, f"--user-data-dir={profile}", "about:blank"])
        self.proc = subprocess.Popen(  # bash: dash takes only one-digit descriptors in redirections
            ["bash", "-c", f"exec {args} 3<&{to_browser_r} 4>&{from_browser_w}"],
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._ids = iter(range(1, 1 << 30))
        self._buffer = b""
        self.events: list[dict[str, Any]] = []
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            self.call("Page.enable", session=True)
            self.call("Runtime.enable", session=True)
        except BaseException:
            self.close()
            raise

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError(f"chromium exited ({self.proc.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(
        self, method: str, *, session: bool = False, timeout: float = 30, **params: Any
    ) -> dict[str, Any]:
        call_id = next(self._ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline)
            if answer.get("id") == call_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer["result"]  # every answer without "error" has one
                return result
            self.events.append(answer)

    def js(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", session=True, expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """Click the first element matching *selector* (a link: the page may navigate at once)."""
        try:
            self.js(f"document.querySelector({json.dumps(selector)}).click()")
        except RuntimeError as exc:
            if "navigated" not in str(exc):
                raise

    def wait_for(self, expression: str, timeout: float = 15) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.js(expression)
            except RuntimeError as exc:  # evaluated while the page navigates: look again
                if "navigated" not in str(exc) and "context" not in str(exc):
                    raise
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expression}")
            time.sleep(0.1)

    def open(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)
        self.wait_for(f"document.readyState === 'complete' && location.href.startsWith({json.dumps(url)})")

    def screenshot(self, path: pathlib.Path) -> bytes:
        data = base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"])
        path.write_bytes(data)
        return data

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("Browser.close", timeout=5)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture
def browser(tmp_path: pathlib.Path) -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing (Debian: apt-get install chromium)")
    chromium = Browser(tmp_path / "profile")
    try:
        yield chromium
    finally:
        chromium.close()


def screenshots(tmp_path: pathlib.Path) -> pathlib.Path:
    """Where screenshots go: $NATSPULL_DOCS_SCREENSHOTS to keep them, else the test's tmp dir."""
    target = pathlib.Path(os.environ.get("NATSPULL_DOCS_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


def test_site_renders_navigates_and_searches_in_chromium(
    served: str, browser: Browser, tmp_path: pathlib.Path
) -> None:
    shots = screenshots(tmp_path)

    # The home page: the title, the navigation, and a link into a guide that works.
    browser.open(served + "/")
    assert "natspull" in browser.js("document.title")
    nav = browser.js("[...document.querySelectorAll('nav.md-nav--primary a.md-nav__link')].map(a => a.href)")
    for page in ("guides/scripts/", "guides/workers/", "reference/consumers/", "architecture/", "changelog/"):
        assert any(href.endswith(page) for href in nav), (page, nav)
    assert len(browser.screenshot(shots / "docs-home.png")) > 20_000
    browser.click('nav.md-nav--primary a.md-nav__link[href$="guides/scripts/"]')
    browser.wait_for("location.pathname.endsWith('/guides/scripts/') && document.readyState === 'complete'")

    # A guide: its heading, highlighted code, the next-page footer.
    assert browser.js("document.querySelector('article h1').textContent").startswith("Scripts and for-loops")
    assert browser.js("document.querySelectorAll('article .highlight pre code').length") >= 2
    assert browser.js("!!document.querySelector('.md-footer__link--next')")
    assert len(browser.screenshot(shots / "docs-guide.png")) > 20_000

    # The API reference: mkdocstrings' objects with their anchors, and a working anchor link.
    browser.open(served + "/reference/consumers/")
    assert browser.js("!!document.getElementById('natspull.Consumer.messages')")
    assert browser.js("document.querySelectorAll('.doc.doc-object').length") > 20
    assert len(browser.screenshot(shots / "docs-api.png")) > 20_000

    # Search runs in the browser (a web worker over search_index.json): type, read the results.
    browser.open(served + "/")
    browser.click('label.md-search__icon, label[for="__search"]')
    browser.wait_for("document.activeElement && document.activeElement.matches('input.md-search__input')")
    browser.call("Input.insertText", session=True, text="priority groups")
    hrefs = browser.wait_for(
        "(() => { const a = [...document.querySelectorAll('.md-search-result__item a')].map(a => a.href);"
        " return a.length ? a : null })()",
        timeout=20,
    )
    assert any("high-availability" in href for href in hrefs), hrefs
    browser.screenshot(shots / "docs-search.png")
    browser.click(".md-search-result__item a")
    browser.wait_for("location.pathname.length > 1 && document.readyState === 'complete'")


def test_ci_installs_chromium() -> None:
    # Without chromium the browser test skips (and says so): .ci/run installs it. (The strict
    # build is test_mkdocs_build_strict, in the suite CI runs.)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "apt-get install -y -q chromium" in ci
    assert shutil.which("bash")
