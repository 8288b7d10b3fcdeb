"""A seeded sweep of random damage to every file of a catalog: never a crash, a hang, a foreign exception, or a
wrong answer without an error.

Each case damages one file of a copy of test_corruption's template catalog
in one way (a flipped bit, a truncation, a zeroed or garbage range, deletion)
at places drawn from a seeded generator, and opens it in a child process as
test_corruption does (read-only ProductSearch, read-only Catalog, writer),
searching, identifying and listing when the open succeeds. Each case and mode
ends as one of:

- harmless: it answers exactly as the intact catalog does (damage in unused
  bytes, or repaired by the writer);
- refused: a SnapmatchError (the catalog says it is damaged, or cannot be read);
- reported: it answers without what is damaged and logs a warning naming it
  (a stored vector that is not finite and of unit length is left out of search);
- and the failures: crash (a signal), hang, foreign (an exception that is not
  a SnapmatchError), wrong (answers that differ from the intact catalog's, with
  no error).

CI runs SWEEP_CASES_PER_KIND cases per file and kind (a few hundred in all);
SNAPMATCH_SWEEP_CASES=200 (and SNAPMATCH_SWEEP_SEED) runs thousands:

    SNAPMATCH_SWEEP_CASES=200 python -m pytest tests/sdk/catalog/test_corruption_sweep.py -s
"""

from __future__ import annotations

import collections
import os
import random
import shutil
from pathlib import Path

import pytest

from tests.sdk.catalog.test_corruption import (  # noqa: F401 (fixture)
    HUNG,
    MODES,
    Outcome,
    run_children,
    template,
)

SWEEP_CASES_PER_KIND = int(os.environ.get("SNAPMATCH_SWEEP_CASES", "20"))
SEED = int(os.environ.get("SNAPMATCH_SWEEP_SEED", "20261202"))
KINDS = ("bitflip", "truncate", "zero", "garbage", "delete")
FAILURES = ("crash", "hang", "foreign", "wrong")


def damage(path: Path, kind: str, rng: random.Random) -> str:
    """Damage one file in place; a description of what was done."""
    size = path.stat().st_size
    if kind == "delete":
        path.unlink()
        return "deleted"
    if size == 0:
        return "empty file left as is"
    data = bytearray(path.read_bytes())
    if kind == "bitflip":
        offset, bit = rng.randrange(size), rng.randrange(8)
        data[offset] ^= 1 << bit
        what = f"bit {bit} of byte {offset}"
    elif kind == "truncate":
        keep = rng.randrange(size)
        del data[keep:]
        what = f"truncated to {keep} of {size} bytes"
    else:
        length = min(size, rng.choice((1, 8, 64, 512, 4096)))
        offset = rng.randrange(size - length + 1)
        data[offset:offset + length] = bytes(length) if kind == "zero" else rng.randbytes(length)
        what = f"{kind} over bytes {offset}-{offset + length}"
    path.write_bytes(bytes(data))
    return what


def classify(outcome: Outcome, intact: dict[str, dict]) -> dict[str, str]:
    """mode -> harmless / refused / crash / hang / foreign / wrong."""
    if outcome.returncode < 0:
        kind = "hang" if outcome.returncode == HUNG else "crash"
        return {mode: kind for mode in MODES}
    verdict = {}
    for mode in MODES:
        result = outcome.results.get(mode)
        if result is None:
            verdict[mode] = "crash"
        elif not result["ok"]:
            verdict[mode] = "refused" if result["snapmatch"] else "foreign"
        else:
            answered = {key: value for key, value in result.items() if key not in ("stats", "reported")}
            expected = {key: value for key, value in intact[mode].items() if key not in ("stats", "reported")}
            if answered == expected:
                verdict[mode] = "harmless"
            else:  # damage the catalog logged (a damaged vector left out of search) is reported, not silent
                verdict[mode] = "reported" if result.get("reported") else "wrong"
    return verdict


@pytest.fixture(scope="module")
def sweep(template, tmp_path_factory):  # noqa: F811 (pytest passes the imported fixture)
    root = tmp_path_factory.mktemp("sweep")
    rng = random.Random(SEED)
    files = sorted(path.name for path in template.folder.iterdir() if path.is_file() and path.name != "writer.lock")
    jobs: dict[str, Path] = {}
    for name in ["intact"] + [f"{file} {kind} {n}" for file in files for kind in KINDS
                              for n in range(1 if kind == "delete" else SWEEP_CASES_PER_KIND)]:
        folder = root / f"case-{len(jobs):04d}" / "catalog"
        shutil.copytree(template.folder, folder)
        if name != "intact":
            file, kind, _ = name.split(" ")
            name = f"{name}: {damage(folder / file, kind, rng)}"
        jobs[name] = folder
    outcomes = run_children(jobs, template.queries, root)
    intact = outcomes.pop("intact")
    assert intact.returncode == 0 and all(intact.results[mode]["ok"] for mode in MODES), intact.stderr[-3000:]
    return {name: (classify(outcome, intact.results), outcome) for name, outcome in outcomes.items()}


@pytest.mark.slow
def test_no_damage_crashes_hangs_raises_a_foreign_error_or_answers_wrong(sweep):
    table: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    failures = []
    for name, (verdict, outcome) in sweep.items():
        file, kind = name.split(" ")[:2]
        for mode, result in verdict.items():
            table[(file, kind)][result] += 1
            if result in FAILURES:
                detail = outcome.results.get(mode, {}).get("message") or outcome.stderr[-600:]
                failures.append(f"{name} [{mode}]: {result} {detail}")
    print(f"\ncorruption sweep, seed {SEED}, {len(sweep)} cases x {len(MODES)} modes:")
    for (file, kind), counts in sorted(table.items()):
        print(f"  {file:<28} {kind:<9} " + ", ".join(f"{key} {value}" for key, value in sorted(counts.items())))
    assert len(sweep) >= 100
    assert not failures, "\n".join(failures[:30])
