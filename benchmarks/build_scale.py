"""The build at scale: wall time and memory of every stage of ``cdp build``.

1. ``cdp generate`` a store (default 3,000,000 customers with ~10 events each: a buyer
   share of 0.19 and at most one return visit for those who never buy) and load it
   with ``cdp.ingest.loader.load_file``, as ``benchmarks/build_profiles.py`` does. A
   workdir that already holds ``store.duckdb`` is reused as it is.
2. Run the build and its publish (``build_and_publish``, what ``cdp build`` runs) in a
   child process, so that its memory is its own, with the live database opened by
   ``connect_live`` — DuckDB's ``memory_limit`` and ``temp_directory`` from
   ``[storage]``. For every stage: wall seconds, the process's resident memory at its
   end (VmRSS), the highest sampled within it, the process's peak so far (VmHWM), and
   the most the DuckDB temp directory held while it ran (sampled every 0.5 s).

    python benchmarks/build_scale.py [--customers N] [--workdir DIR]
        [--memory-limit SIZE] [--temp-directory DIR] [--runs N] [--prepare-only]

Run it from the project root so that ``config/cdp.toml`` (or $CDP_CONFIG) is read; the
flags override ``[storage]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

from cdp.ingest.generator import generate_store
from cdp.ingest.loader import load_file
from cdp.ingest.validation import ValidationLimits
from cdp.processing.as_of import end_of_day
from cdp.settings import load_settings
from cdp.storage.database import connect

END = date(2026, 11, 1)
SAMPLE_SECONDS = 0.5
GIB = 1024**3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=3_000_000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--buyer-share", type=float, default=0.19)
    parser.add_argument("--return-visits", type=int, default=1)
    parser.add_argument(
        "--memory-limit", default=None, help="DuckDB memory_limit (default: the config's)"
    )
    parser.add_argument(
        "--temp-directory", default=None, help="DuckDB temp_directory (default: the config's)"
    )
    parser.add_argument("--runs", type=int, default=1, help="builds to run, one after another")
    parser.add_argument("--prepare-only", action="store_true", help="generate and load only")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child is not None:
        _child(args.child, args.memory_limit, args.temp_directory)
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cdp-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "store.duckdb"
    prepare(db, args.customers, args.buyer_share, args.return_visits)
    if args.prepare_only:
        return
    for run in range(1, args.runs + 1):
        print(f"\n=== build run {run} of {args.runs} ===", flush=True)
        command = [sys.executable, __file__, "--child", str(db)]
        for flag, value in (
            ("--memory-limit", args.memory_limit),
            ("--temp-directory", args.temp_directory),
        ):
            if value is not None:
                command += [flag, value]
        print("child: " + " ".join(command), flush=True)
        started = time.perf_counter()
        child = subprocess.Popen(command)
        _, status, usage = os.wait4(child.pid, 0)  # this child's rusage alone
        seconds = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        print(
            f"child exit {code}: {seconds:.1f} s wall (process start included), "
            f"peak RSS by rusage {usage.ru_maxrss / 1024**2:.2f} GiB",
            flush=True,
        )
        if code != 0:
            sys.exit(f"build run {run} failed (exit {code})")


def prepare(db: Path, customers: int, buyer_share: float, return_visits: int) -> None:
    """Generate and load the store unless ``db`` exists; print its shape."""
    source = db.with_name("store.jsonl")
    if not db.exists():
        if not source.exists():  # a file left by an interrupted run is reused
            started = time.perf_counter()
            report = generate_store(
                source,
                customers=customers,
                seed=3,
                end=END,
                buyer_share=buyer_share,
                return_visits=return_visits,
            )
            print(
                f"generate: {report.events:,} events for {customers:,} customers "
                f"in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
        started = time.perf_counter()
        with connect(db) as con:
            stats = load_file(con, source, limits=ValidationLimits())
        seconds = time.perf_counter() - started
        print(
            f"load:     {stats.stored:,} events in {seconds:.0f} s "
            f"({stats.stored / seconds:,.0f}/s)",
            flush=True,
        )
        source.unlink()
    with connect(db) as con:
        [(events, people, users)] = con.sql(
            "SELECT count(*), count(DISTINCT anonymous_id), count(DISTINCT user_id) FROM events"
        ).fetchall()
    print(
        f"store:    {events:,} events from {people:,} visitors ({events / people:.1f} each), "
        f"{users:,} signed-in users; {db.stat().st_size / GIB:.2f} GiB",
        flush=True,
    )


def _status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in bytes."""
    values = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, amount, _unit = line.split()
                values[key.rstrip(":")] = int(amount) * 1024
    return values


