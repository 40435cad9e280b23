"""Which share of benchmark sentences describe what one frame shows, and which describe a change over time.

    python -m benchmarks.text_kinds [--annotations DIR]     # DIR: ../shared/data layout (default: tests/data)

The demo dataset (``shared.demo_videos``) mixes its two kinds of story at the share measured here on the
MSRVTT 1k-A test sentences and the DiDeMo test + val descriptions (docs/method.md, "What the demo's texts
are like"). The rule is a keyword rule, written down so that anyone can recount:

    a sentence describes a CHANGE when it contains one of ``CHANGE_WORDS`` (a whole word, any case):
    temporal connectives (then, after, before, until, finally, again, first, ...), beginnings and ends
    (starts, stops, ...), changes of state (turns, becomes, appears, opens, falls, ...) and motion with
    an end point (enters, leaves, comes, away, towards, into, out of, onto, ...);
    every other sentence describes what a single frame shows (STATIC).

It errs both ways ("talks into a megaphone" counts as a change, "a man gets shot" as static); read the
counts as the rough proportions they are, not as a classifier's output.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHANGE_WORDS = (
    # temporal connectives and order
    "then after afterwards before until later finally eventually again first "
    # beginnings and ends
    "begins begin beginning starts start starting stops stop stopping ends finishes "
    # changes of state
    "turns turn turning turned becomes become becoming changes change changing appears appear appearing "
    "disappears disappear disappearing vanishes emerges emerging opens opening closes closing "
    "falls fall falling drops dropping lands "
    # motion with an end point
    "enters enter entering leaves leave leaving exits exit exiting arrives arrive arriving returns "
    "return returning comes come coming goes moves move moving moved away towards toward into across past onto "
    "pans zooms"
).split()
CHANGE_PHRASES = ("out of", "stands up", "sits down", "picks up", "puts down", "gets up")
_CHANGE = re.compile(r"\b(" + "|".join(map(re.escape, CHANGE_WORDS + list(CHANGE_PHRASES))) + r")\b")
SOURCES = {  # benchmark: files under the annotation folder (the shared/data layout)
    "msrvtt": ("msrvtt/MSRVTT_JSFUSION_test.csv",),
    "didemo": ("didemo/test_data.json", "didemo/val_data.json"),
}


def text_kind(sentence: str) -> str:
    """``"change"`` when the sentence names a change over time (module docstring), else ``"static"``."""
    return "change" if _CHANGE.search(sentence.lower()) else "static"


def sentences(root: Path, benchmark: str) -> list[str]:
    """Every sentence of the benchmark's files under ``root``: MSRVTT's ``sentence`` column, DiDeMo's
    ``description`` of every entry (one per annotated moment)."""
    out = []
    for name in SOURCES[benchmark]:
        path = Path(root) / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such annotation file (expected the shared/data layout)")
        if path.suffix == ".csv":
            with path.open(newline="") as f:
                out += [row["sentence"] for row in csv.DictReader(f)]
        else:
            out += [entry["description"] for entry in json.loads(path.read_text())]
    return out


def count_kinds(root: Path) -> dict[str, dict[str, int]]:
    """``{benchmark: {"static": n, "change": n, "total": n}}`` over the files of :data:`SOURCES`."""
    counts = {}
    for benchmark in SOURCES:
        found = Counter(text_kind(s) for s in sentences(root, benchmark))
        counts[benchmark] = {
            "static": found["static"],
            "change": found["change"],
            "total": found["static"] + found["change"],
        }
    return counts


def change_share(counts: dict[str, dict[str, int]]) -> float:
    """The mix the demo uses: the mean of the benchmarks' change shares (each benchmark weighs the same)."""
    return sum(c["change"] / c["total"] for c in counts.values()) / len(counts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--annotations",
        type=Path,
        default=REPO / "tests" / "data",
        help="annotation folder in the shared/data layout (default: the repository's excerpts)",
    )
    args = p.parse_args(argv)
    counts = count_kinds(args.annotations)
    for benchmark, c in counts.items():
        print(
            f"{benchmark:<7} {c['total']:>5} sentences: {c['static']:>5} static, {c['change']:>5} change "
            f"({100 * c['change'] / c['total']:.1f} % change)"
        )
    print(f"mean change share: {100 * change_share(counts):.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
