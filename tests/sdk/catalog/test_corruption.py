"""Damaged catalogs: every open raises a SnapmatchError (never a crash), and the catalog can be repaired.

Each damaged catalog is opened in a child process, so a segfault shows up as
a negative return code instead of killing pytest. The child opens it three
ways in turn (ProductSearch read-only, Catalog read-only, ProductSearch as the
writer, which also runs crash recovery), and when an open succeeds it also
searches, lists products and identifies, since damage may surface only then.
The children run once per module, two at a time, each taking a share of the
cases (a crash is charged to the case in progress; a new child takes the
rest), so that importing snapmatch is paid twice, not once per case.

Repair: a damaged base is rebuilt from the vectors SQLite keeps
(`Catalog.open(folder, rebuild_base=True)`); a damaged manifest is restored
from a backup copy, which must then answer exactly as before the damage (the
failed opens must not have made things worse).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest

from snapmatch import ProductSearch
from snapmatch.sdk.catalog.catalog import Catalog
from tests.model_factory import product_image

CATALOG_PRODUCTS = range(40)  # two photos each (variants 0 and 2), then compacted
DELTA_PRODUCTS = range(40, 43)  # added after the compaction
REMOVED = (5, 41)  # one from the base (a tombstone), one from the delta
QUERY_PRODUCTS = (0, 5, 17, 39, 40, 41, 42, 60)  # known, removed, known..., unknown (60)

CHILD = r"""
import json, sys
job = json.loads(open(sys.argv[1]).read())
queries = job["queries"]
import snapmatch
from snapmatch.sdk.catalog.catalog import Catalog

import logging
reported = []  # what snapmatch logged about damage during one attempt: damage it reports is not silent
class Collect(logging.Handler):
    def emit(self, record):
        reported.append(record.getMessage())
logging.getLogger("snapmatch").addHandler(Collect(logging.WARNING))

def attempt(folder, mode):
    reported.clear()
    result = _attempt(folder, mode)
    return {**result, "reported": list(reported)} if reported else result

def _attempt(folder, mode):
    try:
        if mode == "catalog":
            with Catalog.open(folder, readonly=True) as catalog:
                return {"ok": True, "products": [p.id for p in catalog.products()], "stats": catalog.stats()}
        with snapmatch.ProductSearch.open(folder, readonly=(mode == "reader"), threads=1) as search:
            answers = [[m.product_id for m in r] for r in search.search(queries, k=3)]
            identified = [m.product_id if m else None for m in search.identify(queries)]
            return {"ok": True, "answers": answers, "identified": identified,
                    "products": [p.id for p in search.products()]}
    except Exception as exc:
        return {"ok": False, "type": type(exc).__name__, "snapmatch": isinstance(exc, snapmatch.SnapmatchError),
                "message": str(exc)}

for name, folder in job["cases"]:
    print(json.dumps({"case": name, "begin": True}), flush=True)
    if name == "harness: segfault probe":
        import ctypes
        ctypes.string_at(0)  # a real SIGSEGV, to prove the harness reports one
    for mode in ("reader", "catalog", "writer"):
        print(json.dumps({"case": name, "mode": mode, **attempt(folder, mode)}), flush=True)
