"""
The compose demo's Grafana dashboards (C{docker/grafana/dashboards/}):
they are well-formed, every query is PromQL that a real Prometheus parses,
and every metric they query is one that is really there: sealgw's own
from the C{/metrics} of a gateway started from the demo's configuration,
the generator's from what C{python -m sealgw.generator} really pushes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tests.e2e_support import (
    TEST_TIMEOUT,
    http_client,
    prometheus_query,
    run_gateway,
    start_gateway,
    start_prometheus,
)
from tests.subprocesses import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKER = os.path.join(ROOT, "docker")
DASHBOARDS = os.path.join(DOCKER, "grafana", "dashboards")
DATASOURCES = os.path.join(DOCKER, "grafana", "provisioning", "datasources", "sealgw.yaml")
SEALGW_DASHBOARD = os.path.join(DASHBOARDS, "sealgw.json")
GENERATOR_DASHBOARD = os.path.join(DASHBOARDS, "generator.json")


def dashboard(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    assert isinstance(doc, dict)
    return doc


def panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in doc.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def expressions(doc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """
    Every PromQL expression of a dashboard, with the panel's title: its
    panels' queries and its query variables'.
    """
    for panel in panels(doc):
        for target in panel.get("targets", []):
            if "expr" in target:
                yield panel.get("title", "?"), target["expr"]
    for variable in doc.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            inner = re.fullmatch(r"label_values\((.+),\s*\w+\)", text)
            yield f"variable {variable['name']}", inner.group(1) if inner else text


#: Grafana's variables, as a Prometheus query sees them.
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$job": ".+",
}


def as_promql(expr: str) -> str:
    for name, value in SUBSTITUTIONS.items():
        expr = expr.replace(name, value)
    if "$" in expr:
        raise AssertionError(f"a Grafana variable the test does not know: {expr}")
    return expr


#: Words of PromQL that are not metric names.
KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
    # aggregation operators (with a by/without clause they need no parenthesis next)
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
}


def metric_names(expr: str) -> set[str]:
    """
    The metric names a PromQL expression selects: what is left once string
    literals, label matchers, ranges, grouping clauses, functions and
    keywords are taken out.
    """
    text = as_promql(expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\b\d[\w.]*", " ", text)  # numbers and durations (5m, 1e3)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        after = text[match.end() :].lstrip()
        if after.startswith("("):
            continue  # a function
        if word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def exposed_names(text: str) -> set[str]:
    """
    Every series name a Prometheus text exposition offers, including those
    of metrics that have no sample yet (a labelled counter nobody has
    incremented), from their type.
    """
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
        "stateset": ("",),
        "gauge": ("",),
        "unknown": ("",),
    }
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


class ExtractionTests(SynchronousTestCase):
    """
    The name extraction the checks below rest on.
    """

    def test_names(self) -> None:
        self.assertEqual(
            metric_names(
                'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{job=~"$job", '
                'x="by(y)"}[$__rate_interval]))) / on (route) group_left sum(b_total) > bool 0'
            ),
            {"a_bucket", "b_total"},
        )
        self.assertEqual(metric_names("time() - max(current_time) / 1000"), {"current_time"})
        self.assertEqual(metric_names("sum without (instance) (up offset 5m)"), {"up"})

    def test_exposed(self) -> None:
        text = (
            "# HELP c_total a counter\n# TYPE c_total counter\n"
            "# HELP h a histogram\n# TYPE h histogram\n"
            "# HELP g a gauge\n# TYPE g gauge\ng 1\n"
        )
        self.assertEqual(
            exposed_names(text),
            {"c_total", "c_created", "h_bucket", "h_count", "h_sum", "h_created", "g"},
        )


def datasources() -> list[dict[str, Any]]:
    with open(DATASOURCES, encoding="utf-8") as f:
        found = yaml.safe_load(f)["datasources"]
    assert isinstance(found, list)
    return found


class DashboardShapeTests(SynchronousTestCase):
    def test_well_formed(self) -> None:
        """
        Each dashboard has a unique uid; its panels fit Grafana's 24
        columns without overlapping, have unique ids, and query through the
        datasource variable; that variable picks among provisioned
        Prometheus datasources and defaults to one of them.
        """
        uids = set()
        sources = {s["uid"]: s for s in datasources() if s["type"] == "prometheus"}
        for path in (SEALGW_DASHBOARD, GENERATOR_DASHBOARD):
            doc = dashboard(path)
            name = os.path.basename(path)
            self.assertNotIn(doc["uid"], uids)
            uids.add(doc["uid"])
            variables = {v["name"]: v for v in doc["templating"]["list"]}
            chooser = variables["datasource"]
            self.assertEqual((chooser["type"], chooser["query"]), ("datasource", "prometheus"))
            self.assertIn(chooser["current"]["value"], sources, name)
            choices = [s for s in sources.values() if re.fullmatch(chooser["regex"], s["name"])]
            self.assertTrue(choices, f"{name}: the regex {chooser['regex']} picks nothing")
            cells: set[tuple[int, int]] = set()
            ids = set()
            for panel in panels(doc):
                grid = panel["gridPos"]
                self.assertLessEqual(grid["x"] + grid["w"], 24, f"{name}: {panel['title']}")
                for x in range(grid["x"], grid["x"] + grid["w"]):
                    for y in range(grid["y"], grid["y"] + grid["h"]):
                        self.assertNotIn((x, y), cells, f"{name}: {panel['title']} overlaps")
                        cells.add((x, y))
                self.assertNotIn(panel["id"], ids)
                ids.add(panel["id"])
                if panel["type"] == "row":
                    continue
                self.assertEqual(panel["datasource"]["uid"], "${datasource}", panel["title"])
                refs = [t["refId"] for t in panel["targets"]]
                self.assertEqual(len(refs), len(set(refs)))
                self.assertTrue(refs, f"{name}: {panel['title']} queries nothing")

    def test_generator_dashboard_shows_one_team(self) -> None:
        """
        The generator's dashboard offers the teams' datasources only (the
        platform tenant has no generator), so that switching between them
        shows each team's own data.
        """
        chooser = dashboard(GENERATOR_DASHBOARD)["templating"]["list"][0]
        names = [s["name"] for s in datasources() if re.fullmatch(chooser["regex"], s["name"])]
        self.assertEqual(sorted(names), ["Metrics (team-a)", "Metrics (team-b)"])


class PromQLTests(TestCase):
    timeout = TEST_TIMEOUT

    async def test_queries_parse(self) -> None:
        """
        A real Prometheus accepts every query of both dashboards (a parse
        error is a 400); one that does not parse is reported.
        """
        prometheus = await start_prometheus(self, {"scrape_configs": []})
        http = http_client(self)
        problems = []
        queries = [
            (os.path.basename(path), title, expr)
            for path in (SEALGW_DASHBOARD, GENERATOR_DASHBOARD)
            for title, expr in expressions(dashboard(path))
        ]
        queries.append(("this test", "broken on purpose", "sum by (x (rate(y[1m]))"))
        for name, title, expr in queries:
            try:
                await prometheus_query(http, prometheus, as_promql(expr))
            except AssertionError as e:
                problems.append(f"{name}: {title}: {e}")
        self.assertEqual(len(problems), 1, "\n".join(problems))
        self.assertIn("broken on purpose", problems[0])


def demo_config(test: TestCase) -> str:
    """
    docker/sealgw/sealgw.yaml and its token file copied aside, listening
    on a free loopback port (with /metrics) instead of the container's.
    """
    directory = os.path.abspath(test.mktemp())
    shutil.copytree(os.path.join(DOCKER, "sealgw"), directory)
    path = os.path.join(directory, "sealgw.yaml")
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    config["listeners"] = [{"endpoint": "tcp:0:interface=127.0.0.1", "ops": True}]
    config.pop("admin", None)
    config["drain_grace"] = "1s"
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    return path


class SealgwMetricsTests(TestCase):
    timeout = TEST_TIMEOUT

    async def test_dashboard_metrics_are_exposed(self) -> None:
        """
        Every metric the sealgw dashboard queries is on the /metrics of a
        gateway started from the demo's configuration.
        """
        gateway = run_gateway(self, demo_config(self))
        http = http_client(self)
        response = await http.get(gateway.url + "/metrics", timeout=10)
        self.assertEqual(response.code, 200)
        exposed = exposed_names(await response.text())
        self.assertIn("sealgw_http_requests_total", exposed)
        wanted: dict[str, list[str]] = {}
        for title, expr in expressions(dashboard(SEALGW_DASHBOARD)):
            for name in metric_names(expr):
                wanted.setdefault(name, []).append(title)
        missing = {name: titles for name, titles in wanted.items() if name not in exposed}
        self.assertEqual(missing, {})
        # The check can fail: a name sealgw does not have is caught.
        self.assertNotIn("sealgw_http_requests_totl", exposed)


GENERATOR_TOKEN = "generator-test-token-0123456789"


class GeneratorMetricsTests(TestCase):
    timeout = TEST_TIMEOUT

    async def pushed_names(self, push_format: str) -> set[str]:
        """
        The series names one push of the generator (C{--count 1}) delivers
        in C{push_format}, read back from a file upstream.
        """
        signal = {"seal": "seal", "remote-write": "remote_write"}[push_format]
        gateway = await start_gateway(
            self,
            {
                "upstreams": {"files": {"type": "file", "directory": "data"}},
                "push": {signal: {"upstream": "files"}},
            },
            tokens=[{"name": "generator", "token": GENERATOR_TOKEN, "tenants": ["team-a"]}],
        )
        token_file = os.path.join(gateway.directory, "token")
        with open(token_file, "w", encoding="utf-8") as f:
            f.write(GENERATOR_TOKEN)
        command = [
            sys.executable,
            "-m",
            "sealgw.generator",
            "--url",
            gateway.url,
            "--token-file",
            token_file,
            "--format",
            push_format,
            "--count",
            "1",
            "--interval",
            "0.2",
        ]
        result = await deferToThread(
            subprocess.run, command, capture_output=True, text=True, timeout=60, env=child_env()
        )
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        names = set()
        with open(os.path.join(gateway.directory, "data", signal, "team-a.jsonl")) as f:
            for line in f:
                names.add(json.loads(line)["record"]["labels"]["__name__"])
        return names

    async def test_dashboard_metrics_are_pushed(self) -> None:
        """
        Every metric the generator's dashboard queries is one the generator
        pushes, in seal-proxy's format (team-a in the demo) and in remote
        write (team-b) alike.
        """
        try:
            import sealgw.generator  # noqa: F401
        except ImportError:
            raise SkipTest("sealgw.generator is not there yet (issue 13)") from None
        pushed = await self.pushed_names("seal") & await self.pushed_names("remote-write")
        self.assertIn("current_time", pushed)
        wanted: dict[str, list[str]] = {}
        for title, expr in expressions(dashboard(GENERATOR_DASHBOARD)):
            for name in metric_names(expr):
                wanted.setdefault(name, []).append(title)
        missing = {name: titles for name, titles in wanted.items() if name not in pushed}
        self.assertEqual(missing, {})
