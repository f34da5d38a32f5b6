"""docs/deploy.md's manifests agree with the command line: flags, ports, paths, grace, variables."""

from __future__ import annotations

import configparser
import io
import json
import pathlib
import re
import shlex
from contextlib import redirect_stdout
from typing import Any

import pytest
import yaml

from natspull.cli._args import build_parser
from natspull.cli._common import CONNECTION_ENV

NATS_VARIABLES = {variable for variable, _ in CONNECTION_ENV.values()}

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "deploy.md").read_text()
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", DOC, re.S | re.M)


def blocks(kind: str) -> list[str]:
    return [text for lang, text in BLOCKS if lang == kind]


def worker_help() -> str:
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--help"])
    return out.getvalue()


HELP_FLAGS = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", worker_help()))


def worker_args(argv: list[str]) -> tuple[list[str], Any]:
    """The flags of a `natspull worker ...` command line, and what the CLI parser makes of it."""
    start = argv.index("worker")
    rest = argv[start + 1 :]
    flags = [arg for arg in rest if arg.startswith("--")]
    return flags, build_parser().parse_args(["worker", *rest])


def grace(args: Any) -> float:
    return float(args.grace)


def http_port(args: Any) -> int:
    assert args.http, "the worker serves no --http"
    return int(args.http.rpartition(":")[2])


def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for text in blocks("yaml"):
        docs += [doc for doc in yaml.safe_load_all(text) if doc]
    return docs


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in manifests() if doc.get("kind") == kind]


def test_the_doc_has_every_manifest() -> None:
    kinds = {doc["kind"] for doc in manifests()}
    assert {"Deployment", "Secret", "ScaledObject", "PodMonitor"} <= kinds
    assert len(blocks("ini")) == 1 and len(blocks("dockerfile")) == 1
    assert not blocks("python"), "docs/deploy.md has python blocks: run them or mark them not-run"
    for text in blocks("json"):
        json.loads(text)


def test_every_flag_the_doc_uses_exists() -> None:
    assert "--create-consumer" in HELP_FLAGS and "--http" in HELP_FLAGS
    # (the Dockerfile's RUN lines have useradd's and pip's flags: its CMD is checked below)
    text = re.sub(r"^```dockerfile\n.*?^```", "", DOC, flags=re.S | re.M)
    for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", text):
        assert flag in HELP_FLAGS, f"docs/deploy.md uses {flag}, which `natspull worker --help` lacks"


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(blocks("ini")[0])
    service = unit["Service"]
    flags, args = worker_args(shlex.split(service["ExecStart"]))
    assert set(flags) <= HELP_FLAGS
    assert float(service["TimeoutStopSec"]) > grace(args)
    assert service["KillSignal"] == "SIGTERM"
    assert "2" in service["RestartPreventExitStatus"].split()
    env = dict(line.split("=", 1) for line in service["Environment"].splitlines() if line)
    assert env, "no Environment="
    for name in env:
        assert name in NATS_VARIABLES, f"{name} is not read by natspull"


def test_dockerfile() -> None:
    text = blocks("dockerfile")[0]
    entry = json.loads(re.search(r"^ENTRYPOINT (.*)$", text, re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (.*)$", text, re.M).group(1))  # type: ignore[union-attr]
    flags, args = worker_args([*entry, *cmd])
    assert set(flags) <= HELP_FLAGS
    assert f"EXPOSE {http_port(args)}" in text
    assert "STOPSIGNAL SIGTERM" in text


def test_deployment_probes_ports_grace_and_secrets() -> None:
    (deployment,) = of_kind("Deployment")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    flags, args = worker_args([*container["command"], *container["args"]])
    assert set(flags) <= HELP_FLAGS
    port = http_port(args)
    assert pod["spec"]["terminationGracePeriodSeconds"] > grace(args)
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
    assert [p["containerPort"] for p in container["ports"]] == [port]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] == "/metrics"
    for env in container["env"]:
        assert env["name"] in NATS_VARIABLES, f"{env['name']} is not read by natspull"
    # the secret's files are where the flags and variables say
    (secret,) = of_kind("Secret")
    (mount,) = container["volumeMounts"]
    (volume,) = pod["spec"]["volumes"]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"] and mount["name"] == volume["name"]
    files = {f"{mount['mountPath']}/{name}" for name in secret["stringData"]}
    assert args.context in files
    assert {env["value"] for env in container["env"] if env["name"] == "NATS_CREDS"} <= files
    context = json.loads(secret["stringData"][pathlib.Path(args.context).name])
    assert context["creds"] in files


def test_pod_monitor_scrapes_the_metrics_port() -> None:
    (deployment,) = of_kind("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (monitor,) = of_kind("PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in {p["name"] for p in container["ports"]}
    assert endpoint["path"] == "/metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_scaled_object_scales_the_deployment_on_the_lag() -> None:
    (deployment,) = of_kind("Deployment")
    (scaled,) = of_kind("ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert "natspull_consumer_pending_messages" in trigger["metadata"]["query"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    _, args = worker_args([*container["command"], *container["args"]])
    assert f'stream="{args.stream}"' in trigger["metadata"]["query"]
    assert f'consumer="{args.consumer}"' in trigger["metadata"]["query"]
    assert "nats-jetstream" in DOC  # the other way is mentioned


def test_the_metric_names_exist() -> None:
    source = (ROOT / "natspull" / "_workers" / "_metrics.py").read_text()
    for name in set(re.findall(r"natspull_[a-z_]+", DOC)):
        assert f'"{name}"' in source, f"docs/deploy.md names {name}, which /metrics does not serve"
