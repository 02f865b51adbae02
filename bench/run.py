"""``python -m bench.run``: the refresh benchmark, operator against the baseline, at N = 100, 1,000, 5,000.

Every configuration runs ``--runs`` times (default 3); the table shows medians. Raw
results (every run, every number) go to ``bench/results/<stamp>.json`` and the table to
``bench/results/<stamp>.md``. ``--quick`` is a short sanity run (N = 100, one run each).
See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import analysis
from bench.procs import REPO, machine
from bench.scenario import Params, run_once

log = logging.getLogger("bench")
RESULTS = REPO / "bench" / "results"
SUBJECTS = ("operator", "baseline")

#: Per N: token lifetime and steady window. Tokens refresh a third of their lifetime
#: before expiry (the product default's ratio); the baseline refreshes every token at once
#: every half lifetime, so the window is exactly three of its periods (1.5 lifetimes): a
#: window of 2.67 periods held 2 or 3 of its passes depending on phase, which flattered it.
#: Bigger N gets longer-lived tokens to stay in the time budget. N = 20,000 (operator only:
#: RSS, all Ready, lateness) has 15-minute tokens and a 2-minute window of the first refreshes.
PLANS: dict[int, tuple[int, float]] = {100: (60, 90.0), 1000: (60, 90.0), 5000: (120, 180.0), 20000: (900, 120.0)}
QUICK_PLAN = (40, 60.0)


def plan_for(n: int, quick: bool) -> tuple[int, float]:
    """(lifetime s, steady window s) for N tokens."""
    if quick:
        return QUICK_PLAN
    return PLANS.get(n) or PLANS[min(PLANS, key=lambda k: abs(k - n))]


# -- the table ---------------------------------------------------------------------------

Metric = tuple[str, Callable[[dict[str, Any]], float | None], str]


def _get(*path: str) -> Callable[[dict[str, Any]], float | None]:
    def get(result: dict[str, Any]) -> float | None:
        value: Any = result
        for part in path:
            if value is None:
                return None
            value = value.get(part)
        return value if isinstance(value, int | float) else None

    return get


def _expired(result: dict[str, Any]) -> float | None:
    consumer = result.get("consumer")
    if not consumer:
        return None
    return consumer["expired_seen"] + consumer["exposure"]["tokens"]


#: (row label, how to read it from one run's result, how to format)
METRICS: list[Metric] = [
    ("All Ready after creating N (s)", _get("ready", "all_ready_s"), "{:.1f}"),
    ("Cold start: all tokens resumed after restart (s)", _get("restart", "coldstart_s"), "{:.1f}"),
    ("Refreshes during restart of tokens not due", _get("restart", "not_due_refreshes"), "{:.0f}"),
    ("Idle window length (s)", _get("idle", "seconds"), "{:.0f}"),
    ("Idle: provider calls", _get("idle", "provider_calls"), "{:.0f}"),
    ("Idle: API writes (excluding leader-election Lease)", _get("idle", "token_writes"), "{:.0f}"),
    ("Leader-election Lease writes per minute", _get("steady", "lease_writes_per_minute"), "{:.1f}"),
    ("Provider calls per refresh", _get("steady", "provider_calls_per_refresh"), "{:.2f}"),
    ("Refresh period per token (s)", _get("steady", "refresh_period_s"), "{:.1f}"),
    ("Provider calls per token per token lifetime", _get("steady", "provider_calls_per_token_lifetime"), "{:.2f}"),
    (
        "Provider calls per token per token lifetime, model (timing.py; loop: lifetime/period)",
        _get("steady", "model_calls_per_token_lifetime"),
        "{:.2f}",
    ),
    ("Provider calls per token per hour (bench lifetimes)", _get("steady", "provider_calls_per_token_hour"), "{:.0f}"),
    ("API reads per refresh", _get("steady", "api_reads_per_refresh"), "{:.2f}"),
    ("API writes per refresh (excluding Lease)", _get("steady", "api_writes_per_refresh"), "{:.2f}"),
    ("Lateness p50 (s)", _get("steady", "lateness_s", "p50"), "{:.2f}"),
    ("Lateness p99 (s)", _get("steady", "lateness_s", "p99"), "{:.2f}"),
    ("Lateness max (s)", _get("steady", "lateness_s", "max"), "{:.2f}"),
    ("Token validity left at refresh, min (s)", _get("steady", "remaining_at_refresh_s", "min"), "{:.1f}"),
    ("Expired tokens seen by consumers", _expired, "{:.0f}"),
    ("Consumer reads checked", _get("consumer", "samples"), "{:.0f}"),
    ("Subject CPU per refresh (ms)", _get("steady", "subject_cpu_ms_per_refresh"), "{:.1f}"),
    ("Subject CPU in steady window (s)", _get("steady", "subject_cpu_s"), "{:.1f}"),
    ("Subject RSS (MiB)", _get("process", "subject_rss_mib"), "{:.0f}"),
    ("Subject peak RSS (MiB)", _get("process", "subject_hwm_mib"), "{:.0f}"),
    ("API server (kmock or kube-apiserver) CPU in steady window (s)", _get("steady", "kube_cpu_s"), "{:.1f}"),
    ("etcd CPU in steady window (s)", _get("steady", "etcd_cpu_s"), "{:.1f}"),
]


def medians(runs: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Median of every table metric over the runs of one configuration."""
    return {label: analysis.median([get(r) for r in runs]) for label, get, _ in METRICS}


