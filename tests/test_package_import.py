"""The package must stay cheap to import: ML libraries load only when a run needs them."""

import subprocess
import sys

HEAVY = ("torch", "transformers", "peft", "datasets", "bitsandbytes", "bqplot", "accelerate")


def _modules_loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(m for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_import_modx_widgets_loads_no_ml_library():
    loaded = _modules_loaded_after("import modx_widgets")
    assert not [m for m in HEAVY if m in loaded]


def test_loading_the_schema_loads_no_ml_library():
    loaded = _modules_loaded_after("from modx_widgets.schema.spec import load_schema; load_schema()")
    assert not [m for m in HEAVY if m in loaded]


def test_version_is_exposed():
    import modx_widgets

    assert modx_widgets.__version__
