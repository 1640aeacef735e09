"""Recorded figures: the one place a published figure lives.

A benchmark script given `--record` writes `benchmarks/results/<name>.json`: its tables, the exact command, the
date, the machine, the load average and whether the weights were random. The docs site (docs/hooks.py) renders
these files where a page says `<!-- figures NAME -->`, so a figure in the docs is always one a script produced,
never one typed by hand. Rerun the command printed under a table to refresh it.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from smoothdino.core.files import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Table:
    caption: str
    columns: list[str]
    rows: list[list]


@dataclass
class Record:
    name: str  # the file's stem, and the docs' `<!-- figures NAME -->`
    question: str  # what the figures answer, one sentence
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    random_weights: bool | None = True  # None: no network ran, so no weights played a part
    command: str = ""
    date: str = ""
    machine: str = ""
    load_average: list[float] = field(default_factory=list)


def machine_line() -> str:
    from smoothdino.edge.machine.environment import device_description

    return f"{device_description()}, {os.cpu_count()} CPUs, {platform.system()} {platform.machine()}"


def add_record_option(parser, records: str) -> None:
    """`--record [FOLDER]`: also write the tables as records (default folder: benchmarks/results, the docs' source)."""
    parser.add_argument("--record", nargs="?", const=RESULTS, type=Path, metavar="FOLDER",
                        help=f"also write {records} into benchmarks/results/ (or FOLDER) for the docs")


def load_note(before: tuple[float, ...] | list[float]) -> str:
    """What else the machine was doing as the run began: its 1-minute load average then, against its CPUs (the
    record's own `load_average` is taken at the end and includes the run itself). Call `os.getloadavg()` first thing."""
    cpus = os.cpu_count() or 1
    busy = before[0] >= 0.5 * cpus
    return (f"1-minute load average as the run began: {before[0]:.2f} on {cpus} CPUs"
            + (" (a busy machine: other work shared the CPUs, so times are pessimistic)" if busy
               else " (little else was running then)")
            + ".")


def command_line(module: str, argv: list[str] | None) -> str:
    """How to make the record again: the script's module and its arguments, `--record` without a folder."""
    given, kept = list(sys.argv[1:] if argv is None else argv), []
    while given:
        arg = given.pop(0)
        if arg == "--record":
            if given and not given[0].startswith("-"):
                given.pop(0)  # the folder (tests write elsewhere): the docs' copy goes to benchmarks/results
            continue
        kept.append(arg if not arg.startswith("--record=") else None)
    return " ".join(["python -m", module, *(shlex.quote(a) for a in kept if a is not None), "--record"])


def write_record(record: Record, folder: Path = RESULTS, command: str = "") -> Path:
    """Stamp the record with the command that makes it again (`command_line`), the date, the machine and the load,
    and write it."""
    record.command = command or record.command
    record.date = record.date or datetime.date.today().isoformat()
    record.machine = record.machine or machine_line()
    record.load_average = record.load_average or [round(v, 2) for v in os.getloadavg()]
    path = Path(folder) / f"{record.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(asdict(record), indent=1, ensure_ascii=False) + "\n")
    print(f"recorded: {path}")
    return path


def read_record(path: Path) -> Record:
    data = json.loads(Path(path).read_text())
    data["tables"] = [Table(**t) for t in data["tables"]]
    return Record(**data)


def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value).replace("|", "\\|")  # a bar would end the cell


def record_markdown(record: Record) -> str:
    """The tables as Markdown, each under its caption, then how they were made (command, machine, weights)."""
    lines: list[str] = []
    for table in record.tables:
        lines += [f"**{table.caption}**", "", "| " + " | ".join(cell(c) for c in table.columns) + " |",
                  "|" + "---|" * len(table.columns)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.rows]
        lines.append("")
    lines += [f"- {note}" for note in record.notes]
    weights = {True: "**random weights** (speed and arithmetic, not accuracy)", False: "the official weights",
               None: "no network ran (weights play no part)"}[record.random_weights]
    load = ", load average " + " / ".join(f"{v:.2f}" for v in record.load_average) if record.load_average else ""
    lines += [f"- Measured {record.date} on {record.machine}{load}; {weights}.",
              f"- Reproduce: `{record.command}`", ""]
    return "\n".join(lines)