"""

MODES = ("reader", "catalog", "writer")


# --- the catalog every case damages -----------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    folder: Path
    queries: list[str]  # photo paths


@pytest.fixture(scope="module")
def template(tmp_path_factory, model_path) -> Template:
    root = tmp_path_factory.mktemp("template")
    folder = root / "catalog"
    # adapt=False: identify() answers here follow the model card's threshold on raw cosines
    # (damaged adaptation files are tested in test_adaptation.py).
    with ProductSearch.create(folder, model=model_path, adapt=False) as search:
        for product in CATALOG_PRODUCTS:
            search.add_product(f"p{product}", [product_image(product), product_image(product, variant=2)])
        search.compact()
        for product in DELTA_PRODUCTS:
            search.add_product(f"p{product}", [product_image(product)])
        for product in REMOVED:
            search.remove_product(f"p{product}")
        stats = search.catalog.stats()
        assert stats["base_vectors"] and stats["delta_vectors"] and stats["tombstones"]
    queries = []
    for product in QUERY_PRODUCTS:
        path = root / f"query-{product}.png"
        cv2.imwrite(str(path), product_image(product, variant=1))
        queries.append(str(path))
    return Template(folder, queries)


def base_file(folder: Path) -> Path:
    (path,) = folder.glob("base-*.usearch")
    return path


def usearch_header(folder: Path) -> int:
    """Offset of usearch's own 64-byte header (after the vectors matrix): magic, version, kinds, counts, dim."""
    offset = base_file(folder).read_bytes().find(b"usearch")
    assert offset > 0
    return offset