def _disk_bytes(path: Path) -> int:
    """Bytes the files under ``path`` take on disk (0 if it does not exist)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # DuckDB deletes as it goes
                total += os.stat(os.path.join(root, name)).st_blocks * 512
    return total


class _Sampler(threading.Thread):
    """Every SAMPLE_SECONDS, the highest RSS and temp-directory size since ``reset``."""

    def __init__(self, temp_directory: Path) -> None:
        super().__init__(daemon=True)
        self.temp_directory = temp_directory
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.rss = self.temp = 0
        self.temp_overall = 0

    def reset(self) -> tuple[int, int]:
        """The highest RSS and temp size since the last reset; start again."""
        self.sample()
        with self.lock:
            result = (self.rss, self.temp)
            self.rss = self.temp = 0
        return result

    def sample(self) -> None:
        rss, temp = _status()["VmRSS"], _disk_bytes(self.temp_directory)
        with self.lock:
            self.rss, self.temp = max(self.rss, rss), max(self.temp, temp)
            self.temp_overall = max(self.temp_overall, temp)

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_SECONDS):
            self.sample()


def _child(db: Path, memory_limit: str | None, temp_directory: str | None) -> None:
    """One build and publish, with a line per stage."""
    from cdp.processing.jobs.pipeline import STAGES, build_and_publish
    from cdp.processing.segmentation.config import load_segment_config
    from cdp.storage.database import connect_live

    overrides = {
        "storage": {
            "db_path": str(db),
            "memory_limit": memory_limit,
            "temp_directory": temp_directory,
        }
    }
    settings = load_settings(None, overrides)
    segments = load_segment_config(settings)
    begun = time.perf_counter()
    start_rss = _status()["VmRSS"]
    con = connect_live(settings.storage)
    connected = time.perf_counter()
    [(limit, temp, threads, version)] = con.sql(
        "SELECT current_setting('memory_limit'), current_setting('temp_directory'), "
        "current_setting('threads'), version()"
    ).fetchall()
    temp_path = Path(temp)
    if not temp_path.is_absolute():
        temp_path = Path.cwd() / temp_path
    print(
        f"settings: [storage] memory_limit = {settings.storage.memory_limit!r} "
        f"(DuckDB memory_limit {limit}), temp_directory = "
        f"{settings.storage.temp_directory!r} (DuckDB {temp}); threads {threads}; "
        f"DuckDB {version}; {len(segments.segments)} segments; as of {END}",
        flush=True,
    )
    sampler = _Sampler(temp_path)
    sampler.start()
    rows: list[tuple[str, float, int, int, int, int]] = []
    status = _status()  # the open (and migrations) as a stage
    rss, hwm = status["VmRSS"], status["VmHWM"]
    rows.append(("connect", connected - begun, rss, rss, hwm, 0))
    sampler.reset()
    current = ["", time.perf_counter()]

    def end_stage() -> None:
        if current[0]:
            stage_rss, stage_temp = sampler.reset()
            status = _status()
            rows.append(
                (
                    current[0],
                    time.perf_counter() - current[1],
                    status["VmRSS"],
                    max(stage_rss, status["VmRSS"]),
                    status["VmHWM"],
                    stage_temp,
                )
            )
            _print_row(rows[-1])

    def progress(stage: str) -> None:
        end_stage()
        current[0], current[1] = stage, time.perf_counter()

    _print_header()
    _print_row(rows[0])
    error: BaseException | None = None
    try:
        published = build_and_publish(con, settings, segments, end_of_day(END), progress=progress)
    except BaseException as exc:
        error = exc
    finally:
        end_stage()
        sampler.stop.set()
        con.close()
    total = time.perf_counter() - begun
    status = _status()
    print(
        f"{'total':<18}{total:>8.1f}{_g(status['VmRSS'])}{'':>10}{_g(status['VmHWM'])}"
        f"{_g(sampler.temp_overall)}",
        flush=True,
    )
    if error is not None:
        print(f"FAILED in stage {current[0]!r}: {type(error).__name__}: {error}", flush=True)
        raise SystemExit(1) from error
    build = published.build
    print(
        f"build {build.build_id}: {build.customers:,} customers, "
        f"{build.memberships:,} memberships; build {build.seconds:.1f} s "
        f"(stages {', '.join(STAGES)}); RSS before connecting {_g(start_rss).strip()}; "
        f"peak RSS {status['VmHWM'] / GIB:.2f} GiB"
    )
    print(
        "json: "
        + json.dumps(
            {
                "memory_limit": limit,
                "total_seconds": round(total, 1),
                "peak_rss_gib": round(status["VmHWM"] / GIB, 2),
                "customers": build.customers,
                "stages": [
                    dict(
                        zip(
                            ("stage", "seconds", "rss_end", "rss_max", "hwm", "temp_max"),
                            row,
                            strict=True,
                        )
                    )
                    for row in rows
                ],
            }
        ),
        flush=True,
    )


def _g(amount: int) -> str:
    return f"{amount / GIB:>10.2f}"


def _print_header() -> None:
    print(
        f"{'stage':<18}{'seconds':>8}{'RSS end':>10}{'RSS max':>10}{'VmHWM':>10}{'temp max':>10}"
        "   (GiB; RSS max sampled in the stage, VmHWM the process's peak so far)",
        flush=True,
    )


def _print_row(row: tuple[str, float, int, int, int, int]) -> None:
    stage, seconds, rss, stage_max, hwm, temp = row
    print(f"{stage:<18}{seconds:>8.1f}{_g(rss)}{_g(stage_max)}{_g(hwm)}{_g(temp)}", flush=True)


if __name__ == "__main__":
    main()
