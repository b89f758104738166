"""
End to end: seal's own sample C{seal-proxy.yaml}, in exactly its shape
(only the addresses point at this test's ports), runs a gateway: the
unused histogram address is said once at start-up, empty credentials
send none upstream, and the label actions apply.
"""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from sealgw.signals import snappy_decompress
from sealgw.signals.proto import remote_pb2
from tests.e2e_support import (
    TEST_TIMEOUT,
    ScriptedUpstream,
    bearer,
    http_client,
    now_ms,
    run_gateway,
    seal_body,
    seal_sample_families,
    serve,
)
from tests.subprocesses import free_port, healthy, stop, twistd, wait_for

#: docker/seal-proxy/local-test/seal-proxy.yaml in the seal repository.
SEAL_SAMPLE = """\
listen-address: {listen}
metrics-address: {metrics}
histogram-address: 0.0.0.0:8001
label-actions:
  add:
    network: "pei-test"
    host: "docker-compose"
remote-write:
  url: "{url}"
  username: ""
  password: ""
  pool_max_idle_per_host: 100
"""
#: docker/seal-proxy/local-test/bearer-tokens.yaml's shape.
SEAL_TOKENS = """\
- name: sample-token
  token: abcdefghijklmnopqrstuvwxyz
"""
TOKEN = "abcdefghijklmnopqrstuvwxyz"
NOTE = b"histogram-address: not used: sealgw converts histograms"


class SealSampleTests(TestCase):
    timeout = TEST_TIMEOUT

    def files(self, url: str) -> tuple[str, str, int, int]:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        listen, metrics = free_port(), free_port()
        config = os.path.join(directory, "seal-proxy.yaml")
        with open(config, "w", encoding="utf-8") as f:
            f.write(
                SEAL_SAMPLE.format(
                    listen=f"127.0.0.1:{listen}", metrics=f"127.0.0.1:{metrics}", url=url
                )
            )
        tokens = os.path.join(directory, "bearer-tokens.yaml")
        with open(tokens, "w", encoding="utf-8") as f:
            f.write(SEAL_TOKENS)
        return config, tokens, listen, metrics

    async def test_push(self) -> None:
        upstream = ScriptedUpstream()
        server = serve(self, upstream)
        config, tokens, _, _ = self.files(server.url + "/api/v1/push")
        gateway = run_gateway(self, config, bearer_tokens_path=tokens)
        self.assertEqual(len(gateway.service.listeners), 2)
        http = http_client(self)
        response = await http.post(
            gateway.url + "/publish/metrics",
            data=seal_body(seal_sample_families(now_ms())),
            headers={"Content-Encoding": ["snappy"], **bearer(TOKEN)},
        )
        self.assertEqual(response.code, 201, await response.content())
        [received] = upstream.received
        self.assertEqual(received.path, b"/api/v1/push")
        # username: "" and password: "" are no basic auth at all.
        self.assertIsNone(received.header("Authorization"))
        request = remote_pb2.WriteRequest()
        request.ParseFromString(snappy_decompress(received.body, 64 << 20))
        self.assertTrue(request.timeseries)
        for series in request.timeseries:
            labels = {label.name: label.value for label in series.labels}
            self.assertEqual(labels["network"], "pei-test")
            self.assertEqual(labels["host"], "docker-compose")
            self.assertEqual(labels["node_name"], "sample-token")

    async def test_twistd_says_once_why_histogram_address_is_unused(self) -> None:
        config, tokens, _, metrics = self.files("http://127.0.0.1:9/api/v1/push")
        child = twistd("sealgw", "--config", config, "--bearer-tokens-path", tokens)
        self.addCleanup(stop, child)
        await wait_for(lambda: Deferred.fromCoroutine(healthy(f"http://127.0.0.1:{metrics}")))
        await child.output_contains(b"listening on")
        output = child.out + child.err
        self.assertEqual(output.count(NOTE), 1, output.decode(errors="replace"))
        self.assertNotIn(b"Traceback", output)
        self.assertNotIn(TOKEN.encode(), output)