def table(
    summary: dict[str, dict[str, dict[str, float | None]]], ns: Sequence[int | str], subjects: Sequence[str]
) -> str:
    """Markdown: one row per metric; per N the operator, the baseline and operator/baseline."""
    both = "operator" in subjects and "baseline" in subjects
    head = ["Metric (median of runs)"]
    for n in ns:
        head += [f"N={n} {s}" for s in subjects] + ([f"N={n} ratio"] if both else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, _, fmt in METRICS:
        row = [label]
        for n in ns:
            values = [summary.get(str(n), {}).get(s, {}).get(label) for s in subjects]
            row += ["–" if v is None else fmt.format(v) for v in values]
            if both:
                op, base = values
                if op is None or base is None:
                    row.append("–")
                elif base == 0:
                    row.append("=" if op == 0 else "∞")
                else:
                    row.append(f"{op / base:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def reanalyse(workdir: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Results rebuilt from a kept ``--workdir``: each run's result.json with the interval-based
    rates recomputed from its raw provider record (so a fixed analysis needs no new runs)."""
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for run_dir in sorted(workdir.iterdir(), key=lambda d: (d.name.split("-")[1:], d.name)):
        result_file, calls_file = run_dir / "result.json", run_dir / "provider-calls.json"
        if not (result_file.exists() and calls_file.exists()):
            continue
        result = json.loads(result_file.read_text())
        marks, params = result["marks"], result["params"]
        rates = analysis.steady_rates(
            json.loads(calls_file.read_text()), marks["steady_start"], marks["steady_end"], params["lifetime"]
        )
        result["steady"].update(rates)
        raw.setdefault(str(params["n"]), {}).setdefault(params["subject"], []).append(result)
    return raw


def combine(files: Sequence[Path]) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], list[str]]:
    """Runs from several result files, grouped by N and API (``"1000 on real"``), in order of appearance."""
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for path in files:
        for by in json.loads(path.read_text())["runs"].values():
            for subject, results in by.items():
                for result in results:
                    params = result["params"]
                    key = f"{params['n']} on {params.get('api', 'kmock')}"
                    raw.setdefault(key, {}).setdefault(subject, []).append(result)
    return raw, list(raw)


def main(argv: list[str] | None = None) -> int:
    """Run the matrix, write JSON and the table."""
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--n", default=None, help="comma-separated token counts (default 100,1000,5000; quick: 100)")
    p.add_argument("--runs", type=int, default=None, help="runs per configuration (default 3; quick: 1)")
    p.add_argument("--subjects", default="operator,baseline", help="operator, baseline or both")
    p.add_argument("--quick", action="store_true", help="short sanity run")
    p.add_argument("--lifetime", type=int, help="token lifetime in seconds (default: per N)")
    p.add_argument("--steady", type=float, help="steady window in seconds (default: per N)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument(
        "--api",
        choices=("kmock", "real"),
        default="kmock",
        help="kmock (bench.kubeserver) or a real etcd + kube-apiserver from $KUBEBUILDER_ASSETS (bench.realapi)",
    )
    p.add_argument("--out", type=Path, help="result JSON path (default bench/results/<stamp>.json)")
    p.add_argument("--workdir", type=Path, help="keep logs and raw records here (default: a temporary directory)")
    p.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        metavar="RESULT",
        help="run nothing: one table (medians) of the runs in these result files, by N and API",
    )
    p.add_argument(
        "--reanalyse",
        type=Path,
        metavar="WORKDIR",
        help="run nothing: rebuild the results and table from a kept --workdir",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")

    ns = [int(x) for x in (args.n or ("100" if args.quick else "100,1000,5000")).split(",")]
    runs = args.runs or (1 if args.quick else 3)
    subjects = [s for s in SUBJECTS if s in args.subjects.split(",")]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="emailtoken-bench-"))
    command = "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:])
    started = time.time()
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    if args.reanalyse:
        raw = reanalyse(args.reanalyse)
        ns = sorted(int(n) for n in raw)
        subjects = [s for s in SUBJECTS if any(s in by for by in raw.values())]
        runs = max(len(rs) for by in raw.values() for rs in by.values())
        out = args.out or RESULTS / f"{stamp}-reanalysed.json"
    if args.combine:
        raw, keys = combine(args.combine)
        subjects = [s for s in SUBJECTS if any(s in by for by in raw.values())]
        runs = max(len(rs) for by in raw.values() for rs in by.values())
        out = args.out or RESULTS / f"{stamp}-combined.json"
    for n in ns if not (args.reanalyse or args.combine) else ():
        lifetime, steady = plan_for(n, args.quick)
        lifetime, steady = args.lifetime or lifetime, args.steady or steady
        for i in range(runs):
            for subject in subjects:
                params = Params(
                    subject=subject,
                    n=n,
                    lifetime=lifetime,
                    steady=steady,
                    concurrency=args.concurrency,
                    api=args.api,
                    ready_timeout=max(600.0, n * 0.06),
                )
                log.info("run %d/%d: %s N=%d (lifetime %ds, steady %.0fs)", i + 1, runs, subject, n, lifetime, steady)
                t = time.time()
                result = run_once(params, workdir / f"{subject}-{n}-{i + 1}")
                result["wall_s"] = round(time.time() - t, 1)
                raw.setdefault(str(n), {}).setdefault(subject, []).append(result)
                log.info(
                    "  done in %.0fs: ready %.1fs, %s refreshes, expired seen %s",
                    result["wall_s"],
                    result["ready"]["all_ready_s"],
                    result["steady"]["refreshes"],
                    _expired(result),
                )
    summary = {n: {s: medians(rs) for s, rs in by.items()} for n, by in raw.items()}
    text = table(summary, keys if args.combine else ns, subjects)
    document = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": command.strip(),
        "machine": machine(),
        "wall_s": round(time.time() - started, 1),
        "runs_per_configuration": runs,
        "summary": summary,
        "table": text,
        "runs": raw,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1))
    out.with_suffix(".md").write_text(
        f"{document['date']} · {document['machine']} · `{document['command']}` · "
        f"{runs} run(s) per configuration, medians\n\n{text}\n"
    )
    print(text)
    print(f"\nresults: {out}\nwall time: {document['wall_s']:.0f}s")
    if not args.workdir and not args.reanalyse:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
