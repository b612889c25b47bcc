"""Does a trained sine-LoRA adapter use the rank the sine gives it? (issue 14, beyond the paper; docs/glue.md)

The paper's case for sine-LoRA is rank: sin(omega B A) / g can have rank far above k. Whether a *trained*
adapter uses that rank is a question about the weights, not about the dev score, and the GLUE run folders keep
every adapter. For each finished LoRA / sine-LoRA / DoRA / sine-DoRA fine-tune under --run-dir this script reads
the update delta W of every adapted projection (PEFT's own `get_delta_weight`: the update that merges; DoRA's
merge then rescales each column of W0 + delta W to its learned magnitude) and measures

- the share of ||delta W||_F^2 outside its top k singular directions (exactly 0 for LoRA, whose update has
  rank k) and its stable rank;
- for sine-LoRA and sine-DoRA, the size of the sine's argument omega B A (rms and max over entries: sin x ~ x
  while |x| << 1) and how far delta W is from its linearisation omega B A / g * scaling, a plain rank-k LoRA
  update (for the offset start, --init-argument-rms, its first-order expansion around the start); ||delta W|| /
  ||W0|| (all from `sinelr.peft.update_stats`, the same check for any sine-LoRA model).

With --eval each sine-LoRA model is also scored on its dev rows (a grid run's: its validation rows) four ways, with
the trained head: merged as trained (this must reproduce the table's row), with every delta W cut to its best
rank-k approximation (`sinelr.spectral.truncate_rank`), with every delta W linearised, and with Gaussian noise of
the norm the cut removes added to every delta W (seeded). If cutting delta W to rank k leaves the score where it
was, the rank above k that the sine adds plays no part in what the model learned; if the cut costs more than the
noise, the part above rank k carries what the model uses, not only size.

    python scripts/glue_adapter_rank.py --eval    # results/glue/all-MiniLM-L6-v2-tab3-adapter-rank/
    python scripts/glue_adapter_rank.py --eval --run-dir runs/glue/offset1_grid_k4_stsb_lr7e-4 \
        --output-dir results/glue/offset1_grid_k4_stsb_lr7e-4-adapter-rank   # one grid folder

Rows are keyed by the adapter file's sha256: a rerun skips adapters already measured and remeasures any
that changed. Reads only finished run folders (adapter + metrics.json); a fine-tune still training is skipped.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from sinelr.report import markdown_table, paired_comparison, provenance, write_json  # noqa: E402
from sinelr.peft import adapted_layers, update_stats  # noqa: E402
from sinelr.spectral import singular_values, truncate_rank  # noqa: E402

METHODS = ("lora", "sine-lora", "dora", "sine-dora")
SINE = ("sine-lora", "sine-dora")  # the methods with a sine argument (its size and linearisation are measured)
COLORS = {"lora": "tab:blue", "sine-lora": "tab:red", "dora": "tab:green", "sine-dora": "tab:orange"}
# the --eval scores of a sine-LoRA model: as trained, cut to rank k, linearised, and the control of the cut: the
# trained update plus Gaussian noise of the norm the cut removes (seeded), which a cut that costs only its size matches
VARIANTS = ("trained", "rank_k", "linear", "noise")
COLUMNS = ("adapter_sha256", "folder", "task", "method", "rank", "omega", "seed", "metric_name", "metric",
           "modules", "energy_beyond_k_median", "energy_beyond_k_max", "stable_rank_median", "arg_rms_median",
           "arg_max", "linear_gap_median", "metric_trained", "metric_rank_k", "metric_linear",
           "relative_norm_median", "metric_noise")  # the last two: rows measured since stop 37
TASK_ORDER = ("cola", "sst2", "mrpc", "stsb", "rte")
SPECTRUM = 64  # leading singular values kept per update for the plot (spectra.json)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def finished_runs(run_dir: Path):
    """(folder, run config, record) of every finished fine-tune of METHODS under run_dir, in name order; the
    run config is the folder's config.json (config, extra: the schedules, point: task, method, rank, seed)."""
    for folder in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        files = [folder / "config.json", folder / "metrics.json", folder / "adapter" / "adapter_model.safetensors"]
        if not all(f.is_file() for f in files):
            continue
        run = json.loads(files[0].read_text())
        if run["point"]["method"] in METHODS:
            yield folder, run, json.loads(files[1].read_text())["record"]


