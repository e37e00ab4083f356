"""`cdp generate` throughput: events per second written, this tree's generator vs. a baseline.

For each customer count (default 100,000 and 1,000,000) it writes the seeded store with
the generator in this tree and with the generator as it was at a baseline git revision
(loaded from ``git show REV:ingest/generator.py`` into a throwaway module, so no checkout
is touched), prints both rates and their ratio, and with ``--check`` whether the two files
are the same bytes (sha256, computed outside the timed part).

    python benchmarks/generate_throughput.py [--customers N ...] [--seed N]
        [--baseline REV | --no-baseline] [--check] [--keep DIR]

The default baseline, 832715a, is the last revision of the one-``json.dumps``-per-event
generator. The files go to a temporary folder and are deleted after each measurement
(1M customers is ~18M events and ~6.5 GB) unless ``--keep`` names a folder.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from types import ModuleType

from cdp.ingest.generator import generate_store

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = "832715a"
END = date(2026, 1, 1)


def load_baseline(rev: str, folder: Path) -> ModuleType:
    """The generator module as it was at ``rev``, imported from a copy in ``folder``."""
    source = subprocess.run(
        ["git", "show", f"{rev}:ingest/generator.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = folder / "baseline_generator.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_generator", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def measure(generate, path: Path, customers: int, seed: int) -> tuple[int, float, int]:
    """(events, seconds, bytes) for one store written by ``generate``."""
    started = time.perf_counter()
    report = generate(path, customers=customers, seed=seed, end=END)
    elapsed = time.perf_counter() - started
    return report.events, elapsed, path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, metavar="REV")
    parser.add_argument("--no-baseline", action="store_true", help="time this tree only")
    parser.add_argument("--check", action="store_true", help="compare the files' sha256")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the files here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cdp-generate-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        baseline = None if args.no_baseline else load_baseline(args.baseline, Path(tmp))
        for customers in args.customers:
            runs = [("current", generate_store)]
            if baseline is not None:
                runs.append((f"baseline {args.baseline}", baseline.generate_store))
            rates, digests = {}, {}
            for name, generate in runs:
                path = folder / f"{name.split()[0]}-{customers}.jsonl"
                events, seconds, size = measure(generate, path, customers, args.seed)
                rates[name] = events / seconds
                print(
                    f"{customers:>10,} customers  {name:<18} {events:>12,} events "
                    f"in {seconds:7.1f} s = {rates[name]:>9,.0f} events/s "
                    f"({size / seconds / 1e6:5.0f} MB/s)",
                    flush=True,
                )
                if args.check:
                    digests[name] = sha256(path)
                if args.keep is None:
                    path.unlink()
            if baseline is not None:
                ratio = rates["current"] / rates[runs[1][0]]
                print(f"{customers:>10,} customers  current / baseline = {ratio:.2f}x")
            if args.check and len(digests) == 2:
                same = len(set(digests.values())) == 1
                verdict = "byte-identical" if same else "DIFFERENT"
                print(f"{customers:>10,} customers  files {verdict} (sha256 {digests['current']})")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
