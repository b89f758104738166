from twisted.trial.unittest import TestCase
from tests.e2e_support import *
from sealgw.signals import snappy_compress

class Probe(TestCase):
    timeout = 120
    async def test_seal_json_amplification(self):
        up = ScriptedUpstream(); server = serve(self, up)
        gw = await start_gateway(self, {"upstreams": {"b": {"url": server.url}},
            "push": {"seal": {"upstream": "b"}}}, [{"name": "n", "token": "t"}])
        http = http_client(self)
        n = 24 * 1024 * 1024  # 24M entries of "0," = 48 MiB JSON
        raw = b'{"buf": [' + b"0," * (n - 1) + b'0]}'
        body = snappy_compress(raw)
        del raw
        print("\ncompressed body", len(body))
        mem = PeakMemory()
        r = await http.post(gw.url + "/publish/metrics", data=body, headers={"Content-Encoding": ["snappy"], **bearer("t")})
        print(r.code, (await r.content())[:200], "growth MiB", mem.growth() / 2**20, "reset", mem.reset)
