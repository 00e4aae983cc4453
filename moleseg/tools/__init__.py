"""Developer tools run from a checkout: ``bench`` (``moleseg bench``, ``make bench``), ``shipped`` (``make
models``, ``make crossval``), ``gpu_check`` (``make gpu-check``), ``candidate``, and the tables the product
publishes (``repeatability``, ``riskcoverage``, ``edge_calibration``), and ``doccounts`` (the line counts of
docs/architecture.md). A face like the CLI: they may import
every layer, and nothing in ``core``, ``engine``, ``network`` or ``app`` imports them.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The checkout holding this package (its ``models/`` folder has the recipes).
PROJECT_DIR: Path = Path(__file__).resolve().parents[2]
#: Environment variable naming the shared data folder.
SHARED_DATA_ENV: str = "MOLESEG_SHARED_DATA"
#: The real data the shipped models are trained and tested on: ``$MOLESEG_SHARED_DATA``, else
#: ``../shared/data`` next to the checkout.
SHARED_DATA_DIR: Path = Path(os.environ.get(SHARED_DATA_ENV) or PROJECT_DIR.parent / "shared" / "data")
