"""Get a task out of the widget and back in: a standalone script, a command line, a
LLaMA-Factory YAML, TrainingArguments as JSON.

Importing this package is cheap; each exporter imports what it needs (PyYAML, peft,
transformers) when called.
"""

from __future__ import annotations

from ._common import ExportError
from .command import LAUNCHERS, to_cli_command
from .llamafactory import from_llamafactory_yaml, llamafactory_dataset_info, to_llamafactory_yaml
from .script import to_python_script
from .trainargs import training_arguments_json

__all__ = [
    "ExportError",
    "LAUNCHERS",
    "from_llamafactory_yaml",
    "llamafactory_dataset_info",
    "to_cli_command",
    "to_llamafactory_yaml",
    "to_python_script",
    "training_arguments_json",
]
