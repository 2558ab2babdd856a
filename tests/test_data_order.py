"""Length grouping and padding-free packing: less padding computed, the same examples trained on."""

from __future__ import annotations

import numpy as np
import pytest

from modx_widgets.data.order import length_grouped, window_size


def padded_tokens(order, lengths, batch: int) -> int:
    """Tokens a padding collator computes: every batch padded to its longest example."""
    order = list(order)
    return sum(max(lengths[i] for i in order[k:k + batch]) * len(order[k:k + batch]) for k in range(0, len(order), batch))


@pytest.fixture
def lengths() -> np.ndarray:
    # SFT-like: mostly short, a long tail (like make_sft_data's 17..500 tokens, median ~45)
    rng = np.random.default_rng(0)
    return np.clip(rng.lognormal(3.8, 0.8, size=400).astype(int), 12, 512)


def test_grouped_order_is_a_permutation_of_the_given_order(lengths):
    order = np.random.default_rng(1).permutation(len(lengths))
    grouped = length_grouped(order, lengths, step_examples=8)
    assert sorted(grouped.tolist()) == sorted(order.tolist())


def test_grouped_order_is_deterministic_and_depends_on_the_shuffle(lengths):
    a = np.random.default_rng(1).permutation(len(lengths))
    b = np.random.default_rng(2).permutation(len(lengths))
    assert length_grouped(a, lengths, 8).tolist() == length_grouped(a.copy(), lengths, 8).tolist()
    assert length_grouped(a, lengths, 8).tolist() != length_grouped(b, lengths, 8).tolist()


def test_longest_example_comes_first_so_memory_errors_show_at_step_one(lengths):
    order = np.random.default_rng(3).permutation(len(lengths))
    grouped = length_grouped(order, lengths, 8)
    assert lengths[grouped[0]] == lengths.max()


