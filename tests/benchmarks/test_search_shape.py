"""`snapmatch benchmark search-shape`: real catalogs on disk, the two shapes timed round by round."""

from __future__ import annotations

import json

from click.testing import CliRunner

from snapmatch.cli import cli


def test_search_shape_times_each_shape_and_reports_the_ratio():
    result = CliRunner().invoke(cli, ["benchmark", "search-shape", "--products", "6", "--photos", "1,5", "--dim", "16",
                                      "--repeats", "12", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    one, many = payload["shapes"]
    assert (one["vectors"], many["vectors"]) == (6, 30) and one["ratio_to_first"] == 1.0
    assert many["search_ms"]["n"] == 12 and many["ratio_to_first"] > 0
    assert payload["command"].startswith("snapmatch ") and "cpu" in payload
