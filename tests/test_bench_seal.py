"""
bench/seal.py's bodies are what a seal key server sends and convert to
the samples the bench reports; the sealgw configuration bench/processes.py
writes for it loads; post.lua's headers are passed as it reads them.
No server is started.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import snappy
from twisted.trial.unittest import TestCase

from bench import processes, seal
from bench.load import REMOTE_WRITE_HEADERS, wrk_headers
from sealgw.config import load
from sealgw.signals import seal as seal_format
from sealgw.signals.proto import metrics_pb2


class SealBodyTests(TestCase):
    def test_samples_per_type(self) -> None:
        """
        Every type's body converts to about the samples asked for, exactly
        its metrics times the series one metric makes, in batches of at
        most the route's C{batch_size}.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        bodies = seal.write_bodies(Path(directory), seal.TYPES, 2000, 500)
        self.assertEqual(set(bodies), set(seal.TYPES))
        for kind, made in bodies.items():
            per_metric = seal.series_per_metric(kind)
            self.assertEqual(made["samples"], made["metrics"] * per_metric, kind)
            self.assertLessEqual(abs(made["samples"] - 2000), per_metric, kind)
            self.assertEqual(made["upstream_requests"], math.ceil(made["samples"] / 500), kind)
            self.assertEqual(os.path.getsize(made["path"]), made["bytes"])

    def test_key_server_shape(self) -> None:
        """
        A body is one raw snappy block of compact JSON, C{labels} and
        C{buf} (bytes as numbers), C{buf} the delimited families of one
        type, every metric stamped; histograms leave C{+Inf} out, as Rust's
        crate does.
        """
        for kind in seal.TYPES:
            data = seal.body(seal.families(kind, 120, 1_700_000_000_000))
            raw = snappy.decompress(data)
            self.assertTrue(raw.startswith(b'{"labels":{'), raw[:40])
            self.assertNotIn(b", ", raw)
            doc = json.loads(raw)
            self.assertEqual(set(doc), {"labels", "buf"})
            self.assertEqual(doc["labels"], seal.CLIENT_LABELS)
            labels, buf = seal_format.decode_seal_json(raw)
            families = seal_format.decode_delimited(buf)
            self.assertEqual(sum(len(f.metric) for f in families), 120)
            self.assertEqual({f.type for f in families}, {seal._PROTO_TYPES[kind]})
            for family in families:
                for metric in family.metric:
                    self.assertEqual(metric.timestamp_ms, 1_700_000_000_000)
                    self.assertEqual([p.name for p in metric.label], ["route", "status"])
                    if family.type in (metrics_pb2.HISTOGRAM, metrics_pb2.GAUGE_HISTOGRAM):
                        bounds = [b.upper_bound for b in metric.histogram.bucket]
                        self.assertNotIn(math.inf, bounds)


class BenchConfigTests(TestCase):
    def test_seal_route(self) -> None:
        """
        With a seal route, the configuration has it beside the plain
        remote-write route, to the same upstream path.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        tokens = os.path.join(directory, "tokens.yaml")
        with open(tokens, "w") as f:
            f.write("- name: bench\n  token: t0k3n\n  tenants: [bench]\n")
        path = os.path.join(directory, "sealgw.yaml")
        with open(path, "w") as f:
            f.write(processes.sealgw_config(
                1234, 1235, "http://127.0.0.1:9/api/v1/write", Path(tokens),
                seal=processes.SealRoute(batch_size=700, labels={"network": "bench"}),
            ))
        config = load(path)
        assert config.push.seal is not None and config.push.remote_write is not None
        self.assertEqual(config.push.seal.batch_size, 700)
        self.assertEqual(dict(config.push.seal.labels.add), {"network": "bench"})
        self.assertEqual(config.push.seal.route.path, "/api/v1/write")
        self.assertEqual(config.push.remote_write.route.path, "/api/v1/write")
        self.assertEqual(dict(config.push.remote_write.labels.add), {})

    def test_without_seal_route(self) -> None:
        """
        Without one, the configuration is run.py's: no seal route.
        """
        text = processes.sealgw_config(1, 2, "http://127.0.0.1:9/api/v1/write", Path("/t"))
        self.assertNotIn("seal:", text)

    def test_seal_url(self) -> None:
        self.assertEqual(
            processes.seal_url("http://127.0.0.1:5/api/v1/push"),
            "http://127.0.0.1:5/publish/metrics",
        )


class WrkHeadersTests(TestCase):
    def test_lines(self) -> None:
        self.assertEqual(wrk_headers(seal.SEAL_HEADERS),
                         "Content-Encoding: snappy\nAccept: */*\n")
        self.assertIn("X-Prometheus-Remote-Write-Version: 0.1.0\n",
                      wrk_headers(REMOTE_WRITE_HEADERS))

    def test_refused(self) -> None:
        self.assertRaises(ValueError, wrk_headers, {"A": "b\nC: d"})
        self.assertRaises(ValueError, wrk_headers, {"A:B": "c"})
