"""``python -m loadtests.reliability faults|soak``: run, then write results and docs/reliability.md's tables."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import sys
import tempfile
from pathlib import Path

from loadtests.reliability.faults import FAULTS, FaultRun, run_faults
from loadtests.reliability.report import write_faults, write_soak
from loadtests.reliability.soak import SoakRun, run_soak

FAULT_DEFAULTS = FaultRun()
SOAK_DEFAULTS = SoakRun()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.reliability", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    faults = commands.add_parser("faults", help="the fault table (about 6 minutes)")
    faults.add_argument("--only", action="append", choices=FAULTS, help="run only this fault (repeatable)")
    faults.add_argument("--rate", type=float, default=FAULT_DEFAULTS.rate)
    faults.add_argument("--duration", type=float, default=FAULT_DEFAULTS.duration_s)
    faults.add_argument("--fault-at", type=float, default=FAULT_DEFAULTS.fault_at_s)
    faults.add_argument("--deadline", type=float, default=FAULT_DEFAULTS.deadline_s)
    faults.add_argument("--no-docs", action="store_true", help="print the rows; write no files")
    soak = commands.add_parser("soak", help="constant load; memory, fds and errors over time")
    soak.add_argument("--minutes", type=float, default=SOAK_DEFAULTS.minutes)
    soak.add_argument("--rate", type=float, default=SOAK_DEFAULTS.rate)
    soak.add_argument("--sample-every", type=float, default=SOAK_DEFAULTS.sample_every_s)
    soak.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = "python -m loadtests.reliability " + shlex.join(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="natriton-reliability-") as workdir:
        if args.command == "faults":
            settings = FaultRun(
                rate=args.rate, duration_s=args.duration, fault_at_s=args.fault_at, deadline_s=args.deadline
            )
            rows, meta = asyncio.run(run_faults(Path(workdir), tuple(args.only or FAULTS), settings))
            result = [row.as_dict() for row in rows]
            if not args.no_docs:
                write_faults(result, meta, command)
            for row in rows:
                print(f"{row.fault}: sent {row.sent} ok {row.ok} errors {row.typed_errors} lost {row.lost} "
                      f"duplicated {row.duplicated}")  # fmt: skip
            return 0 if all(row.lost == 0 and row.duplicated == 0 for row in rows) else 1
        soak_settings = SoakRun(minutes=args.minutes, rate=args.rate, sample_every_s=args.sample_every)
        soaked = asyncio.run(run_soak(Path(workdir), soak_settings))
        if not args.no_docs:
            write_soak(soaked, command)
        print(soaked["summary"])
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