def flip_byte(path: Path, offset: int, mask: int = 0xFF) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def truncate(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


def edit_manifest(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        manifest = json.loads((folder / "manifest.json").read_text())
        change(manifest)
        (folder / "manifest.json").write_text(json.dumps(manifest))

    return apply


def garbage_page(table: str) -> Callable[[Path], None]:
    """Overwrite the root page of one table of catalog.sqlite with seeded random bytes."""

    def apply(folder: Path) -> None:
        import sqlite3

        path = folder / "catalog.sqlite"
        conn = sqlite3.connect(path)
        page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.close()
        data = bytearray(path.read_bytes())
        data[(page - 1) * size:page * size] = np.random.default_rng(page).integers(0, 256, size, np.uint8).tobytes()
        path.write_bytes(bytes(data))

    return apply


CORRUPT = "CatalogCorruptError"
MANIFEST_TYPES = (
    "read_manifest (manifest.py:78-83) checks only dim and model_id; a field of the wrong type reaches "
    "a TypeError (or usearch) instead of CatalogCorruptError, or opens and answers wrongly "
    "(base.max_key 'many': key > 'many' is never true in SQLite, so every delta product vanishes)"
)

# name -> (damage, expected error per mode, or one name for all modes)
CASES: dict[str, tuple] = {
    # the base index file
    "base truncated to half": (lambda f: truncate(base_file(f), base_file(f).stat().st_size // 2), CORRUPT),
    "base truncated by one byte": (lambda f: truncate(base_file(f), base_file(f).stat().st_size - 1), CORRUPT),
    "base emptied": (lambda f: truncate(base_file(f), 0), CORRUPT),
    "base with bytes appended": (lambda f: base_file(f).write_bytes(base_file(f).read_bytes() + b"\0" * 64), CORRUPT),
    "base deleted": (lambda f: base_file(f).unlink(), CORRUPT),
    "base vectors-matrix header flipped": (lambda f: flip_byte(base_file(f), 0), CORRUPT),
    "base usearch magic flipped": (lambda f: flip_byte(base_file(f), usearch_header(f)), CORRUPT),
    "base usearch major version flipped": (lambda f: flip_byte(base_file(f), usearch_header(f) + 7), CORRUPT),
    "base scalar kind flipped": (lambda f: flip_byte(base_file(f), usearch_header(f) + 14), CORRUPT),
    "base vector count flipped": (lambda f: flip_byte(base_file(f), usearch_header(f) + 17), CORRUPT),
    "base dimensions flipped": (lambda f: flip_byte(base_file(f), usearch_header(f) + 33), CORRUPT),
    "base metric kind garbage": (lambda f: flip_byte(base_file(f), usearch_header(f) + 13), CORRUPT),
    "base metric kind flipped": pytest.param(
        lambda f: flip_byte(base_file(f), usearch_header(f) + 13, 0x01),  # one bit: 'c' (cos) -> 'b' (hamming)
        CORRUPT,
    ),
    # the manifest
    "manifest truncated": (lambda f: truncate(f / "manifest.json", (f / "manifest.json").stat().st_size // 2), CORRUPT),
    "manifest not JSON": (lambda f: (f / "manifest.json").write_text("this is not json {"), CORRUPT),
    "manifest empty": (lambda f: (f / "manifest.json").write_bytes(b""), CORRUPT),
    "manifest binary garbage": (lambda f: (f / "manifest.json").write_bytes(bytes(range(256))), CORRUPT),
    "manifest a JSON list": (lambda f: (f / "manifest.json").write_text("[1, 2, 3]"), CORRUPT),
    "manifest of another format": (edit_manifest(lambda m: m.update(format="something-else")), CORRUPT),
    "manifest from a future version": (edit_manifest(lambda m: m.update(format_version=99)), CORRUPT),
    "manifest without dim": (edit_manifest(lambda m: m.pop("dim")), CORRUPT),
    "manifest with a negative dim": (edit_manifest(lambda m: m.update(dim=-64)), CORRUPT),
    "manifest base without size": (edit_manifest(lambda m: m["base"].pop("size")), CORRUPT),
    "manifest names a missing base": (edit_manifest(lambda m: m["base"].update(file="base-000099.usearch")), CORRUPT),
    "manifest with the wrong base count": (
        edit_manifest(lambda m: m["base"].update(count=m["base"]["count"] + 1)),
        CORRUPT,
    ),
    "manifest dim 32 (base is 64)": (
        edit_manifest(lambda m: m.update(dim=32)),
        CORRUPT,  # the manifest's checksum no longer matches its fields
    ),
    "manifest dim 128, no base (delta only)": (
        edit_manifest(lambda m: m.update(dim=128, base=None)),
        CORRUPT,
    ),
    "manifest deleted": (lambda f: (f / "manifest.json").unlink(), "CatalogNotFoundError"),
    "manifest expansion_search a string": pytest.param(
        edit_manifest(lambda m: m.update(expansion_search="wide")), CORRUPT
    ),
    "manifest threshold a string": pytest.param(
        edit_manifest(lambda m: m.update(threshold="high")), CORRUPT
    ),
    "manifest generation a string": pytest.param(
        edit_manifest(lambda m: m.update(generation="seven")), CORRUPT
    ),
    "manifest base file null": pytest.param(
        edit_manifest(lambda m: m["base"].update(file=None)), CORRUPT
    ),
    "manifest base max_key a string": pytest.param(
        edit_manifest(lambda m: m["base"].update(max_key="many")), CORRUPT
    ),
    # the database
    "database replaced by garbage": (
        lambda f: (f / "catalog.sqlite").write_bytes(
            np.random.default_rng(0).integers(0, 256, (f / "catalog.sqlite").stat().st_size, np.uint8).tobytes()
        ),
        CORRUPT,
    ),
    "database emptied": (lambda f: truncate(f / "catalog.sqlite", 0), CORRUPT),
    "database truncated to one page": (lambda f: truncate(f / "catalog.sqlite", 4096), CORRUPT),
    "database deleted": (lambda f: (f / "catalog.sqlite").unlink(), "CatalogNotFoundError"),
    "database images table page garbage": pytest.param(
        garbage_page("images"),
        CORRUPT,
    ),
    "database products table page garbage": pytest.param(
        garbage_page("products"),
        CORRUPT,
    ),
}


def case_values(name: str):
    value = CASES[name]
    return value.values if hasattr(value, "values") else value


def case_params(names) -> list:
    """Case names for parametrize, with the marks of any pytest.param case."""
    return [pytest.param(name, marks=CASES[name].marks) if hasattr(CASES[name], "marks") else name for name in names]


@dataclass
class Outcome:
    folder: Path
    returncode: int  # of the child while it handled this case: negative when it crashed here
    results: dict  # mode -> the child's JSON answer
    stderr: str


HUNG = -1000  # an Outcome.returncode: the child stopped answering on this case and was killed


def run_children(jobs: dict[str, Path], queries: list[str], work: Path, *, parallel: int = 2,
                 case_timeout: float = 60.0) -> dict[str, Outcome]:
    """Open every folder in child processes, `parallel` children at a time, each taking a share of the cases.

    A child that crashes is charged to the case it was handling; a new child goes on with the next case.
    A child that runs longer than case_timeout per case it was given is killed, and the case in
    progress is charged as hung (HUNG).
    """
    names = list(jobs)
    shares = [names[i::parallel] for i in range(parallel)]
    outcomes: dict[str, Outcome] = {}
    attempt = 0
    while any(shares):
        running = []
        for share in filter(None, shares):
            attempt += 1
            job = work / f"job-{attempt}.json"
            job.write_text(json.dumps({"queries": queries, "cases": [[name, str(jobs[name])] for name in share]}))
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(job)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work,
                env={**os.environ, "PYTHONFAULTHANDLER": "1"},
            )
            running.append((share, child))
        shares = []
        for share, child in running:
            try:
                stdout, stderr = child.communicate(timeout=case_timeout * len(share))
                hung = False
            except subprocess.TimeoutExpired:
                child.kill()
                stdout, stderr = child.communicate()
                hung = True
            results: dict[str, dict] = {}
            current = None
            for line in stdout.splitlines():
                if not line.startswith('{"case"'):
                    continue  # something a library printed (onnxruntime prints some errors to stdout)
                record = json.loads(line)
                current = record.pop("case")
                if not record.pop("begin", False):
                    results.setdefault(current, {})[record.pop("mode")] = record
            done = [name for name in share if name in results and len(results[name]) == 3]
            for name in done:
                outcomes[name] = Outcome(jobs[name], 0, results[name], "")
            if child.returncode != 0:
                # the case in progress takes the blame; the rest go to a new child
                crashed = current if current not in done else share[len(done)]
                code = HUNG if hung else child.returncode or -1
                outcomes[crashed] = Outcome(jobs[crashed], code, results.get(crashed, {}), stderr)
                rest = share[share.index(crashed) + 1:]
                if rest:
                    shares.append(rest)
    return outcomes


@pytest.fixture(scope="module")
def outcomes(template, tmp_path_factory) -> dict[str, Outcome]:
    root = tmp_path_factory.mktemp("damaged")
    jobs = {}
    for number, name in enumerate(["intact", *CASES]):
        folder = root / f"case-{number:02d}" / "catalog"
        shutil.copytree(template.folder, folder)
        if name != "intact":
            damage = case_values(name)[0]
            damage(folder)
        jobs[name] = folder
    return run_children(jobs, template.queries, root)


def assert_clean_run(outcome: Outcome) -> None:
    assert outcome.returncode >= 0, f"the child crashed (signal {-outcome.returncode}):\n{outcome.stderr[-3000:]}"
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    assert set(outcome.results) == set(MODES), outcome.stderr[-3000:]


def open_in_process(folder: Path, queries: list[str]) -> dict:
    """What the child's read-only ProductSearch answers, for a catalog that is no longer damaged."""
    with ProductSearch.open(folder, readonly=True, threads=1) as search:
        return {
            "ok": True,
            "answers": [[m.product_id for m in r] for r in search.search(queries, k=3)],
            "identified": [m.product_id if m else None for m in search.identify(queries)],
            "products": [p.id for p in search.products()],
        }


@pytest.fixture(scope="module")
def intact(outcomes) -> dict:
    """What the undamaged catalog answers (checked against the products it holds)."""
    outcome = outcomes["intact"]
    assert_clean_run(outcome)
    for mode in MODES:
        assert outcome.results[mode]["ok"], outcome.results[mode]
    reader = outcome.results["reader"]
    expected_products = sorted(f"p{p}" for p in (*CATALOG_PRODUCTS, *DELTA_PRODUCTS) if p not in REMOVED)
    assert sorted(reader["products"]) == expected_products
    assert reader["identified"] == [None if p in (*REMOVED, 60) else f"p{p}" for p in QUERY_PRODUCTS]
    assert outcome.results["writer"]["answers"] == reader["answers"]
    return reader


def test_the_intact_catalog_answers_in_every_mode(intact):
    assert intact["answers"][0][0] == "p0"


@pytest.mark.parametrize("name", case_params(CASES))
def test_a_damaged_catalog_raises_a_clean_error_in_every_mode(name, outcomes):
    expected = case_values(name)[1]
    outcome = outcomes[name]
    assert_clean_run(outcome)
    for mode in MODES:
        result = outcome.results[mode]
        want = expected[mode] if isinstance(expected, dict) else expected
        assert not result["ok"], f"{mode}: opened and answered {result} despite the damage"
        assert result["snapmatch"], f"{mode}: {result['type']} is not a SnapmatchError: {result['message']}"
        assert result["type"] == want, f"{mode}: {result['type']}: {result['message']}"
        assert result["message"] and "\n" not in result["message"].strip()


# --- repair ------------------------------------------------------------------------------------------------

BASE_CASES = [name for name in CASES if name.startswith("base ") and not hasattr(CASES[name], "marks")]
MANIFEST_CASES = [name for name in CASES if name.startswith("manifest ") and not hasattr(CASES[name], "marks")]


@pytest.mark.parametrize("name", BASE_CASES)
def test_rebuild_base_repairs_a_damaged_base_from_the_database(name, outcomes, template, intact):
    folder = outcomes[name].folder  # the child's writer open already tried (and failed) here
    with Catalog.open(folder, rebuild_base=True) as catalog:
        stats = catalog.stats()
        assert stats["base_vectors"] == stats["images"] and stats["delta_vectors"] == 0 and stats["tombstones"] == 0
    assert len(list(folder.glob("base-*.usearch"))) == 1
    assert not list(folder.glob(".*.tmp"))
    assert open_in_process(folder, template.queries) == intact


@pytest.mark.parametrize("name", MANIFEST_CASES)
def test_restoring_a_damaged_manifest_gives_back_the_catalog_as_it_was(name, outcomes, template, intact):
    folder = outcomes[name].folder  # every mode, the writer's included, already failed to open it
    shutil.copyfile(template.folder / "manifest.json", folder / "manifest.json")
    assert open_in_process(folder, template.queries) == intact


def test_the_harness_reports_a_segfault_and_goes_on_with_the_next_case(outcomes, template, tmp_path):
    jobs = {
        "before": outcomes["intact"].folder,
        "harness: segfault probe": outcomes["intact"].folder,
        "after": outcomes["intact"].folder,
    }
    seen = run_children(jobs, template.queries, tmp_path, parallel=1)
    assert seen["harness: segfault probe"].returncode < 0
    assert "Segmentation fault" in seen["harness: segfault probe"].stderr
    for name in ("before", "after"):
        assert_clean_run(seen[name])
        assert seen[name].results["reader"] == outcomes["intact"].results["reader"]


def test_graph_damage_that_open_cannot_see_is_found_by_verify_and_repaired(template, tmp_path, intact):
    """A damaged graph passes open's cheap checks (size, header) and can crash an HNSW search (documented
    in snapmatch/sdk/catalog/verify.py); `verify_catalog` compares the SHA-256 and repair rebuilds the base."""
    from snapmatch.sdk.catalog.verify import verify_catalog

    folder = shutil.copytree(template.folder, tmp_path / "catalog")
    path = base_file(folder)
    data = bytearray(path.read_bytes())
    graph = usearch_header(folder) + 64
    data[graph:] = b"\xff" * (len(data) - graph)  # same size, header intact
    path.write_bytes(bytes(data))
    report = verify_catalog(folder)
    assert not report.ok and not report.unrepairable
    assert any("checksum" in problem for problem in report.problems)
    repaired = verify_catalog(folder, repair=True)
    assert repaired.ok and repaired.repaired
    assert open_in_process(folder, template.queries) == intact
