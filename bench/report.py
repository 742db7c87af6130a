"""What the server benchmark concludes: ratios against the baselines and the issue's targets.

Invariant: a ratio is computed only from valid runs (no non-2xx answer, no socket error); a
target whose inputs are missing or invalid is ``N/A``, never PASS. Verdicts inform, they do
not fail the run: the benchmark exits 0 whatever they say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CONFIGURATIONS = ("a", "b", "c", "d", "e", "f", "g")
PREDICTION_TOLERANCE = 1e-4
"""float32 ONNX and float64 scikit-learn probabilities agree to this (as in the quickstart)."""


@dataclass(frozen=True)
class Target:
    name: str
    ratio: str
    op: str
    threshold: float


TARGETS = (
    Target("(b)/(a) requests/s", "rps_b_over_a", ">=", 0.70),
    Target("(c)/(a) requests/s", "rps_c_over_a", ">=", 0.70),
    Target("(b)-(a) p99 added ms", "p99_added_ms_b", "<=", 2.0),
    Target("(c)-(a) p99 added ms", "p99_added_ms_c", "<=", 2.0),
    Target("(b)/(e) requests/s", "rps_b_over_e", ">=", 5.0),
    Target("(b)/(f) requests/s, guard on/off", "rps_b_over_f", ">=", 0.90),
)
INFORMATION = (
    ("(d)/(a) requests/s", "rps_d_over_a"),
    ("(d)-(a) p99 added ms", "p99_added_ms_d"),
    ("(d)/(b) requests/s (TLS cost)", "rps_d_over_b"),
    ("(a)/(e) requests/s", "rps_a_over_e"),
    ("(g)/(b) requests/s (Redis limiter)", "rps_g_over_b"),
    ("(g)-(b) p99 added ms (Redis)", "p99_added_ms_g_over_b"),
)


def _valid(results: dict[str, dict], key: str, field: str) -> float | None:
    row = results.get(key, {})
    return row.get(field) if row.get("valid") else None


def ratios(results: dict[str, dict]) -> dict[str, float | None]:
    def over(top: str, bottom: str) -> float | None:
        high = _valid(results, top, "requests_per_s")
        low = _valid(results, bottom, "requests_per_s")
        return round(high / low, 3) if high is not None and low else None

    def added(key: str, baseline: str = "a") -> float | None:
        p99, base = _valid(results, key, "p99_ms"), _valid(results, baseline, "p99_ms")
        return round(p99 - base, 3) if p99 is not None and base is not None else None

    out: dict[str, float | None] = {}
    for key in "bcd":
        out[f"rps_{key}_over_a"] = over(key, "a")
        out[f"p99_added_ms_{key}"] = added(key)
    out["rps_d_over_b"] = over("d", "b")
    out["rps_b_over_e"] = over("b", "e")
    out["rps_a_over_e"] = over("a", "e")
    out["rps_b_over_f"] = over("b", "f")
    out["rps_g_over_b"] = over("g", "b")
    out["p99_added_ms_g_over_b"] = added("g", "b")
    return out


def verdicts(values: dict[str, float | None]) -> list[dict[str, Any]]:
    rows = []
    for target in TARGETS:
        value = values.get(target.ratio)
        if value is None:
            verdict = "N/A"
        elif target.op == ">=":
            verdict = "PASS" if value >= target.threshold else "MISS"
        else:
            verdict = "PASS" if value <= target.threshold else "MISS"
        goal = f"{target.op} {target.threshold:g}"
        rows.append({"target": target.name, "value": value, "goal": goal, "verdict": verdict})
    return rows


def predictions_agree(results: dict[str, dict], expected: float) -> dict[str, bool]:
    """Per measured configuration: did its smoke answer match the in-process model?"""
    return {
        key: abs(row["fraud_probability"] - expected) < PREDICTION_TOLERANCE
        for key, row in results.items()
        if row.get("fraud_probability") is not None
    }


def _row(row: dict[str, Any]) -> str:
    if "requests_per_s" not in row:
        status = "skipped" if row.get("skipped") else "FAILED"
        reason = (row.get("skipped") or row.get("error") or "-").splitlines()[0][:160]
        return f"{row['title']:<46} {status}: {reason}"
    flag = "" if row["valid"] else "  INVALID (errors)"
    return (
        f"{row['title']:<46} {row['requests_per_s']:>9.0f} {row['p50_ms']:>8.2f} "
        f"{row['p99_ms']:>8.2f} {row['non_2xx']:>8}{flag}"
    )


def print_report(report: dict[str, Any]) -> None:
    settings, results = report["settings"], report["configurations"]
    print(
        f"\nwrk -t1 -c{settings['connections']} -d{settings['duration_s']}s after a "
        f"{settings['warmup_s']} s warm-up; server on core {settings['server_core']}, "
        f"wrk on core {settings['load_core']}; 1 server worker\n"
    )
    header = f"{'configuration':<46} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}"
    print(header)
    print("-" * len(header))
    for key in CONFIGURATIONS:
        if key in results:
            print(_row(results[key]))
    print("\ntargets (issues 3 and 4):")
    for row in report["targets"]:
        value = "-" if row["value"] is None else f"{row['value']:.3f}"
        print(f"  {row['target']:<30} {value:>9}  (goal {row['goal']:<7}) {row['verdict']}")
    print("for information:")
    for name, ratio in INFORMATION:
        value = report["ratios"].get(ratio)
        print(f"  {name:<30} {'-' if value is None else f'{value:.3f}':>9}")
    agree = report["predictions_agree"]
    if agree:
        listed = ", ".join(f"({k}) {'yes' if ok else 'NO'}" for k, ok in sorted(agree.items()))
        print(
            f"same prediction as the in-process model (|diff| < {PREDICTION_TOLERANCE}): {listed}"
        )
