"""What every exporter needs: one error type and "task or values -> clean values".

Exports read a task the way a run would (defaults filled, strings coerced) so that what is
exported is what would train; a value a run would refuse is refused here too, with the same
message, before any text is produced.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..schema.spec import load_schema


class ExportError(ValueError):
    """The task cannot be exported or imported as asked; the message says what to change."""


def training_types() -> tuple[str, ...]:
    return tuple(load_schema().basic_param("training_type").options or ())


def check_training_type(training_type: Any) -> str:
    allowed = training_types()
    if training_type not in allowed:
        raise ExportError(f"training_type must be one of {', '.join(allowed)}, got {training_type!r}")
    return training_type


def unpack_task(task_record_or_values: Any, training_type: str | None) -> tuple[dict[str, Any], str, str, str | None]:
    """(values, training_type, device, task name) from a `TaskRecord` or a plain values mapping."""
    if isinstance(task_record_or_values, Mapping):
        if training_type is None:
            raise ExportError("training_type is needed when exporting plain values (sft or pretrain)")
        return dict(task_record_or_values), check_training_type(training_type), "auto", None
    values = getattr(task_record_or_values, "values", None)
    if not isinstance(values, Mapping):
        raise ExportError(
            f"expected a TaskRecord or a dict of parameter values, got {type(task_record_or_values).__name__}"
        )
    record_type = getattr(task_record_or_values, "training_type", None)
    if training_type is not None and record_type is not None and training_type != record_type:
        raise ExportError(f"the task is a {record_type} task, not {training_type}")
    return (
        dict(values),
        check_training_type(training_type or record_type),
        str(getattr(task_record_or_values, "device", "auto") or "auto"),
        getattr(task_record_or_values, "name", None),
    )


def clean_values(values: Mapping[str, Any], training_type: str, *, required: bool = True) -> dict[str, Any]:
    """Complete, coerced values; every problem a run would report raises one ExportError.

    With `required=False` only the field checks apply (types, ranges, options), so a
    half-filled task can still be exported to a format that does not need its paths.
    """
    from ..config.validate import check_values, validate

    if required:
        result = validate(values, training_type, check_paths=False)
        errors, clean = result.errors, result.values
    else:
        result = check_values(values, training_type)
        errors, clean = result.errors, result.values
    if errors:
        listed = "; ".join(f"{key}: {message}" if key else message for key, message in errors.items())
        raise ExportError(f"fix these values first: {listed}")
    return clean

