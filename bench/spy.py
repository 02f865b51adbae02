"""``python -m bench.spy``: a benchmark run with the subject's steady window profiled by py-spy.

``python -m bench.spy --subject operator --n 1000 --out DIR [bench.run options]`` runs
``bench.run`` (one run, ``--workdir DIR/work``) and, when the steady window starts,
attaches ``py-spy record --gil --format raw`` to the subject for the length of the window
(only samples that hold the GIL: CPU the process spends itself). Then it prints the
functions with the largest share of samples, whole (``total``: in the stack) and own
(``self``: at the top), and writes them to ``DIR/profile-<subject>.txt`` with the raw
stacks next to it (load them into speedscope or inferno for a flame graph).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.procs import REPO


def _package(frame: str) -> str:
    """``kopf``, ``emailtoken``, ``asyncio``, ... from ``name (path/file.py)``."""
    path = frame.rpartition("(")[2].rstrip(")")
    return path.split("/")[0] if "/" in path else path


def summarise(raw: Path, top: int = 40) -> str:
    """Per function (``name (file)``): share of samples in the stack and at its top."""
    total: Counter[str] = Counter()
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        samples += n
        for frame in set(frames):
            total[frame] += n
        own[frames[-1]] += n
        packages[_package(frames[-1])] += n
    lines = [f"{samples} samples (GIL held)", "", "self % by package"]
    lines += [f"{100 * c / samples:6.1f}  {p}" for p, c in packages.most_common()]
    lines += ["", "total %  function (file)"]
    lines += [f"{100 * c / samples:6.1f}  {f}" for f, c in total.most_common(top)]
    lines += ["", "self %   function (file)"]
    lines += [f"{100 * c / samples:6.1f}  {f}" for f, c in own.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark once and profile the subject's steady window."""
    p = argparse.ArgumentParser(prog="python -m bench.spy", description=__doc__.splitlines()[0])
    p.add_argument("--subject", default="operator", choices=("operator", "baseline"))
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rate", type=int, default=200, help="samples per second")
    args, rest = p.parse_known_args(argv)
    if not (Path(sys.executable).parent / "py-spy").exists():
        sys.exit("bench.spy needs py-spy: .venv/bin/python -m pip install -e '.[bench]'")
    work = args.out / "work"
    command = [sys.executable, "-m", "bench.run", "--n", str(args.n), "--runs", "1", "--subjects", args.subject]
    command += ["--workdir", str(work), "--out", str(args.out / "result.json"), *rest]
    bench = subprocess.Popen(command, cwd=REPO)
    phase = work / f"{args.subject}-{args.n}-1" / "phase"
    raw = args.out / f"profile-{args.subject}.raw"
    while bench.poll() is None:
        text = phase.read_text().split() if phase.exists() else []
        if text and text[0] == "steady_start":
            break
        time.sleep(0.2)
    else:
        return bench.returncode or 1
    steady = _steady_seconds(rest, args.n)
    spy = [
        str(Path(sys.executable).parent / "py-spy"),
        "record",
        "--gil",
        "--format",
        "raw",
        "-r",
        str(args.rate),
        "-d",
        str(int(steady)),
    ]
    subprocess.run([*spy, "-o", str(raw), "--pid", text[1]], check=False)
    code = bench.wait()
    report = summarise(raw)
    (args.out / f"profile-{args.subject}.txt").write_text(report + "\n")
    print(report)
    return code


def _steady_seconds(rest: list[str], n: int) -> float:
    from bench.run import plan_for

    if "--steady" in rest:
        return float(rest[rest.index("--steady") + 1])
    return plan_for(n, "--quick" in rest)[1]


if __name__ == "__main__":
    sys.exit(main())
