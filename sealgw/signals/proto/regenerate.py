"""
Regenerate the C{*_pb2.py} and C{*_pb2.pyi} modules beside this file from
their C{.proto} sources.

The generated modules are committed because sealgw imports them at run time
and C{grpcio-tools} is only a test dependency;
C{tests/test_signals_proto.py} checks that they still match the sources.
Run after editing a C{.proto}::

    python -m sealgw.signals.proto.regenerate
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Generated imports must read "from sealgw.signals.proto import x_pb2", so the
# include root is the directory that holds the sealgw package.
ROOT = HERE.parents[2]
PROTOS = ("remote.proto", "remote_v2.proto", "metrics.proto", "logproto.proto")


def generate(out_dir: Path) -> list[Path]:
    """
    Run protoc over every C{.proto} here, writing under C{out_dir} with the
    package layout kept (C{out_dir/sealgw/signals/proto/...}).

    @return: the paths written.
    @raise RuntimeError: if protoc fails.
    """
    from grpc_tools import protoc

    well_known = resources.files("grpc_tools") / "_proto"
    relative = HERE.relative_to(ROOT)
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        *(str(relative / name) for name in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))
    written = []
    for name in PROTOS:
        stem = name.removesuffix(".proto")
        for suffix in ("_pb2.py", "_pb2.pyi"):
            written.append(out_dir / relative / (stem + suffix))
    return written


def main() -> int:
    generate(ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
