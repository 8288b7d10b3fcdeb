"""Where the development data is: $SNAPMATCH_DATA and $SNAPMATCH_WEIGHTS (.ci/run sets them).

Without them, the checkout's sibling `shared/` folder, as on the project's own
machines. The package itself never looks there: its commands take flags.
"""

from __future__ import annotations

import os
from pathlib import Path

_SIBLING = Path(__file__).resolve().parents[1].parent / "shared"
GROCERY = Path(os.environ.get("SNAPMATCH_DATA") or _SIBLING / "data" / "grocery")
WEIGHTS = Path(os.environ.get("SNAPMATCH_WEIGHTS") or _SIBLING / "weights")
SMALL_WEIGHTS = WEIGHTS / "mobilenet_v3_small-imagenet.pt"
HAS_GROCERY = (GROCERY / "train.txt").is_file()