def test_grouping_only_sorts_inside_windows_of_the_shuffled_order(lengths):
    order = np.random.default_rng(4).permutation(len(lengths))
    size = window_size(len(order), 8)
    assert size == 8 * (len(order) // 32)  # at least four windows on 400 examples
    windows = [set(order[i:i + size].tolist()) for i in range(0, len(order), size)]
    grouped = length_grouped(order, lengths, 8)
    got = [set(grouped[i:i + size].tolist()) for i in range(0, len(grouped), size)]
    assert sorted(map(sorted, got)) == sorted(map(sorted, windows))  # same windows, maybe moved
    for i in range(0, len(grouped), size):
        window = lengths[grouped[i:i + size]]
        assert (np.diff(window) <= 0).all()  # longest first inside each window


def test_window_spans_at_most_fifty_optimizer_steps():
    assert window_size(100_000, 8) == 50 * 8
    assert window_size(10, 8) == 8  # tiny data: one step per window


def test_grouping_cuts_padding_against_random_batches(lengths):
    order = np.random.default_rng(5).permutation(len(lengths))
    grouped = length_grouped(order, lengths, step_examples=8)
    real = int(lengths.sum())
    random_pad = padded_tokens(order, lengths, 2) - real
    grouped_pad = padded_tokens(grouped, lengths, 2) - real
    assert grouped_pad < 0.25 * random_pad


def test_tiny_inputs_are_returned_unchanged():
    assert length_grouped(np.array([], dtype=np.int64), np.array([]), 4).tolist() == []
    assert length_grouped(np.array([0]), np.array([7]), 4).tolist() == [0]


# ------------------------------------------------------------------------------------------
# Through load_datasets and the engine (real tokenizer, real Trainer)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from modx_widgets.testing import make_sft_data, make_tiny_model

    root = tmp_path_factory.mktemp("order")
    return make_tiny_model(root / "model"), make_sft_data(root / "train.jsonl", n=120, seed=3)


@pytest.fixture(scope="module")
def tok(tiny):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(tiny[0])


def _rows(dataset) -> list[tuple[int, ...]]:
    return [tuple(r) for r in dataset["input_ids"]]


def test_load_datasets_groups_the_fixed_order_by_default_and_trains_on_the_same_examples(tiny, tok):
    from modx_widgets.data import load_datasets

    base = {"train_file": str(tiny[1]), "max_seq_length": 512, "seed": 7, "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 4, "eval_split_ratio": 0.1}
    grouped = load_datasets(base, "sft", tok)
    plain = load_datasets({**base, "group_by_length": False}, "sft", tok)
    assert grouped.sequential and plain.sequential
    assert sorted(_rows(grouped.train)) == sorted(_rows(plain.train))  # same examples...
    assert _rows(grouped.eval) == _rows(plain.eval)  # ...and the split does not move
    assert grouped.stats.lengths == [len(r) for r in _rows(grouped.train)]
    pairs = lambda d: sorted(zip(_rows(d.train), d.train_lines))  # each example keeps its file line
    assert pairs(grouped) == pairs(plain) and grouped.train_lines != plain.train_lines
    lengths = np.array(plain.stats.lengths)
    real = int(lengths.sum())
    assert padded_tokens(range(len(lengths)), np.array(grouped.stats.lengths), 2) - real < 0.5 * (
        padded_tokens(range(len(lengths)), lengths, 2) - real
    )


@pytest.mark.parametrize("overrides", [dict(reshuffle=True), dict(per_device_train_batch_size=1),
                                       dict(padding_free=True)], ids=["sampler-groups-instead", "batch-of-one",
                                                                     "padding-free"])
def test_load_datasets_keeps_the_shuffled_order_where_grouping_does_not_apply(tiny, tok, overrides):
    from modx_widgets.data import load_datasets

    base = {"train_file": str(tiny[1]), "max_seq_length": 512, "seed": 7}
    assert _rows(load_datasets({**base, **overrides}, "sft", tok).train) == _rows(
        load_datasets({**base, "group_by_length": False}, "sft", tok).train
    )


def test_reshuffled_epochs_draw_length_grouped_batches_from_the_known_lengths(tiny, tok, tmp_path):
    from modx_widgets.config.build import training_arguments
    from modx_widgets.config.validate import validate
    from modx_widgets.data import collator, load_datasets
    from modx_widgets.run.model import load_model
    from modx_widgets.run.trainer import ModxTrainer

    values = validate({"train_file": str(tiny[1]), "model_path": str(tiny[0]), "output_dir": str(tmp_path / "o"),
                       "reshuffle": True, "max_seq_length": 512}, "sft", check_paths=False).values
    data = load_datasets(values, "sft", tok)
    args = training_arguments(values, "sft", device="cpu")
    assert args.train_sampling_strategy == "group_by_length"
    trainer = ModxTrainer(model=load_model(values), args=args, train_dataset=data.train,
                          data_collator=collator(tok), processing_class=tok, train_lengths=data.stats.lengths)
    order = list(trainer._get_train_sampler())
    assert sorted(order) == list(range(len(data.train)))
    lengths = np.array(data.stats.lengths)
    real = int(lengths.sum())
    batch = int(values["per_device_train_batch_size"])
    shuffled = np.random.default_rng(0).permutation(len(lengths))
    assert padded_tokens(order, lengths, batch) - real < 0.5 * (padded_tokens(shuffled, lengths, batch) - real)


@pytest.mark.slow
def test_padding_free_run_trains_on_flattened_batches_and_learns_like_the_padded_run(tiny, tmp_path, monkeypatch):
    import threading

    from modx_widgets.events import Log
    from modx_widgets.run.engine import execute
    from modx_widgets.run.trainer import ModxTrainer
    from modx_widgets.store import Workspace

    seen: list[tuple] = []
    original = ModxTrainer.training_step

    def recording_step(self, model, inputs, *args, **kwargs):
        seen.append((tuple(inputs["input_ids"].shape), "position_ids" in inputs))
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(ModxTrainer, "training_step", recording_step)
    shapes, losses = {}, {}
    for flat in (False, True):
        ws = Workspace(tmp_path / f"ws{flat}")
        ws.create_task("t", "sft", None, "cpu", {
            "train_file": str(tiny[1]), "model_path": str(tiny[0]), "output_dir": str(tmp_path / f"out{flat}"),
            "max_steps": 4, "logging_steps": 1, "save_strategy": "no", "use_lora": False, "learning_rate": 1e-3,
            "padding_free": flat, "group_by_length": False, "gradient_checkpointing": False, "max_seq_length": 256,
        })
        logs: list[float] = []
        seen.clear()
        listener = lambda event: logs.append(event.loss) if isinstance(event, Log) and event.loss is not None else None
        assert execute(ws, "t", listener, threading.Event()) == "Completed"
        shapes[flat], losses[flat] = list(seen), logs
    assert shapes[True] and all(shape[0] == 1 and has_positions for shape, has_positions in shapes[True])
    assert any(shape[0] > 1 for shape, _ in shapes[False]) and not any(p for _, p in shapes[False])
    # same examples in the same order, only the layout differs
    assert len(losses[True]) == 4 and losses[True] == pytest.approx(losses[False], rel=2e-3)
