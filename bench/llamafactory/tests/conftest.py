"""Make the benchmark helpers in bench/llamafactory importable by their module names."""

import sys
from pathlib import Path

HELPERS = Path(__file__).resolve().parents[1]
if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))