def spectrum(layer) -> list:
    """The leading singular values of a layer's update, relative to the largest (for the plot)."""
    with torch.no_grad():
        s = singular_values(layer.get_delta_weight("default"))
    return [float(f"{v:.4g}") for v in (s[:SPECTRUM] / s[0]).tolist()] if s[0] > 0 else []


class Evaluator:
    """Dev rows (tokenized once per task and schedule), the model path and the metric function."""

    def __init__(self, model: str, data_dir):
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        from sinelr.models.encoder_classifier import resolve_model

        hf_logging.disable_progress_bar()  # one "Loading weights" bar per adapter otherwise
        self.model_path = resolve_model(model)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_path))
        self.data_dir = data_dir
        self.cache = {}

    def data(self, task: str, schedule: dict, val_fraction: float):
        from sinelr.data import resolve_data_dir
        from sinelr.data.glue import load_task_data

        key = (task, json.dumps(schedule, sort_keys=True), val_fraction)
        if key not in self.cache:
            root = resolve_data_dir(self.data_dir, "glue", "the GLUE task folders")
            self.cache[key] = load_task_data(task, self.tokenizer, root, schedule, val_fraction)
        return self.cache[key]

    def score(self, model, data) -> float:
        from sinelr.data.glue import evaluate

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return next(iter(evaluate(model, data, pad, 128, torch.device("cpu")).values()))


def analyse(folder: Path, run: dict, record: dict, evaluator: Evaluator, do_eval: bool):
    """One run's row (medians over its adapted modules) and its per-module rows."""
    from sinelr.models import encoder_classifier as ec
    from sinelr.train import seed_everything

    cfg, extra, point = run["config"], run["extra"], run["point"]
    task = point["task"]
    schedule = dict(extra["schedules"][task], dev_max=extra["dev_rows"][task])
    data = evaluator.data(task, schedule, float(cfg.get("val_fraction") or 0.0))
    seed_everything(point["seed"])  # as the recipe reloads a finished run: a base built from random weights repeats
    base = ec.load_classifier(evaluator.model_path, data.spec.num_labels, cfg["pooling"], cfg.get("attention", "sdpa"))
    model = ec.load_peft_model(base, folder / "adapter")
    layers = adapted_layers(model.base_model.model)  # names as in the merged model
    stats = update_stats(model.base_model.model)
    per_module = [{"module": name, "energy_beyond_k": st.energy_beyond_rank, "stable_rank": st.stable_rank,
                   "arg_rms": st.arg_rms, "arg_max": st.arg_max, "linear_gap": st.linear_gap,
                   "relative_norm": st.relative_norm}
                  for name, st in stats.items()]
    spectra = {name: spectrum(m) for name, m in layers.items()}
    row = {"folder": folder.name, "task": task, "method": point["method"], "rank": point["rank"],
           "omega": point.get("omega") or "", "seed": point["seed"], "metric_name": record["metric_name"],
           "metric": record["metric"], "modules": len(layers),
           "energy_beyond_k_median": statistics.median(p["energy_beyond_k"] for p in per_module),
           "energy_beyond_k_max": max(p["energy_beyond_k"] for p in per_module),
           "stable_rank_median": statistics.median(p["stable_rank"] for p in per_module),
           "relative_norm_median": statistics.median(p["relative_norm"] for p in per_module)}
    if point["method"] in SINE:
        row.update(arg_rms_median=statistics.median(p["arg_rms"] for p in per_module),
                   arg_max=max(p["arg_max"] for p in per_module),
                   linear_gap_median=statistics.median(p["linear_gap"] for p in per_module))
        # scored for sine-LoRA only: its merge is W0 + delta W, so a variant of delta W is a variant of the weight
        if do_eval and point["method"] == "sine-lora":
            with torch.no_grad():  # W0, delta W, its rank-k cut and its linear part, before merging changes W0
                deltas = {}
                for name, m in layers.items():
                    delta = m.get_delta_weight("default").double()
                    deltas[name] = (m.base_layer.weight.detach().clone(), delta, truncate_rank(delta, point["rank"]),
                                    m.linearised_delta_weight("default").double())
            merged = model.merge_and_unload()
            noise = torch.Generator().manual_seed(0)  # the same draws for every run

            def plus_noise(d, cut, lin):
                z = torch.randn(d.shape, generator=noise, dtype=d.dtype)
                return d + z * ((d - cut).norm() / z.norm())

            change = {"trained": lambda d, cut, lin: d, "rank_k": lambda d, cut, lin: cut,
                      "linear": lambda d, cut, lin: lin, "noise": plus_noise}
            for variant in VARIANTS:
                with torch.no_grad():
                    for name, (w0, delta, cut, linear) in deltas.items():
                        weight = merged.get_submodule(name).weight
                        weight.copy_((w0.double() + change[variant](delta, cut, linear)).to(weight.dtype))
                row[f"metric_{variant}"] = evaluator.score(merged, data)
    return row, [{"folder": folder.name, **p} for p in per_module], spectra


