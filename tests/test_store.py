"""The workspace store: names, presets, templates, atomic writes, broken files, running and interrupted tasks."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from modx_widgets.config.validate import check_values
from modx_widgets.events import Checkpoint, Error, Eval, Log, Message, Progress, Status
from modx_widgets.schema.spec import load_schema
from modx_widgets.store import (
    INTERRUPTED,
    MAX_NAME_LENGTH,
    StatusRecord,
    StoreError,
    TaskRecord,
    Workspace,
    is_pid_alive,
)
from modx_widgets.store.presets import PRESET_FILES, raw_preset

SCHEMA = load_schema()


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "ws")


def make_task(ws: Workspace, name: str = "t1", training_type: str = "sft", **kw) -> TaskRecord:
    return ws.create_task(name, training_type, kw.pop("template", "SFT"), "cpu", kw.pop("values", {}), **kw)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes: compares whole directory states."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_child(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, timeout=60
    )


# -- names -------------------------------------------------------------------------------

HOSTILE_NAMES = [
    "../x",
    "/abs",
    "a/b",
    "a\\b",
    "..",
    ".",
    "",
    " ",
    "a b",
    "\t",
    "name\n",
    "a\x00b",
    "x" * 300,
    "x" * (MAX_NAME_LENGTH + 1),
    ".hidden",
    "a..b",
    "ends.",
    "CON",
    "con",
    "Nul",
    "aux.json",
    "COM1",
    "lpt9.txt",
    "\u0430dmin",  # Cyrillic a
    "ｔａｓｋ",  # fullwidth
    "a\u200bb",  # zero-width space
    "caf\u00e9",
    "C:x",
    "*",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=repr)
def test_hostile_task_name_is_refused_and_nothing_is_written(tmp_path: Path, ws: Workspace, name: str) -> None:
    (tmp_path / "outside.txt").write_text("keep")
    before = tree(tmp_path)
    with pytest.raises(StoreError) as info:
        make_task(ws, name)
    assert "name" in str(info.value)
    with pytest.raises(StoreError):
        ws.save_template(name, "sft", {})
    with pytest.raises(StoreError):
        ws.load_task(name)
    with pytest.raises(StoreError):
        ws.delete_task(name)
    assert tree(tmp_path) == before
    assert ws.list_tasks() == []


@pytest.mark.parametrize("name", ["a b", "\u0430dmin", "a/b", "a\x00b"], ids=repr)
def test_refused_character_message_says_which_characters_are_allowed(ws: Workspace, name: str) -> None:
    with pytest.raises(StoreError, match="use only ASCII letters, digits, '-', '_' and '.'"):
        make_task(ws, name)


@pytest.mark.parametrize("name", ["a", "x" * MAX_NAME_LENGTH, "my-task_1.v2", "CONSOLE", "com10", "sft_20241201_143052"])
def test_safe_names_are_accepted_unchanged(ws: Workspace, name: str) -> None:
    assert make_task(ws, name).name == name
    assert ws.task_dir(name) == ws.root / "tasks" / name
    assert ws.load_task(name).name == name


def test_task_names_clash_ignoring_case(ws: Workspace) -> None:
    make_task(ws, "MyTask")
    with pytest.raises(StoreError, match="already exists"):
        make_task(ws, "mytask")
    assert ws.load_task("MYTASK").name == "MyTask"
    assert [t.name for t in ws.list_tasks()] == ["MyTask"]


def test_a_task_folder_linking_outside_the_root_is_never_followed(tmp_path: Path, ws: Workspace) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "task.json").write_text('{"secret": 1}')
    ws.tasks_root.mkdir(parents=True)
    (ws.tasks_root / "evil").symlink_to(outside, target_is_directory=True)
    for action in (ws.load_task, ws.delete_task, ws.read_status):
        with pytest.raises(StoreError, match="outside"):
            action("evil")
    assert (outside / "task.json").read_text() == '{"secret": 1}'
    [info] = ws.list_tasks()
    assert info.name == "evil" and "outside" in info.problem


def test_default_task_name_is_type_and_timestamp_with_a_suffix_when_taken(ws: Workspace) -> None:
    now = datetime(2024, 12, 1, 14, 30, 52)
    assert ws.default_task_name("sft", now) == "sft_20241201_143052"
    make_task(ws, "sft_20241201_143052")
    assert ws.default_task_name("sft", now) == "sft_20241201_143052_2"
    make_task(ws, "SFT_20241201_143052_2")
    assert ws.default_task_name("sft", now) == "sft_20241201_143052_3"
    assert ws.default_task_name("pretrain", now) == "pretrain_20241201_143052"
    with pytest.raises(StoreError, match="training type"):
        ws.default_task_name("rlhf", now)


# -- tasks -------------------------------------------------------------------------------


def test_workspace_defaults_to_modx_workspace_and_is_created_on_first_write(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    ws = Workspace()
    assert ws.root == tmp_path / "modx_workspace"
    assert ws.list_tasks() == [] and not ws.root.exists()
    make_task(ws)
    assert (tmp_path / "modx_workspace" / "tasks" / "t1" / "task.json").is_file()


def test_create_task_writes_versioned_task_and_pending_status(ws: Workspace) -> None:
    record = make_task(ws, values={"lora_r": "8", "eval_file": ""})
    folder = ws.task_dir("t1")
    task = json.loads((folder / "task.json").read_text())
    status = json.loads((folder / "status.json").read_text())
    assert task["schema_version"] == status["schema_version"] == SCHEMA.version
    assert status["state"] == "Pending"
    assert set(task["values"]) == set(SCHEMA.params)
    assert task["values"]["lora_r"] == 8 and task["values"]["eval_file"] is None
    assert ws.load_task("t1") == record
    assert ws.read_status("t1").state == "Pending"


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"values": {"lora_r": 0}}, "lora_r"),
        ({"values": {"no_such_param": 1}}, "no_such_param"),
        ({"values": {"fp16": "maybe"}}, "fp16"),
        ({"training_type": "rlhf"}, "training type"),
    ],
)
def test_create_task_refuses_bad_settings_before_writing(ws: Workspace, kwargs: dict, fragment: str) -> None:
    with pytest.raises(StoreError, match=fragment):
        make_task(ws, **kwargs)
    assert not ws.root.exists()


@pytest.mark.parametrize("device", ["gpu please", "", "cuda:x", "cuda:0,1", "tpu", None])
def test_create_task_refuses_unknown_device(ws: Workspace, device) -> None:
    with pytest.raises(StoreError, match="device"):
        ws.create_task("t1", "sft", None, device, {})


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "CUDA:12", "all", "gpu"])
def test_create_task_accepts_known_devices(ws: Workspace, device: str) -> None:
    assert ws.create_task("t1", "sft", None, device, {}).device == device


def test_save_task_updates_values_and_keeps_creation_time(ws: Workspace) -> None:
    record = make_task(ws)
    saved = ws.save_task(replace(record, values={**record.values, "seed": "7"}))
    assert saved.values["seed"] == 7 and saved.created == record.created
    assert ws.load_task("t1").values["seed"] == 7
    with pytest.raises(StoreError, match="seed"):
        ws.save_task(replace(record, values={**record.values, "seed": -1}))
    assert ws.load_task("t1").values["seed"] == 7
    with pytest.raises(StoreError, match="no task named"):
        ws.save_task(replace(record, name="ghost"))


def test_deleting_a_pending_task_removes_its_folder_only(ws: Workspace) -> None:
    make_task(ws, "a")
    make_task(ws, "b")
    ws.delete_task("A")
    assert [t.name for t in ws.list_tasks()] == ["b"]
    assert sorted(os.listdir(ws.tasks_root)) == ["b"]
    with pytest.raises(StoreError, match="no task named"):
        ws.delete_task("a")


# -- broken files ------------------------------------------------------------------------

GOOD_TASK = {"schema_version": 1, "training_type": "sft", "device": "cpu", "values": {}}
BROKEN_TASK_FILES = {
    "empty": b"",
    "truncated": json.dumps({**GOOD_TASK, "template": "SFT"}).encode()[:30],
    "not-utf8": b'{"schema_version": 1, "device": "\xff\xfe"}',
    "pickle": pickle.dumps(GOOD_TASK),
    "array": b"[1, 2, 3]",
    "newer-version": json.dumps({**GOOD_TASK, "schema_version": 99}).encode(),
    "no-version": json.dumps({k: v for k, v in GOOD_TASK.items() if k != "schema_version"}).encode(),
    "unknown-key": json.dumps({**GOOD_TASK, "owner": "me"}).encode(),
    "unknown-param": json.dumps({**GOOD_TASK, "values": {"lora_rank": 8}}).encode(),
    "value-out-of-range": json.dumps({**GOOD_TASK, "values": {"learning_rate": 5}}).encode(),
    "values-not-object": json.dumps({**GOOD_TASK, "values": [1]}).encode(),
    "bad-training-type": json.dumps({**GOOD_TASK, "training_type": "dpo"}).encode(),
    "device-not-text": json.dumps({**GOOD_TASK, "device": 3}).encode(),
    "deeply-nested": b"[" * 100_000 + b"]" * 100_000,
}
EXPECTED_PROBLEM = {
    "empty": "empty",
    "truncated": "not valid JSON",
    "not-utf8": "not UTF-8",
    "pickle": "not UTF-8",
    "array": "not an object",
    "newer-version": "newer modx_widgets",
    "no-version": "schema_version",
    "unknown-key": "unknown keys 'owner'",
    "unknown-param": "lora_rank",
    "value-out-of-range": "learning_rate: must be between",
    "values-not-object": "values must be an object",
    "bad-training-type": "training type must be one of",
    "device-not-text": "'device' must be str",
    "deeply-nested": "nested too deeply",
}


@pytest.mark.parametrize("case", sorted(BROKEN_TASK_FILES))
def test_a_broken_task_file_is_reported_for_that_task_alone(ws: Workspace, case: str) -> None:
    make_task(ws, "good")
    make_task(ws, "bad")
    path = ws.task_dir("bad") / "task.json"
    path.write_bytes(BROKEN_TASK_FILES[case])
    with pytest.raises(StoreError) as info:
        ws.load_task("bad")
    assert str(path) in str(info.value) and EXPECTED_PROBLEM[case] in str(info.value)
    infos = {t.name: t for t in ws.list_tasks()}
    assert infos["good"].problem is None and infos["good"].state == "Pending"
    assert EXPECTED_PROBLEM[case] in infos["bad"].problem
    assert ws.load_task("good").name == "good"
    ws.delete_task("bad")  # a broken task can still be cleaned up
    assert [t.name for t in ws.list_tasks()] == ["good"]


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"{", "not valid JSON"),
        (json.dumps({"schema_version": 1, "state": "Sleeping"}).encode(), "state must be one of"),
        (json.dumps({"schema_version": 1, "state": "Pending", "pid": 3}).encode(), "unknown keys"),
        (json.dumps({"schema_version": 2, "state": "Pending"}).encode(), "newer"),
        (json.dumps({"schema_version": 1, "state": "Pending", "step": "many"}).encode(), "'step' must be int"),
    ],
)
def test_a_broken_status_file_is_reported_and_others_still_list(ws: Workspace, content: bytes, fragment: str) -> None:
    make_task(ws, "good")
    make_task(ws, "bad")
    (ws.task_dir("bad") / "status.json").write_bytes(content)
    with pytest.raises(StoreError) as info:
        ws.read_status("bad")
    assert fragment in str(info.value)
    infos = {t.name: t for t in ws.list_tasks()}
    assert infos["good"].problem is None
    assert infos["bad"].problem == str(info.value)


def test_a_task_folder_without_task_json_is_listed_with_its_problem(ws: Workspace) -> None:
    (ws.tasks_root / "half").mkdir(parents=True)
    [info] = ws.list_tasks()
    assert info.name == "half" and "missing" in info.problem
    with pytest.raises(StoreError, match="already exists"):
        make_task(ws, "half")


def test_hand_made_folders_with_unsafe_names_are_listed_not_loaded(ws: Workspace) -> None:
    (ws.tasks_root / "my task").mkdir(parents=True)
    (ws.tasks_root / ".deleting-x").mkdir()
    (ws.tasks_root / "stray.txt").write_text("x")
    [info] = ws.list_tasks()
    assert info.name == "my task" and "by hand" in info.problem


# -- presets and templates ---------------------------------------------------------------


def test_presets_come_first_and_hold_only_non_default_values() -> None:
    defaults = SCHEMA.defaults()
    for filename in PRESET_FILES:
        doc = raw_preset(filename)
        assert doc["schema_version"] == SCHEMA.version
        assert all(defaults[k] != v for k, v in doc["values"].items()), filename
        assert check_values(doc["values"], doc["training_type"]).errors == {}


def test_sft_preset_uses_lora_and_pretrain_preset_trains_all_weights(ws: Workspace) -> None:
    assert ws.templates()[:2] == ["SFT", "Pretrain"]
    sft, pretrain = ws.load_template("SFT"), ws.load_template("pretrain")
    assert sft.preset and sft.training_type == "sft" and sft.values["use_lora"] is True
    assert pretrain.preset and pretrain.training_type == "pretrain" and pretrain.values["use_lora"] is False
    lr = SCHEMA.params["learning_rate"]
    assert lr.minimum <= pretrain.values["learning_rate"] <= lr.maximum
    assert set(sft.values) == set(pretrain.values) == set(SCHEMA.params)


@pytest.mark.parametrize("name", ["SFT", "sft", "Pretrain", "PRETRAIN"])
def test_presets_cannot_be_overwritten_or_deleted(ws: Workspace, name: str) -> None:
    with pytest.raises(StoreError, match="system preset"):
        ws.save_template(name, "sft", {"seed": 1})
    with pytest.raises(StoreError, match="system preset"):
        ws.delete_template(name)
    assert ws.load_template(name).values["seed"] == SCHEMA.params["seed"].default
    assert not ws.templates_root.exists()


def test_a_preset_loaded_twice_is_not_shared_state(ws: Workspace) -> None:
    first = ws.load_template("SFT")
    first.values["lora_target_modules"].append("k_proj")
    first.values["seed"] = 1
    again = ws.load_template("SFT")
    assert again.values["lora_target_modules"] == SCHEMA.params["lora_target_modules"].default
    assert again.values["seed"] == SCHEMA.params["seed"].default


def test_user_templates_save_load_list_and_delete(ws: Workspace) -> None:
    ws.save_template("zeta", "sft", {"lora_r": "32"})
    saved = ws.save_template("Alpha", "pretrain", {"seed": 1})
    assert ws.templates() == ["SFT", "Pretrain", "Alpha", "zeta"]
    loaded = ws.load_template("zeta")
    assert not loaded.preset and loaded.values["lora_r"] == 32 and loaded.training_type == "sft"
    assert ws.load_template("alpha") == saved
    assert json.loads((ws.templates_root / "zeta.json").read_text())["schema_version"] == SCHEMA.version
    ws.save_template("zeta", "sft", {"lora_r": 64})  # the exact name overwrites
    assert ws.load_template("zeta").values["lora_r"] == 64
    ws.delete_template("ZETA")
    assert ws.templates() == ["SFT", "Pretrain", "Alpha"]
    with pytest.raises(StoreError, match="no template named 'zeta'; available: SFT, Pretrain, Alpha"):
        ws.load_template("zeta")
    with pytest.raises(StoreError, match="no template"):
        ws.delete_template("zeta")


def test_template_names_are_unique_ignoring_case(ws: Workspace) -> None:
    ws.save_template("Mine", "sft", {})
    with pytest.raises(StoreError, match="already exists"):
        ws.save_template("mine", "sft", {"seed": 3})
    assert ws.load_template("Mine").values["seed"] == SCHEMA.params["seed"].default


def test_template_with_invalid_values_is_refused(ws: Workspace) -> None:
    with pytest.raises(StoreError, match="lora_alpha: must be between"):
        ws.save_template("bad", "sft", {"lora_alpha": 0})
    assert ws.templates() == ["SFT", "Pretrain"]


@pytest.mark.parametrize("case", ["truncated", "newer-version", "unknown-key", "unknown-param", "value-out-of-range"])
def test_a_broken_template_file_fails_alone(ws: Workspace, case: str) -> None:
    ws.save_template("good", "sft", {})
    ws.save_template("bad", "sft", {})
    path = ws.templates_root / "bad.json"
    path.write_bytes(BROKEN_TASK_FILES[case].replace(b'"device": "cpu", ', b""))
    with pytest.raises(StoreError) as info:
        ws.load_template("bad")
    assert str(path) in str(info.value)
    assert ws.templates() == ["SFT", "Pretrain", "bad", "good"]
    assert ws.load_template("good").name == "good"


def test_temporary_task_keeps_its_values_and_leaves_the_template_untouched(ws: Workspace) -> None:
    ws.save_template("mine", "sft", {"lora_r": 8})
    before = (ws.templates_root / "mine.json").read_bytes()
    values = {**ws.load_template("mine").values, "lora_r": 64, "seed": 5}
    record = ws.create_task("t1", "sft", "mine", "cpu", values, temporary=True)
    ws.save_task(replace(record, values={**record.values, "seed": 6}))
    assert (ws.templates_root / "mine.json").read_bytes() == before
    loaded = ws.load_task("t1")
    assert loaded.temporary and loaded.template == "mine" and loaded.values["lora_r"] == 64
    ws.delete_template("mine")
    assert ws.load_task("t1").values["seed"] == 6  # the task does not depend on the template
    ws.save_template("from-t1", loaded.training_type, loaded.values)
    assert ws.load_template("from-t1").values == ws.load_task("t1").values


def test_non_temporary_task_writes_its_values_back_to_its_user_template(ws: Workspace) -> None:
    ws.save_template("mine", "sft", {"lora_r": 8})
    record = ws.create_task("t1", "sft", "mine", "cpu", {"lora_r": 64})
    assert ws.load_template("mine").values["lora_r"] == 64
    ws.save_task(replace(record, values={**record.values, "lora_r": 4}))
    assert ws.load_template("mine").values["lora_r"] == 4
    ws.create_task("t2", "sft", "SFT", "cpu", {"lora_r": 2})  # a preset is never written
    assert ws.load_template("SFT").values["lora_r"] == SCHEMA.params["lora_r"].default


# -- atomic writes and crashes -----------------------------------------------------------

CRASH_ON_REPLACE = """
import os, signal, sys
from dataclasses import replace
from modx_widgets.store import Workspace, StatusRecord
ws = Workspace(sys.argv[1])
ws.write_status("t1", StatusRecord(state="Running"))  # owned by this process
record = ws.load_task("t1")
os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # die between tmp write and rename
ws.save_task(replace(record, values={**record.values, "seed": 999}))
"""


def test_killed_between_temp_write_and_rename_leaves_old_file_and_marks_task_interrupted(ws: Workspace) -> None:
    make_task(ws, "t1", values={"seed": 1})
    make_task(ws, "t2")
    old = (ws.task_dir("t1") / "task.json").read_bytes()
    child = run_child(CRASH_ON_REPLACE, str(ws.root))
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert (ws.task_dir("t1") / "task.json").read_bytes() == old
    leftovers = [n for n in os.listdir(ws.task_dir("t1")) if n.endswith(".tmp")]
    assert leftovers and all(n.startswith(".") for n in leftovers)
    assert ws.load_task("t1").values["seed"] == 1
    status = ws.read_status("t1")
    assert status.state == "Failed" and status.message == INTERRUPTED and status.hint
    assert json.loads((ws.task_dir("t1") / "status.json").read_text())["state"] == "Failed"
    assert {t.name: (t.state, t.problem) for t in ws.list_tasks()} == {
        "t1": ("Failed", None),
        "t2": ("Pending", None),
    }
    ws.delete_task("t1")  # an interrupted task is no longer running


WRITE_PAST_FILE_SIZE_LIMIT = """
import resource, signal, sys
from dataclasses import replace
from modx_widgets.store import Workspace, StoreError
ws = Workspace(sys.argv[1])
record = ws.load_task("t1")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))  # any bigger write fails like a full disk
try:
    ws.save_task(replace(record, values={**record.values, "seed": 999}))
