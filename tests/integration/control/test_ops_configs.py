"""configs/: every metric the alert rules and the Grafana dashboard use is one a node exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.media_helpers import wait_until
from tests.signaling_helpers import media_node

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def referenced_metrics() -> set[str]:
    texts = [(CONFIGS / "alerts.yml").read_text()]
    dash = json.loads((CONFIGS / "grafana" / "telesfu-dashboard.json").read_text())
    texts += [t["expr"] for panel in dash["panels"] for t in panel["targets"]]
    return {m for text in texts for m in re.findall(r"\btelesfu_[a-z0-9_]+", text)}


def family(name: str) -> str:
    for s in SUFFIXES:
        if name.endswith(s):
            return name[: -len(s)]
    return name


@pytest.mark.slow
async def test_alerts_and_dashboard_use_exported_metrics():
    async with media_node() as ln:
        await wait_until(lambda: all(w.last_stats for w in ln.node.media.workers), 10, "worker stats")
        text = (await ln.call("GET", "/metrics", auth=False))[1]
    exported = set(re.findall(r"^# TYPE (telesfu_[a-z0-9_]+) ", text, re.M))
    missing = {m for m in referenced_metrics() if family(m) not in exported and m not in exported}
    assert not missing, f"configs/ refer to metrics /metrics does not export: {sorted(missing)}"
    assert len(referenced_metrics()) > 15


def test_compose_and_scrape_configs_are_consistent():
    compose = (CONFIGS / "docker-compose.yml").read_text()
    for f in re.findall(r"\./([\w/.-]+):", compose):
        assert (CONFIGS / f).exists(), f
    assert "telesfu:8080" in (CONFIGS / "prometheus-compose.yml").read_text()
