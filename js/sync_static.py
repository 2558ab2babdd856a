"""Copy the ESM sources in js/ to modx_widgets/static/, the copy that ships in the wheel.

The ESM is plain JavaScript with no imports, so no bundler (and no Node) is needed:
edit js/*.js, run `python js/sync_static.py`, and tests/test_badges.py checks the two
stay identical.
"""

from __future__ import annotations

import shutil
from pathlib import Path

SOURCE = Path(__file__).resolve().parent
TARGET = SOURCE.parent / "modx_widgets" / "static"


def main() -> None:
    TARGET.mkdir(parents=True, exist_ok=True)
    for src in sorted(SOURCE.glob("*.js")):
        shutil.copyfile(src, TARGET / src.name)
        print(f"{src.relative_to(SOURCE.parent)} -> {(TARGET / src.name).relative_to(SOURCE.parent)}")


if __name__ == "__main__":
    main()