def read_rows(path: Path):
    if not path.is_file():
        return {}
    with open(path) as fh:
        return {r["adapter_sha256"]: r for r in csv.DictReader(fh)}


def write_csv(path: Path, columns, rows) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _num(v):
    return float(v) if v not in ("", None) else math.nan


def _col(rs, name):
    return [_num(r.get(name)) for r in rs]


def _median_range(values) -> str:
    values = sorted(v for v in values if not math.isnan(v))  # NaN: not measured for that row
    return f"{statistics.median(values):.3g} ({values[0]:.3g}-{values[-1]:.3g})" if values else "-"


def _pairs(after, before):
    """(after, before) of the runs where both were measured."""
    return [(a, b) for a, b in zip(after, before) if not (math.isnan(a) or math.isnan(b))]


def _max_gap(after, before) -> str:
    gaps = [abs(a - b) for a, b in _pairs(after, before)]
    return f"{max(gaps):.2g}" if gaps else "-"


def _spread(after, before) -> str:
    """mean (min, max) of after - before over the runs where both exist."""
    d = [a - b for a, b in _pairs(after, before)]
    return f"{statistics.mean(d):+.2f} ({min(d):+.2f}, {max(d):+.2f})" if d else "-"


def per_task_table(rows) -> str:
    """Per task (sine-LoRA, every rank): the dev score as trained and what the rank-k cut and the linearisation
    change, mean (min, max) over runs."""
    lines = []
    for task in TASK_ORDER:
        rs = [r for r in rows if r["method"] == "sine-lora" and r["task"] == task and r.get("metric_rank_k")]
        if rs:
            trained = _col(rs, "metric_trained")
            ranks = ", ".join(str(k) for k in sorted({int(r["rank"]) for r in rs}))
            lines.append({"task": task, "metric": rs[0]["metric_name"], "runs (k)": f"{len(rs)} ({ranks})",
                          "as trained": f"{statistics.mean(trained):.2f}",
                          "rank-k cut - trained": _spread(_col(rs, "metric_rank_k"), trained),
                          "linearised - trained": _spread(_col(rs, "metric_linear"), trained),
                          "noise of the cut's norm - trained": _spread(_col(rs, "metric_noise"), trained)})
    return markdown_table(lines, list(lines[0])) if lines else ""


def _interval(after, before) -> str:
    """after - before paired by run: mean [95% t-interval] (the verdict rule's interval), '-' under 2 runs."""
    pairs = _pairs(after, before)
    if len(pairs) < 2:
        return "-"
    c = paired_comparison({i: b for i, (a, b) in enumerate(pairs)}, {i: a for i, (a, b) in enumerate(pairs)})
    return c.interval_text(unit="run")


def run_setting(runs) -> dict:
    """What the summary says about how the runs were made: the sine-LoRA start(s) and the rows they are scored on."""
    starts = sorted({run["config"].get("init_argument_rms") for _, run, *_ in runs}, key=lambda s: (s is not None, s))
    val = any(float(run["config"].get("val_fraction") or 0.0) for _, run, *_ in runs)
    return {"starts": starts, "score": "val" if val else "dev"}


def _start_line(starts) -> str:
    texts = []
    for s in starts:
        texts.append("B = 0 (PEFT's): the linearisation of an update is omega B A / g * scaling, a rank-k LoRA update"
                     if s is None else
                     f"the offset start (init_argument_rms = {s:g}: omega B A starts with rms {s:g}, the update "
                     "subtracts its starting value): the linearisation of an update is its first-order expansion "
                     "around the start, cos(omega B0 A0) * omega (B A - B0 A0) / g * scaling")
    return "- sine-LoRA start: " + ("; ".join(texts) if texts else "none run")


