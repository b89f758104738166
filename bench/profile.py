"""
Optional: sample sealgw with py-spy while it is under load, and sum the
samples up by function, to say where a request's CPU time goes.

py-spy competes for the same CPUs, so the figures of a profiled run are
not comparable with those of an unprofiled one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

PY_SPY = Path(sys.executable).parent / "py-spy"


def find_py_spy() -> Optional[str]:
    """
    The py-spy next to this Python, else one on PATH.
    """
    return str(PY_SPY) if PY_SPY.exists() else shutil.which("py-spy")


def start(pid: int, seconds: int, output: Path) -> subprocess.Popen:
    """
    Record C{seconds} of stacks of process C{pid} in py-spy's raw format
    (collapsed stacks: one line per distinct stack, then its count), which
    flamegraph.pl and speedscope read too.
    """
    py_spy = find_py_spy()
    if py_spy is None:
        raise FileNotFoundError("py-spy is not installed (pip install py-spy)")
    return subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--duration", str(seconds),
         "--format", "raw", "--rate", "100", "--nonblocking", "--output", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _frame_name(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)": lines
    # of one function are added up.
    name, _, where = frame.partition(" (")
    module = where.rsplit(":", 1)[0].rstrip(")")
    return f"{name} ({module})" if module else name


def hotspots(paths: list[Path], top: int = 15) -> str:
    """
    The functions with the most samples on top of the stack (self), and
    sealgw's own functions with the most samples anywhere on it (total:
    the function and what it calls), as shares of all samples.  Total time
    is shown for sealgw only: Twisted's reactor frames are on every stack
    and would fill the list.
    """
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    lines_in = (line for path in paths for line in path.read_text(errors="replace").splitlines())
    for line in lines_in:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            if "(sealgw/" in name:
                anywhere[name] += count
    if not total:
        return "(py-spy recorded no samples)"
    lines = [f"{total} samples; self time:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    lines.append("total time of sealgw's functions (with what they call):")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in anywhere.most_common(top)]
    return "\n".join(lines)
