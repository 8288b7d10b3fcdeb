"""The on-disk catalog: manifest, SQLite store, base index, delta, compaction, lock, verify, calibration, import.

`Catalog` (catalog.py) holds state and recovery; search.py merges base and
delta results by product. Sub-modules load on first use.
"""


def __getattr__(name: str):
    if name == "Catalog":
        from snapmatch.sdk.catalog.catalog import Catalog

        return Catalog
    raise AttributeError(f"module 'snapmatch.sdk.catalog' has no attribute {name!r}")
