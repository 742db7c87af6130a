"""The load generator: wrk, pinned to its own core, driven by a generated Lua script.

wrk is a closed-loop generator: ``-c`` connections each send the next request as soon as the
previous answer arrives, so requests/s is the server's capacity at that concurrency and the
latency percentiles include the queueing that concurrency causes. The Lua script's ``done()``
prints one JSON line with wrk's own counters and exact percentiles, so nothing depends on
parsing wrk's human-readable report (which is still kept, with ``--latency``, in ``raw``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

RESULT_MARKER = "BENCH_RESULT "
INSTALL_HINT = (
    "wrk is not installed. It is a Debian package: run `apt-get update && apt-get install -y wrk`"
    " (as root, or with sudo), then run this benchmark again."
)
TASKSET_HINT = "taskset is missing: it comes with util-linux (`apt-get install -y util-linux`)."

_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%.1f,"p90_us":%.1f,'
    .. '"p99_us":%.1f,"max_us":%.1f,"mean_us":%.1f,"connect_errors":%d,"read_errors":%d,'
    .. '"write_errors":%d,"status_errors":%d,"timeouts":%d}\\n',
    "BENCH_RESULT ", summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


class ToolMissingError(RuntimeError):
    """A program the benchmark needs is not on PATH; the message says how to install it."""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    non_2xx: int
    socket_errors: int
    raw: str

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "requests_per_s": round(self.requests_per_s, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p90_ms": round(self.p90_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "mean_ms": round(self.mean_ms, 3),
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
        }


def require_tools() -> None:
    """Raise with an install hint when wrk or taskset is missing."""
    if shutil.which("wrk") is None:
        raise ToolMissingError(INSTALL_HINT)
    if shutil.which("taskset") is None:
        raise ToolMissingError(TASKSET_HINT)


def wrk_version() -> str:
    # `wrk -v` prints its banner and exits non-zero (it wants a URL); the banner is the version.
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False, timeout=10)
    return (
        (done.stdout or done.stderr).strip().splitlines()[0] if done.stdout or done.stderr else ""
    )


def _lua_long_string(text: str) -> str:
    """A Lua long-bracket literal that cannot be closed early by anything inside ``text``."""
    level = 1
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def write_script(path: Path, body: bytes, headers: Mapping[str, str]) -> Path:
    """A wrk script that POSTs ``body`` with ``headers`` and reports through ``done()``."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_long_string(body.decode('utf-8'))}"]
    for name, value in {"Content-Type": "application/json", **headers}.items():
        lines.append(f"wrk.headers[ {_lua_long_string(name)} ] = {_lua_long_string(value)}")
    path.write_text("\n".join(lines) + "\n" + _DONE, encoding="utf-8")
    return path


def run_wrk(url: str, script: Path, *, connections: int, seconds: int, core: int) -> WrkResult:
    """One wrk run pinned to ``core``: ``taskset -c core wrk -t1 -cN -dS --latency -s script``."""
    command = [
        "taskset", "-c", str(core), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
        "--latency", "-s", str(script), url,
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=seconds + 60
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"wrk failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[:500]}"
        )
    data = json.loads(lines[-1][len(RESULT_MARKER) :])
    return WrkResult(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1e3,
        p90_ms=data["p90_us"] / 1e3,
        p99_ms=data["p99_us"] / 1e3,
        max_ms=data["max_us"] / 1e3,
        mean_ms=data["mean_us"] / 1e3,
        non_2xx=int(data["status_errors"]),
        socket_errors=sum(
            int(data[k]) for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
        ),
        raw=done.stdout,
    )
