"""CSV import rate: ``python bench/import.py [--rows 1000000] [--runs 3]``.

Writes a CSV of ``--rows`` readers (name, two tags, a time zone, two attribute columns), about 1%
of them malformed and 1% repeating an earlier address, then runs the real command,
``newsletter subscribers import FILE --status confirmed``, as a separate process into a fresh
SQLite file, once per run. Prints each run's wall time, rows per second (every row of the file
counts, the bad and repeated ones included: each is read and validated), CPU seconds (user +
system, the command and its reader process), the peak RSS of the largest of them and the load
average, then the medians. The files go to ``bench/out/`` (ignored by git).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
ZONES = ["Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC", ""]
STATUS = ("--status", "confirmed")
TAGS = ["news;vip", "news", "gut-health|recipes", ""]


def write_csv(path: Path, rows: int, seed: int = 7) -> tuple[int, int]:
    """The benchmark file; returns (bad rows, repeated rows) written."""
    rng = random.Random(seed)
    bad = repeated = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("email,name,tags,timezone,company,source\n")
        for i in range(rows):
            roll = rng.random()
            if roll < 0.01:
                bad += 1
                out.write(f"reader{i}.example.com,No At Sign,,,,\n")
            elif roll < 0.02 and i > 0:
                repeated += 1
                earlier = rng.randrange(i)
                out.write(f"Reader.{earlier}@Mail{earlier % 89}.example.com,Again,,,,\n")
            else:
                zone, tags = ZONES[i % len(ZONES)], TAGS[i % len(TAGS)]
                out.write(
                    f"Reader.{i}@Mail{i % 89}.example.com,Reader {i},{tags},{zone},"
                    f"Company {i % 1000},webinar-{i % 7}\n"
                )
    return bad, repeated


def run_import(csv_path: Path, database: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one ``newsletter subscribers import`` into a fresh SQLite file."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    env = {**os.environ, "NEWSLETTER_DATABASE_URL": f"sqlite:///{database}"}
    # Migrations first, so that the timed run is the import alone.
    subprocess.run(
        [sys.executable, "-m", "newsletter", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", "subscribers", "import", str(csv_path), *STATUS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"the import failed:\n{result.stderr[-2000:]}")
    print(f"    {result.stdout.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    csv_path = OUT / f"import-{args.rows}.csv"
    if not csv_path.exists():
        bad, repeated = write_csv(csv_path, args.rows)
        print(f"wrote {csv_path} ({bad} bad rows, {repeated} repeated addresses)")
    size = csv_path.stat().st_size / 1e6
    print(f"importing {args.rows} rows ({size:.0f} MB) as confirmed into a fresh SQLite file")
    rates, cpus = [], []
    for run in range(1, args.runs + 1):
        seconds, cpu = run_import(csv_path, OUT / "import-bench.db")
        rates.append(args.rows / seconds)
        cpus.append(cpu)
        # ru_maxrss of the children: the largest process waited for so far (KiB on Linux).
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        print(
            f"run {run}: {seconds:.1f} s, {rates[-1]:,.0f} rows/s; {cpu:.1f} CPU s "
            f"({args.rows / cpu:,.0f} rows per CPU second); peak RSS so far {peak:.0f} MiB; "
            f"load average {load}"
        )
    print(
        f"median: {statistics.median(rates):,.0f} rows/s, {statistics.median(cpus):.1f} CPU s "
        f"over {args.runs} runs"
    )


if __name__ == "__main__":
    main()