except StoreError as exc:
    print(exc)
    sys.exit(3)
"""


def test_a_failed_write_reports_the_file_and_keeps_the_previous_version(ws: Workspace) -> None:
    make_task(ws, "t1", values={"seed": 1})
    before = tree(ws.root)
    child = run_child(WRITE_PAST_FILE_SIZE_LIMIT, str(ws.root))
    assert child.returncode == 3, child.stderr
    assert "could not write" in child.stdout and "task.json" in child.stdout and "intact" in child.stdout
    assert tree(ws.root) == before  # the temporary file was removed too
    assert ws.load_task("t1").values["seed"] == 1


# -- status, running and interrupted tasks ------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_is_pid_alive_tells_live_dead_and_zombie_processes_apart() -> None:
    assert is_pid_alive(os.getpid())
    assert not is_pid_alive(dead_pid())
    for bad in (0, -1, None, True, "123"):
        assert not is_pid_alive(bad)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert is_pid_alive(sleeper.pid)
        os.kill(sleeper.pid, signal.SIGKILL)
        for _ in range(200):  # killed but not yet reaped: a zombie is not alive
            if not is_pid_alive(sleeper.pid):
                break
            time.sleep(0.01)
        assert not is_pid_alive(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_write_status_stamps_update_time_and_owner_of_a_running_task(ws: Workspace) -> None:
    make_task(ws)
    written = ws.write_status("t1", StatusRecord(state="Running", updated=0.0, step=3, max_steps=10))
    assert written.owner_pid == os.getpid() and written.owner_host and written.updated > 0
    assert ws.read_status("t1") == written


def test_running_task_cannot_be_deleted_until_stopped(ws: Workspace) -> None:
    make_task(ws)
    ws.write_status("t1", StatusRecord(state="Running"))
    with pytest.raises(StoreError, match="stop it first"):
        ws.delete_task("t1")
    assert ws.load_task("t1").name == "t1"
    ws.write_status("t1", replace(ws.read_status("t1"), state="Stopped"))
    ws.delete_task("t1")
    assert ws.list_tasks() == []


def test_running_status_of_a_dead_owner_becomes_failed_interrupted(ws: Workspace) -> None:
    make_task(ws)
    ws.write_status("t1", StatusRecord(state="Running", owner_pid=dead_pid(), started=1.0))
    status = ws.read_status("t1")
    assert (status.state, status.message, status.started) == ("Failed", INTERRUPTED, 1.0)
    assert status.ended is not None
    assert json.loads((ws.task_dir("t1") / "status.json").read_text())["message"] == INTERRUPTED


def test_running_status_owned_by_another_host_is_left_alone(ws: Workspace) -> None:
    make_task(ws)
    ws.write_status("t1", StatusRecord(state="Running", owner_pid=dead_pid(), owner_host="some-other-host"))
    assert ws.read_status("t1").state == "Running"
    with pytest.raises(StoreError, match="stop it first"):
        ws.delete_task("t1")


def test_missing_status_file_reads_as_pending(ws: Workspace) -> None:
    make_task(ws)
    (ws.task_dir("t1") / "status.json").unlink()
    assert ws.read_status("t1").state == "Pending"


def test_status_record_refuses_unknown_states() -> None:
    with pytest.raises(ValueError, match="state must be one of"):
        StatusRecord(state="Paused")


# -- events -----------------------------------------------------------------------------


def test_events_round_trip_and_messages_go_to_the_text_log(ws: Workspace) -> None:
    make_task(ws)
    batch = [
        Progress(step=1, max_steps=4, epoch=0.25, elapsed_s=1.0),
        Log(step=1, epoch=0.25, loss=2.5, learning_rate=1e-4),
        Eval(step=2, epoch=0.5, eval_loss=2.0, metrics={"eval_runtime": 0.1}),
        Checkpoint(step=2, path="/out/checkpoint-2"),
        Message(level="info", text="line one\nline two"),
        Status(state="Failed", message="boom", hint="fix it"),
        Error(message="boom", traceback="Traceback...\n  x"),
    ]
    ws.append_events("t1", batch)
    assert ws.read_events("t1") == [e for e in batch if not isinstance(e, (Progress, Message))]
    log = ws.read_log("t1")
    assert "INFO" in log and "line one\n    line two" in log
    with pytest.raises(TypeError):
        ws.append_events("t1", [{"kind": "log"}])


def test_a_torn_last_event_line_is_skipped_and_later_appends_stay_readable(ws: Workspace) -> None:
    make_task(ws)
    ws.append_events("t1", [Log(step=1, epoch=0.1, loss=1.0)])
    with open(ws.task_dir("t1") / "metrics.jsonl", "ab") as fh:
        fh.write(b'{"kind": "log", "step": 2, "ep')  # killed mid-write
    assert [e.step for e in ws.read_events("t1")] == [1]
    ws.append_events("t1", [Log(step=3, epoch=0.3, loss=0.5)])
    assert [e.step for e in ws.read_events("t1")] == [1, 3]


def test_unicode_case_folding_never_maps_a_hand_made_folder_onto_a_safe_name(ws: Workspace) -> None:
    (ws.tasks_root / "\u017fft").mkdir(parents=True)  # long s: casefolds to "sft"
    record = make_task(ws, "sft")
    assert ws.load_task("SFT") == record
    assert sorted(t.name for t in ws.list_tasks()) == ["sft", "\u017fft"]
