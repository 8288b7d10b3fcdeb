"""kill -9 of the server while clients add products: every product whose PUT got a 2xx is there after restart."""

from __future__ import annotations

import pytest

from snapmatch.benchmarks.serve import crash_writes
from tests.serve.conftest import make_catalog


@pytest.mark.slow
def test_acknowledged_writes_survive_kill_9(tmp_path, model_path):
    catalog = make_catalog(tmp_path / "catalog", model_path)
    report = crash_writes(catalog, tmp_path, kills=3, writers=3, seed=1)
    assert report["acknowledged_writes"] > 0
    assert report["lost"] == 0, report["lost_ids"]
    assert report["products_after"] >= 5 + report["acknowledged_writes"]
