"""README-only drafts against the hand-written product files (issue 14's measurement).

For every held-out product file of the corpus, the product's README at the file's
commit (``meta.commit``) is drafted with ``scopeguard init --from-docs``'s code and put in
a copy of the corpus in place of the hand-written file; then

    python models/experiments/drafted_files.py MIRRORS OUT
    scopeguard eval --corpus OUT --split heldout

compares the verdicts. MIRRORS holds bare clones named ``<owner>+<repo>/repo`` (the
products' git history is not in this repository).
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from scopeguard.draft import Doc, draft, render
from scopeguard.positioning import parse_positioning, read_yaml

SRC = Path(__file__).resolve().parent.parent / "data" / "corpus"
OUT = Path(sys.argv[2])
MIRRORS = {p.name.split("+", 1)[1].lower(): p / "repo" for p in Path(sys.argv[1]).iterdir()
           if p.is_dir() and "+" in p.name}
ALIAS = {"changedetection": "changedetection.io", "gotify": "server", "httpie": "cli",
         "plausible": "docs"}

if OUT.exists():
    shutil.rmtree(OUT)
shutil.copytree(SRC, OUT)
split = json.loads((SRC / "split.json").read_text())
stats = {"files": 0, "drafted": 0, "features": 0, "non_goals": 0, "hand_features": 0,
         "hand_non_goals": 0, "failed": []}
for slug in split["heldout"]:
    repo = MIRRORS.get(ALIAS.get(slug, slug).lower())
    for path in sorted((OUT / "products" / slug).glob("*.yml")):
        hand = yaml.safe_load(path.read_text())
        stats["files"] += 1
        commit = hand["meta"]["commit"]
        text = None
        for name in ("README.md", "README.rst", "readme.md", "Readme.md", "README"):
            got = subprocess.run(["git", "--git-dir", str(repo), "show", f"{commit}:{name}"],
                                 capture_output=True, text=True)
            if got.returncode == 0:
                text, readme = got.stdout, name
                break
        if text is None:
            stats["failed"].append(f"{slug}/{path.name}: no README")
            continue
        d = draft([Doc(readme, text)], hand.get("product", ""))
        try:
            data = read_yaml(render(d, [readme]), str(path))
            if not data.get("features"):
                data["features"] = [{"name": hand.get("product", slug)}]
            parse_positioning(data, str(path))
        except Exception as exc:  # noqa: BLE001
            stats["failed"].append(f"{slug}/{path.name}: {exc}")
            continue
        data["meta"] = hand["meta"]
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        stats["drafted"] += 1
        stats["features"] += len(d.features)
        stats["non_goals"] += len(d.non_goals)
        stats["hand_features"] += len(hand.get("features") or [])
        stats["hand_non_goals"] += len(hand.get("non_goals") or [])
print(json.dumps(stats, indent=1))
