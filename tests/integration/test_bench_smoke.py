"""The benchmark harness still works: ten tokens, one short run of the operator (bench/README.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench.run import main as bench_main


def test_bench_harness_runs_and_its_numbers_hold_together(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    started = time.monotonic()
    assert (
        bench_main(
            [
                "--n",
                "10",
                "--runs",
                "1",
                "--subjects",
                "operator",
                "--lifetime",
                "20",
                "--steady",
                "14",
                "--out",
                str(out),
                "--workdir",
                str(tmp_path / "work"),
            ]
        )
        == 0
    )
    assert time.monotonic() - started < 60

    document = json.loads(out.read_text())
    assert {"date", "command", "machine", "summary", "table", "runs"} <= set(document)
    assert document["machine"]["cores"] >= 1 and document["machine"]["memory_gib"] > 0
    (run,) = document["runs"]["10"]["operator"]
    assert {"params", "ready", "restart", "idle", "steady", "consumer", "process"} <= set(run)

    # Every token became Ready, and the restart took them all up again without refreshing any.
    assert run["ready"]["refreshes"] >= 10
    assert run["restart"]["coldstart_s"] > 0
    assert run["restart"]["tokens_not_ready_at_end"] == 0
    assert run["restart"]["not_due_refreshes"] == 0 and run["restart"]["early_refreshes"] == 0

    # Refreshes happened in the steady window, each with one token call; the provider saw at most
    # one more call (the restarted operator's OpenID discovery), and nothing refreshed early.
    steady = run["steady"]
    assert steady["refreshes"] >= 5
    assert steady["token_calls"] <= steady["refreshes"]
    assert steady["provider_calls"] <= steady["refreshes"] + 1
    assert steady["lateness_s"]["count"] >= 5 and steady["lateness_s"]["min"] > -0.5
    assert steady["api_writes_per_refresh"] is not None and steady["api_reads_per_refresh"] is not None

    # Nobody ever read an expired token; nothing was written while no token was due.
    assert run["consumer"]["samples"] > 0 and run["consumer"]["expired_seen"] == 0
    assert run["consumer"]["exposure"]["tokens"] == 0
    assert run["idle"]["provider_calls"] == 0 and run["idle"]["token_writes"] == 0
    assert run["process"]["subject_rss_mib"] > 0 and steady["subject_cpu_s"] is not None
    assert "| All Ready after creating N (s) |" in document["table"]

    # New tokens: the Secret watch had listed their consumer Secrets as absent, so the operator
    # created each one without reading it first (only the shared client Secret was read).
    rows = json.loads((tmp_path / "work" / "operator-10-1" / "api-log.json").read_text())
    marks = run["marks"]
    reads = [r[4] for r in rows if r[1:3] == ["get", "secrets"] and marks["create_start"] <= r[0] <= marks["all_ready"]]
    assert set(reads) <= {"app-secret"}, reads
    # The restarted operator read each consumer Secret from its one list of the operator's own
    # Secrets (the metadata watch knew the same versions), not with a GET per token.
    reads = [
        r[4] for r in rows if r[1:3] == ["get", "secrets"] and marks["restart_spawn"] <= r[0] <= marks["idle_start"]
    ]
    assert set(reads) <= {"app-secret"}, reads


def test_bench_baseline_loop_runs(tmp_path: Path) -> None:
    """The naive loop the operator is compared with: it refreshes on its period, keeps consumers
    supplied, and is counted the same way (its steady window has refreshes and API writes)."""
    out = tmp_path / "baseline.json"
    args = ["--n", "10", "--runs", "1", "--subjects", "baseline", "--lifetime", "20", "--steady", "14"]
    assert bench_main([*args, "--out", str(out), "--workdir", str(tmp_path / "work")]) == 0
    (run,) = json.loads(out.read_text())["runs"]["10"]["baseline"]
    steady = run["steady"]
    assert run["ready"]["refreshes"] >= 10
    assert steady["refreshes"] >= 10  # every token, every half lifetime
    assert steady["token_calls"] <= steady["refreshes"] + 10
    assert steady["api_writes_per_refresh"] >= 1
    assert run["consumer"]["samples"] > 0 and run["consumer"]["expired_seen"] == 0
