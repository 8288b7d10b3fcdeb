"""The runtime (what a kiosk installs) never imports torch or onnx."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.without_training_extra import BLOCK_TRAINING_EXTRA


def test_whole_runtime_runs_without_importing_torch_or_onnx(tmp_path, model_path):
    # A fresh interpreter that makes torch and onnx unimportable, then uses every runtime path.
    script = BLOCK_TRAINING_EXTRA + textwrap.dedent(
        f"""
        import numpy as np
        import snapmatch
        from snapmatch.cli import main
        rng = np.random.default_rng(0)
        photo = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        with snapmatch.ProductSearch.create({str(tmp_path / 'cat')!r}, model={str(model_path)!r}) as search:
            search.add_product('a', [photo])
            assert search.identify(photo).product_id == 'a'
            search.remove_product('a')
            search.add_product('b', [photo])
            search.compact()
            search.calibrate([(photo, 'b')], target_precision=0.5, force=True)
        with snapmatch.ProductSearch.open({str(tmp_path / 'cat')!r}, readonly=True) as search:
            assert search.search(photo, k=1)[0].product_id == 'b'
        from snapmatch.sdk.catalog.verify import verify_catalog
        assert verify_catalog({str(tmp_path / 'cat')!r}).ok
        # The benchmarks a user runs on a kiosk: baselines that need torch or onnx are reported unavailable.
        try:
            main(['benchmark', 'latency', '--model', {str(model_path)!r}, '--threads', '1', '--repeats', '3',
                  '--warmup', '1', '--batch-sizes', '1,2', '--catalog-size', '50', '--json'])
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
        loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx'))
        assert not loaded, loaded
        print('ok')
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "ok"
    report = json.loads(result.stdout[: result.stdout.rindex("ok")])
    assert set(report["unavailable"]) >= {"onnx_int8", "torch_eager"}, report["unavailable"]