def summary_lines(rows, run_dir: Path, prov: dict, plot: str, setting: dict = None):
    setting = setting or {"starts": [None], "score": "dev"}
    score = setting["score"]
    groups = {}
    for r in rows:
        groups.setdefault((r["method"], int(r["rank"])), []).append(r)
    table = []
    for (method, rank), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        metric = [_num(r["metric"]) for r in rs]
        line = {"method": method, "k": rank, "runs": len(rs),
                "energy outside top k (median over modules; range over runs)":
                    _median_range(_num(r["energy_beyond_k_median"]) for r in rs),
                "stable rank": _median_range(_num(r["stable_rank_median"]) for r in rs),
                "||delta W|| / ||W0||": _median_range(_num(r.get("relative_norm_median")) for r in rs)}
        if method in SINE:
            line.update({"rms of omega B A": _median_range(_num(r["arg_rms_median"]) for r in rs),
                         "max abs omega B A": _median_range(_num(r["arg_max"]) for r in rs),
                         "||delta - linearised|| / ||delta||": _median_range(_num(r["linear_gap_median"]) for r in rs)})
        if method == "sine-lora":
            line.update({f"{score}: max abs(merged - table row)": _max_gap(_col(rs, "metric_trained"), metric),
                         f"{score}: rank-k cut - trained": _interval(_col(rs, "metric_rank_k"),
                                                                     _col(rs, "metric_trained")),
                         f"{score}: linearised - trained": _interval(_col(rs, "metric_linear"),
                                                                     _col(rs, "metric_trained")),
                         f"{score}: trained + noise of the cut's norm - trained": _interval(
                             _col(rs, "metric_noise"), _col(rs, "metric_trained"))})
        table.append(line)
    columns = list(dict.fromkeys(c for line in table for c in line))
    updates = " or ".join(sorted({str(r["modules"]) for r in rows}))
    table = [{c: line.get(c, "-") for c in columns} for line in table]
    return [
        "# Does a trained sine-LoRA adapter use its rank above k? (GLUE, all-MiniLM-L6-v2)", "",
        f"- computed by: `{prov['command']}` (git sha {prov['git_sha']}, {prov['date']}, {prov['machine']}); the rows "
        "of adapters an earlier run of it measured are reused, keyed by the adapter file's sha256",
        f"- adapters: every finished LoRA / sine-LoRA / DoRA / sine-DoRA fine-tune under `{run_dir}` (each row's "
        "`folder` names its run folder, whose config.json holds its command, settings and seed); the adapted "
        f"projections (query and value of every layer): {updates} updates per adapter",
        _start_line(setting["starts"]),
        "- per run: medians over its updates of the share of ||delta W||_F^2 outside the top k singular "
        "directions, the stable rank, the rms of the sine's argument and the relative distance of delta W from "
        "its linearisation; the max abs argument over all entries. rows.csv: per run; modules.csv: per update",
        f"- {score} scores (sine-LoRA; {'dev' if score == 'dev' else 'the held-out validation rows of the run'}): the "
        "merged model as trained (must equal the table's row), with every delta W cut to its best rank-k "
        "approximation, with every delta W linearised, and, the control of the cut, with Gaussian noise of the norm "
        "the cut removes added to every delta W (a cut that costs more than that removes what the model uses); "
        "differences paired by run, mean [95% t-interval]. ||delta W|| / ||W0|| and the noise control: rows "
        "measured since stop 37 ('nan' / '-' for earlier rows)", "",
        markdown_table(table, columns), "",
        f"Per task, sine-LoRA ({score}, mean (min, max) over runs):", "",
        per_task_table(rows), "",
        f"![singular values of the trained updates]({plot})", "",
    ]


