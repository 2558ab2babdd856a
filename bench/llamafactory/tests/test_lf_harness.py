"""The probe and the harness measure a real Trainer run the same way for both tools."""

import json
import subprocess
import sys
import textwrap

import pytest
from harness import RunFailed, compare_losses, probe_env, run_probed, spread, summarize

TINY_TRAIN = textwrap.dedent(
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments
    lengths = [5, 9, 3, 12, 7, 4]           # 3 optimizer steps of 2 sequences
    rows = [{"input_ids": list(range(3, 3 + n)), "labels": [-100] * 2 + list(range(5, 3 + n))} for n in lengths]
    def pad(batch):
        w = max(len(r["input_ids"]) for r in batch)
        ids = torch.zeros(len(batch), w, dtype=torch.long); mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for i, r in enumerate(batch):
            n = len(r["input_ids"]); ids[i, :n] = torch.tensor(r["input_ids"]); mask[i, :n] = 1
            labels[i, :n] = torch.tensor(r["labels"])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}
    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    torch.manual_seed(0)
    args = TrainingArguments(output_dir="out", per_device_train_batch_size=2, num_train_epochs=1,
                             logging_steps=1, report_to="none", save_strategy="no", use_cpu=True,
                             train_sampling_strategy="sequential", remove_unused_columns=False, disable_tqdm=True)
    Trainer(model=LlamaForCausalLM(cfg), args=args, train_dataset=rows, data_collator=pad).train()
    """
)


def test_probe_times_every_step_and_counts_only_real_tokens(tmp_path):
    result = run_probed("tiny", [sys.executable, "-c", TINY_TRAIN], tmp_path)
    assert result.steps == 3
    assert result.real_tokens == 5 + 9 + 3 + 12 + 7 + 4  # padding excluded
    assert result.label_tokens == sum(n - 2 for n in (5, 9, 3, 12, 7, 4))
    assert [s for s, _ in result.losses] == [1, 2, 3]
    assert 0 < result.first_step_s <= result.wall_s
    assert result.peak_rss_mb > 50  # a Python process with torch loaded
    rec = json.loads((tmp_path / "tiny.probe.json").read_text())
    times = [step[1] for step in rec["steps"]]
    assert times == sorted(times) and rec["train_begin"] <= times[0] <= rec["train_end"]
    cpu = [step[4] for step in rec["steps"]]
    assert cpu == sorted(cpu) and result.cpu_tokens_per_s > 0


def test_probe_is_inert_without_its_environment_variable(tmp_path):
    env = probe_env(tmp_path / "p.json")
    del env["BENCH_PROBE_FILE"]
    code = "import transformers.trainer as t; print(getattr(t.Trainer, '_bench_probe', False))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


def test_a_failing_command_raises_with_its_log_tail(tmp_path):
    with pytest.raises(RunFailed, match="exited with 3"):
        run_probed("boom", [sys.executable, "-c", "print('bad things'); raise SystemExit(3)"], tmp_path)


def test_a_command_that_never_trains_is_reported(tmp_path):
    with pytest.raises(RunFailed, match="probe recorded nothing"):
        run_probed("idle", [sys.executable, "-c", "pass"], tmp_path)


def test_summary_excludes_the_first_step_from_steady_throughput():
    rec = {"train_begin": 100.0, "steps": [[1, 110.0, 1000, 10], [2, 111.0, 1500, 20], [3, 112.0, 2000, 30]],
           "logs": [{"step": 1, "loss": 2.0}, {"step": 3, "loss": 1.0}, {"step": 3, "train_loss": 1.5}],
           "real_tokens": 2000, "label_tokens": 30}
    r = summarize("x", rec, t0_wall=95.0, wall=20.0, rss_mb=1.0, log_path="")
    assert r.first_step_s == 15.0
    assert r.steady_tokens_per_s == pytest.approx(1000 / 2.0)
    assert r.tokens_per_s == pytest.approx(2000 / 12.0)
    assert r.losses == [(1, 2.0), (3, 1.0)]
    assert r.quiet_tokens_per_s == pytest.approx(500.0)


def test_quiet_throughput_ignores_steps_that_waited_for_the_cpu():
    # steps 2..9 each train 100 tokens in 1 s, except two that were stalled for 10 s
    steps, t, tok = [[1, 1.0, 100, 0]], 1.0, 100
    for k, dt in enumerate([1, 10, 1, 1, 10, 1, 1, 1], start=2):
        t, tok = t + dt, tok + 100
        steps.append([k, t, tok, 0])
    r = summarize("x", {"train_begin": 0.0, "steps": steps}, t0_wall=0.0, wall=t, rss_mb=1.0, log_path="")
    assert r.quiet_tokens_per_s == pytest.approx(100.0)
    assert r.steady_tokens_per_s == pytest.approx(800 / 26.0)


def test_loss_comparison_uses_common_steps_and_the_last_quarter():
    a = [(s, 2.0 - 0.1 * s) for s in range(1, 9)]
    b = [(s, 2.0 - 0.1 * s + 0.05) for s in range(1, 9)] + [(9, 0.0)]
    cmp = compare_losses(a, b)
    assert cmp["steps"] == 8
    assert cmp["mean_abs_diff"] == pytest.approx(0.05)
    assert cmp["final_a"] == pytest.approx((1.3 + 1.2) / 2)
    assert compare_losses(a, [])["steps"] == 0


def test_spread_ignores_nan_and_orders_min_median_max():
    assert spread([3.0, float("nan"), 1.0, 2.0]) == (1.0, 2.0, 3.0)


def test_cpu_throughput_counts_tokens_per_cpu_second_after_the_first_step():
    steps = [[1, 10.0, 100, 0, 5.0], [2, 30.0, 300, 0, 6.0], [3, 31.0, 500, 0, 7.0]]
    r = summarize("x", {"train_begin": 0.0, "steps": steps}, t0_wall=0.0, wall=31.0, rss_mb=1.0, log_path="")
    assert r.cpu_tokens_per_s == pytest.approx(400 / 2.0)  # the 20 s stall in wall time does not count
