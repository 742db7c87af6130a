"""Serving overhead: Strongroom against a bare app and MLServer, in one run, with wrk.

Configurations, each one worker, the server pinned to one core and wrk to the other:
  (a) bare Starlette + onnxruntime app (bare_app.py): no security at all       -- baseline
  (b) Strongroom, TLS off (unsafe_plaintext), API key, RBAC, validation, audit
  (c) (b) with an OIDC access token (EdDSA JWT) instead of the API key
  (d) (b) over TLS
  (e) MLServer with its scikit-learn runtime, the same fitted pipeline (joblib) -- baseline
  (f) (b) with the request guard off (unsafe_no_request_guard)                  -- guard cost
  (g) (b) with its rate counters in Redis (rate_limit_url)                      -- Redis cost
(a)-(d) serve the same ONNX bytes and (e) the scikit-learn pipeline they were converted from:
the quickstart's synthetic fraud model, trained by its own function. Every configuration gets
the same request: one row of the 20 fraud features as an Open Inference Protocol v2 body.

Per configuration: start the server (``taskset -c 0``), poll ``GET /v2/health/ready``, send one
smoke request (must be 200 with outputs), run wrk once to warm up, then once to measure
(``taskset -c 1 wrk -t1 -cN -dS --latency``). Results: a table, PASS/MISS for the issue's
targets ((b),(c) >= 70% of (a)'s requests/s and <= +2 ms p99; (b) >= 5x (e); (b) >= 90% of
(f)) and a JSON file in bench/results/. It is a measurement, not a test: the exit code is 0
whatever the verdicts (2 when a required tool such as wrk is missing). Run: make bench-server
(see bench/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from baselines import bare_app_spec, ensure_mlserver_venv, mlserver_spec, mlserver_version
from loadgen import ToolMissingError, require_tools, run_wrk, write_script, wrk_version
from report import CONFIGURATIONS, predictions_agree, print_report, ratios, verdicts
from servers import ServerSpec, running, smoke_check
from strongroom_configs import (
    TITLES,
    StrongroomUnavailableError,
    prepare_instance,
    strongroom_specs,
)

BENCH_DIR = Path(__file__).resolve().parent
TRAINING_ROWS, TRAINING_SEED = 5000, 7  # the quickstart's defaults: the same model
PROBABILITY_OUTPUTS = ("probabilities", "predict_proba")
BUSY_LOADAVG = 0.5
MEASUREMENT_ERRORS = (RuntimeError, OSError, subprocess.SubprocessError, ValueError)
"""ServerError and wrk failures are RuntimeErrors: they fail one configuration, not the run."""
SETUP_ERRORS = (
    RuntimeError,
    OSError,
    subprocess.SubprocessError,
    LookupError,
    TypeError,
    ValueError,
)
ALL_TITLES = {"a": "(a) bare Starlette + onnxruntime", **TITLES, "e": "(e) MLServer sklearn"}


@dataclass(frozen=True)
class Model:
    sklearn: Any
    onnx_path: Path
    reference_csv: Path
    body: bytes
    in_process_probability: float


def prepare_model(workdir: Path) -> Model:
    """Train exactly as ``strongroom quickstart`` does, with its own (importable) functions."""
    import numpy as np

    from strongroom.entrypoints.cli.quickstart import FEATURES, _reference_csv, _to_onnx, _train

    model, x_train, x_test, _ = _train(TRAINING_ROWS, TRAINING_SEED)
    onnx_path, reference = workdir / "fraud.onnx", workdir / "reference.csv"
    onnx_path.write_bytes(_to_onnx(model))
    reference.write_bytes(_reference_csv(x_train[:1000]))
    row = [float(f"{value:.6g}") for value in x_test[0]]  # the same printed numbers for all
    tensor = {"name": "input", "shape": [1, len(FEATURES)], "datatype": "FP32", "data": row}
    body = json.dumps({"inputs": [tensor]}, separators=(",", ":")).encode("utf-8")
    expected = float(model.predict_proba(np.asarray([row], dtype=np.float32))[0, 1])
    return Model(model, onnx_path, reference, body, expected)


def fraud_probability(answer: dict[str, Any]) -> float | None:
    for output in answer.get("outputs", []):
        if output.get("name") in PROBABILITY_OUTPUTS and len(output.get("data", [])) == 2:
            return float(output["data"][1])
    return None


def measure(spec: ServerSpec, model: Model, args: argparse.Namespace, workdir: Path) -> dict:
    script = write_script(workdir / f"{spec.key}.lua", model.body, spec.endpoint.headers)
    url = spec.endpoint.infer_url
    with running(spec, args.server_core) as startup_s:
        answer = smoke_check(spec, model.body)
        if args.warmup > 0:
            run_wrk(
                url, script, connections=args.connections, seconds=args.warmup, core=args.load_core
            )
        result = run_wrk(
            url, script, connections=args.connections, seconds=args.duration, core=args.load_core
        )
    (workdir / f"{spec.key}-wrk.txt").write_text(result.raw, encoding="utf-8")
    load = ["taskset", "-c", str(args.load_core), "wrk", "-t1", f"-c{args.connections}"]
    return {
        "title": spec.title,
        "server_command": shlex.join(["taskset", "-c", str(args.server_core), *spec.command]),
        "load_command": shlex.join([*load, f"-d{args.duration}s", "--latency", "-s", "<lua>", url]),
        **result.as_dict(),
        "valid": result.non_2xx == 0 and result.socket_errors == 0,
        "startup_s": round(startup_s, 2),
        "fraud_probability": fraud_probability(answer),
    }


def build_specs(
    keys: list[str], model: Model, args: argparse.Namespace, workdir: Path
) -> tuple[dict[str, ServerSpec], dict[str, str], dict[str, str]]:
    """Set everything up before any load runs: (specs, skipped reasons, extra versions)."""
    specs: dict[str, ServerSpec] = {}
    skipped: dict[str, str] = {}
    versions: dict[str, str] = {}
    if "a" in keys:
        specs["a"] = bare_app_spec(workdir, model.onnx_path)
    strongroom_keys = [k for k in keys if k in "bcdfg"]
    if strongroom_keys:
        try:
            instance = prepare_instance(workdir, model.onnx_path, model.reference_csv)
            specs.update({s.key: s for s in strongroom_specs(instance, workdir) if s.key in keys})
        except (StrongroomUnavailableError, *SETUP_ERRORS) as error:
            print(f"SKIPPING (b)-(d), (f), (g): {error}", flush=True)
            skipped.update(dict.fromkeys(strongroom_keys, str(error)))
    if "e" in keys:
        try:
            mlserver = ensure_mlserver_venv(args.mlserver_python)
            versions["mlserver"] = mlserver_version(mlserver)
            specs["e"] = mlserver_spec(workdir, mlserver, model.sklearn, args.parallel_workers)
        except SETUP_ERRORS as error:
            skipped["e"] = f"MLServer set-up failed: {error}"
            print(f"SKIPPING (e): {skipped['e']}", flush=True)
    return specs, skipped, versions


def environment(extra: dict[str, str]) -> dict[str, Any]:
    names = (
        "strongroom",
        "onnxruntime",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "orjson",
        "numpy",
        "scikit-learn",
        "skl2onnx",
        "PyJWT",
    )
    versions = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            "",
        )
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": cpu,
            "platform": platform.platform(),
            "loadavg_1m_before": round(os.getloadavg()[0], 2),
        },
        "versions": {
            "python": platform.python_version(),
            "wrk": wrk_version(),
            **versions,
            **extra,
        },
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per config")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per config")
    parser.add_argument("--quick", action="store_true", help="3 s runs after a 1 s warm-up")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c (default 16)")
    parser.add_argument("--only", default=",".join(CONFIGURATIONS), help="e.g. a,e")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument(
        "--parallel-workers",
        "--mlserver-parallel-workers",
        type=int,
        default=1,
        choices=(0, 1),
        help="MLServer parallel_workers (default 1)",
    )
    parser.add_argument(
        "--mlserver-python",
        default=sys.executable,
        help="interpreter for bench/.venv-mlserver (Python 3.9-3.12)",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep server logs, wrk output, the model"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 3, 1
    args.keys = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = sorted(set(args.keys) - set(CONFIGURATIONS))
    if unknown or not 1 <= args.duration <= 600 or not 0 <= args.warmup <= 60:
        parser.error(f"bad --only {unknown} or --duration 1-600 / --warmup 0-60")
    return args


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    busy = os.getloadavg()[0]
    if busy > BUSY_LOADAVG:
        print(
            f"warning: load average {busy:.2f} before the run; other work on this machine "
            "skews the figures (run it on an idle machine)",
            flush=True,
        )
    model = prepare_model(workdir)
    specs, skipped, extra_versions = build_specs(args.keys, model, args, workdir)
    results: dict[str, dict] = {
        k: {"title": ALL_TITLES[k], "skipped": why} for k, why in skipped.items()
    }
    for key in args.keys:
        if key not in specs:
            continue
        spec = specs[key]
        print(f"measuring {spec.title} ...", flush=True)
        try:
            results[key] = measure(spec, model, args, workdir)
        except MEASUREMENT_ERRORS as error:
            results[key] = {"title": spec.title, "error": str(error)}
            print(f"  FAILED: {error}", flush=True)
    values = ratios(results)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "wrk_threads": 1,
            "server_workers": 1,
            "server_core": args.server_core,
            "load_core": args.load_core,
            "mlserver_parallel_workers": args.parallel_workers,
        },
        **environment(extra_versions),
        "in_process_fraud_probability": round(model.in_process_probability, 6),
        "configurations": results,
        "ratios": values,
        "targets": verdicts(values),
        "predictions_agree": predictions_agree(results, model.in_process_probability),
    }
    print_report(report)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        require_tools()
    except ToolMissingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    cores = os.sched_getaffinity(0)
    if (
        args.server_core not in cores
        or args.load_core not in cores
        or (args.server_core == args.load_core)
    ):
        print(f"error: need two distinct usable cores (have {sorted(cores)})", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        if args.keep_workdir:
            workdir = Path(tempfile.mkdtemp(prefix="strongroom-bench-"))
            print(f"work directory (kept): {workdir}")
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sr-bench-")))
        try:
            report = run(args, workdir)
        except Exception:  # noqa: BLE001 - a measurement reports its own failure and exits 0
            traceback.print_exc()
            return 0
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or BENCH_DIR / "results" / f"server-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