def plot_spectra(path: Path, spectra, rows) -> None:
    """s_i / s_1 of every update of seed-0 runs at the largest rank, LoRA vs sine-LoRA, one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rank = max(int(r["rank"]) for r in rows)
    tasks = [t for t in TASK_ORDER if any(r["task"] == t and int(r["rank"]) == rank and int(r["seed"]) == 0
                                          and r["folder"] in spectra for r in rows)]
    if not tasks:
        return
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.0), sharey=True, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for r in rows:
            if r["task"] == task and int(r["rank"]) == rank and int(r["seed"]) == 0 and r["folder"] in spectra:
                color = COLORS[r["method"]]
                for s in spectra[r["folder"]].values():
                    ax.semilogy(range(1, len(s) + 1), [max(v, 1e-12) for v in s], color=color, alpha=0.35, lw=0.8)
        ax.axvline(rank, color="gray", ls=":")
        ax.set_title(task)
        ax.set_xlabel("singular value index i")
        ax.set_ylim(1e-8, 1.5)
    axes[0][0].set_ylabel("s_i / s_1 of delta W")
    for method in sorted({r["method"] for r in rows if r["folder"] in spectra}, key=METHODS.index):
        axes[0][-1].plot([], [], color=COLORS[method], label=method)
    axes[0][-1].legend(loc="upper right", fontsize=8)
    fig.suptitle(f"trained updates delta W, k = {rank}, seed 0, every adapted projection (dotted: k)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir", default="runs/glue/all-MiniLM-L6-v2-tab3", type=Path)
    ap.add_argument("--output-dir", default="results/glue/all-MiniLM-L6-v2-tab3-adapter-rank", type=Path)
    ap.add_argument("--model", default="minilm", help="the checkpoint the adapters were trained on")
    ap.add_argument("--data-dir", default=None, help="GLUE folder (default: $SINELR_DATA_DIR or ../shared/data)")
    ap.add_argument("--eval", action="store_true",
                    help="also score each sine-LoRA model four ways (on dev, or on a grid run's validation rows)")
    args = ap.parse_args(argv)
    if not args.run_dir.is_dir():
        print(f"--run-dir {args.run_dir}: no such folder (expected the run folders of `sinelr glue`)", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    old, mod_old = read_rows(out / "rows.csv"), []
    if (out / "modules.csv").is_file():
        with open(out / "modules.csv") as fh:
            mod_old = list(csv.DictReader(fh))
    spectra = json.loads((out / "spectra.json").read_text()) if (out / "spectra.json").is_file() else {}
    evaluator = Evaluator(args.model, args.data_dir)
    runs = [(folder, run, record, sha256(folder / "adapter" / "adapter_model.safetensors"))
            for folder, run, record in finished_runs(args.run_dir)]
    # rows of run folders no longer on disk (runs/ is git-ignored: a fresh checkout has none of the earlier ones) are
    # kept as measured; a folder still there but holding another adapter (a rerun) is measured again
    present = {folder.name for folder, *_ in runs}
    kept = [r for r in old.values() if r["folder"] not in present]
    rows, module_rows = [], [m for m in mod_old if m["folder"] in {r["folder"] for r in kept}]
    for i, (folder, run, record, key) in enumerate(runs, 1):
        prev = old.get(key)
        scored = bool(prev and prev.get("metric_rank_k"))
        if prev and prev.get("relative_norm_median") and \
                (not args.eval or run["point"]["method"] != "sine-lora" or scored):
            rows.append(prev)
            module_rows += [m for m in mod_old if m["folder"] == folder.name]
            continue
        print(f"[{i}/{len(runs)}] {folder.name}", flush=True)
        # a row from before the relative norm: its measures are redone (seconds), its scores kept (minutes each)
        row, per_module, spec = analyse(folder, run, record, evaluator, args.eval and not scored)
        if scored:
            row.update({c: prev.get(c, "") for c in COLUMNS if c.startswith("metric_")})
        rows.append({"adapter_sha256": key, **row})
        module_rows += per_module
        spectra[folder.name] = spec
        # progress survives an interruption: the rows so far and the earlier rows of adapters not reached yet
        later = [old[k] for *_, k in runs[i:] if k in old]
        write_csv(out / "rows.csv", COLUMNS, rows + later + kept)
    rows += kept
    live = {r["folder"] for r in rows}
    spectra = {k: v for k, v in spectra.items() if k in live}
    write_csv(out / "rows.csv", COLUMNS, rows)
    write_csv(out / "modules.csv", ("folder", "module", "energy_beyond_k", "stable_rank", "arg_rms", "arg_max",
                                    "linear_gap", "relative_norm"), module_rows)
    (out / "spectra.json").write_text(json.dumps(spectra, sort_keys=True, separators=(",", ":")) + "\n")
    prov = provenance(["python", "scripts/glue_adapter_rank.py"] + (argv if argv is not None else sys.argv[1:]))
    write_json(out / "provenance.json", prov)
    plot_spectra(out / "spectra.png", spectra, rows)
    (out / "summary.md").write_text("\n".join(summary_lines(rows, args.run_dir, prov, "spectra.png",
                                                           run_setting(runs))) + "\n")
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
