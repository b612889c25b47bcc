"""Merge the per-process parts of a parallel GLUE sweep into one results folder.

    python scripts/glue_merge.py OUTPUT_DIR PART_DIR [PART_DIR ...]

Two processes must not share an output folder, so a parallel sweep writes one folder per process. Every
part must record the same settings (settings.json, written by sinelr's sweep runner), and so must
OUTPUT_DIR when it exists. Rows of summary.csv are merged by their key (a later part wins), provenance.json
lists the commands of every part, config.json is the first part's. Then
`sinelr glue --render-only true --output-dir OUTPUT_DIR ...` writes summary.md.
"""
import json
import shutil
import sys
from pathlib import Path

from sinelr.data.glue import RESULT_COLUMNS, RESULT_KEY
from sinelr.report import ResultsTable, write_json


def _settings(folder: Path) -> dict:
    path = folder / "settings.json"
    if not (folder / "summary.csv").is_file() or not path.is_file():
        raise SystemExit(f"{folder}: expected summary.csv and settings.json (a results folder of `sinelr glue`)")
    return json.loads(path.read_text())["settings"]


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    out, parts = Path(argv[0]), [Path(p) for p in argv[1:]]
    settings = [_settings(p) for p in parts]
    if any(s != settings[0] for s in settings):
        diff = sorted(k for s in settings for k in set(s) | set(settings[0]) if s.get(k) != settings[0].get(k))
        raise SystemExit(f"the parts hold results of different settings (differing keys: {diff}); not merging")
    if (out / "summary.csv").is_file() and _settings(out) != settings[0]:
        raise SystemExit(f"{out} holds results of other settings; not merging into it")
    table = ResultsTable(out / "summary.csv", RESULT_COLUMNS, RESULT_KEY)
    runs = json.loads((out / "provenance.json").read_text()).get("runs", []) if (out / "provenance.json").is_file() else []
    for p in parts:
        for row in ResultsTable(p / "summary.csv", RESULT_COLUMNS, RESULT_KEY).rows:
            table.add(row, save=False)
        runs += json.loads((p / "provenance.json").read_text()).get("runs", [])
    out.mkdir(parents=True, exist_ok=True)
    table.save()
    shutil.copy2(parts[0] / "settings.json", out / "settings.json")
    shutil.copy2(parts[0] / "config.json", out / "config.json")
    write_json(out / "provenance.json", {**json.loads((parts[0] / "provenance.json").read_text()), "runs": runs})
    print(f"{len(table.rows)} rows from {len(parts)} parts -> {out / 'summary.csv'}")


if __name__ == "__main__":
    main(sys.argv[1:])
