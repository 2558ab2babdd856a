"""Optimizers, LR schedulers, warmup priority and max_steps vs epochs, seen in real runs.

Each run pairs one optimizer with one scheduler so the five runs cover both lists.  The
expected learning rates follow the documented schedule formulas (transformers'
get_scheduler), evaluated at the step each logged rate was used for.
"""

from __future__ import annotations

import math

import pytest
from test_run_support import CallbackBase, close, make_task, run_task, torch_single_thread  # noqa: F401

BASE_LR = 1e-2
STEPS = 6


def linear_warmup(s: int, w: int) -> float | None:
    return s / max(1, w) if s < w else None


def expected_factor(scheduler: str, s: int, w: int, cycles: int = 2) -> float:
    warm = linear_warmup(s, w)
    if warm is not None:
        return warm
    progress = (s - w) / max(1, STEPS - w)
    if scheduler == "constant" or scheduler == "constant_with_warmup":
        return 1.0
    if scheduler == "linear":
        return max(0.0, (STEPS - s) / max(1, STEPS - w))
    if scheduler == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    if scheduler == "cosine_with_restarts":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0))))
    raise AssertionError(scheduler)


def optimizer_kind(opt) -> str:
    inner = getattr(opt, "optimizer", opt)
    return f"{type(inner).__module__}.{type(inner).__name__}"


CASES = [
    # optimizer, scheduler, warmup_steps, warmup_ratio, effective warmup steps, optimizer class check
    ("adamw_torch", "cosine", 2, 0.5, 2, lambda k, o: k == "torch.optim.adamw.AdamW"),
    ("adamw_8bit", "linear", 0, 0.34, math.ceil(STEPS * 0.34),
     lambda k, o: k.startswith("bitsandbytes.") and not getattr(o, "is_paged", False)),
    ("paged_adamw_8bit", "constant", 0, 0.0, 0,
     lambda k, o: k.startswith("bitsandbytes.") and getattr(o, "is_paged", False)),
    ("adafactor", "constant_with_warmup", 3, 0.0, 3, lambda k, o: k.endswith(".Adafactor")),
    ("sgd", "cosine_with_restarts", 0, 0.0, 0, lambda k, o: k == "torch.optim.sgd.SGD"),
]


@pytest.mark.parametrize("optim,scheduler,warmup_steps,warmup_ratio,warmup,is_expected", CASES,
                         ids=[c[0] for c in CASES])
def test_optimizer_runs_and_scheduler_has_its_shape(tmp_path, optim, scheduler, warmup_steps, warmup_ratio, warmup,
                                                    is_expected):
    seen = {}

    def on_train_begin(self, args, state, control, optimizer=None, **kw):
        seen["kind"], seen["opt"] = optimizer_kind(optimizer), getattr(optimizer, "optimizer", optimizer)

    ws, name, _ = make_task(
        tmp_path, optim=optim, lr_scheduler_type=scheduler, warmup_steps=warmup_steps, warmup_ratio=warmup_ratio,
        learning_rate=BASE_LR, max_steps=STEPS, num_train_epochs=3, lr_num_cycles=2,
    )
    state, rec = run_task(ws, name, callbacks=[CallbackBase.make(on_train_begin=on_train_begin)])
    assert state == "Completed", rec.errors
    assert is_expected(seen["kind"], seen["opt"]), seen["kind"]
    assert all(math.isfinite(log.loss) for log in rec.logs)
    got = [log.learning_rate for log in rec.logs]
    want = [BASE_LR * expected_factor(scheduler, k - 1, warmup) for k in range(1, STEPS + 1)]
    assert len(got) == STEPS
    assert all(close(g, w, 1e-9) for g, w in zip(got, want)), (got, want)


def test_epochs_decide_the_step_count_when_max_steps_is_minus_one(tmp_path):
    ws, name, _ = make_task(tmp_path, max_steps=-1, num_train_epochs=2, per_device_train_batch_size=4,
                            gradient_accumulation_steps=2, n=24)
    state, rec = run_task(ws, name)
    assert state == "Completed", rec.errors
    per_epoch = math.ceil(24 / (4 * 2))
    assert rec.progress[-1].step == rec.progress[-1].max_steps == 2 * per_epoch
    assert rec.logs[-1].epoch == pytest.approx(2.0)
