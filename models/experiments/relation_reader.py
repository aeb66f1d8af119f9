"""The relation-reader experiment of issue 13 (not shipped; see models/MODEL_CARD.md).

A cross-encoder started from the bundled all-MiniLM-L6-v2, trained on (anchor, request)
pairs: the written requests of models/data/synthetic and the corpus's real requests with
the readers' step and deciding anchor, validated on real requests of training products
kept out (--val). It writes the model and, for every validation request, the relation
probabilities against every anchor of its product file (scores.json), with the MiniLM
cosines, for the ladder analysis in the model card.

    python models/experiments/relation_reader.py models/data/corpus models/data/synthetic \
        out/relations --epochs 4 --negatives 0 \
        --val lazydocker,leantime,redash,snipe-it,hedgedoc,httpie,jq,k9s,listmonk,ntfy,starship,zellij,zoxide

About 9 minutes of training on 2 CPU cores (4 epochs, 160 tokens, first layer frozen),
seeded. Needs torch and transformers (installed with sentence-transformers).
"""
import argparse
import collections
import json
import random
import time
from pathlib import Path

import torch
import yaml

from scopeguard.clean import clean_text
from scopeguard.embed import bundled_model_path

RELATIONS = ["unrelated", "served_by", "extends", "instance_of", "other_product", "situation",
             "general_form"]
STEP_REL = {1: "instance_of", 2: "served_by", 3: "other_product", 4: "situation",
            5: "general_form", 6: "extends"}
FIELDS = ("category", "target_customer", "need", "main_value")


def anchors_of(doc):
    out = []
    for f in doc.get("features") or []:
        if isinstance(f, dict):
            out.append(("feature", f["name"], f"feature: {f['name']}. {f.get('description') or ''}"))
        else:
            out.append(("feature", f, f"feature: {f}"))
    for n in doc.get("non_goals") or []:
        if isinstance(n, dict):
            extra = f" Instead: {n['instead']}" if n.get("instead") else ""
            out.append(("non_goal", n["name"],
                        f"non-goal: {n['name']}. {n.get('description') or ''}{extra}"))
        else:
            out.append(("non_goal", n, f"non-goal: {n}"))
    for k in FIELDS:
        if doc.get(k):
            out.append(("positioning", f"{k}: {doc[k]}", f"{k.replace('_', ' ')}: {doc[k]}"))
    return out


def resolve(anchors, text):
    text = (text or "").strip()
    if not text:
        return None
    for i, (_kind, key, _) in enumerate(anchors):
        if key == text or key.lower() == text.lower():
            return i
    for i, (kind, key, _) in enumerate(anchors):
        if kind == "positioning" and text.split(": ", 1)[-1] == key.split(": ", 1)[-1]:
            return i
    return None


def request_text(title, body, limit=900):
    return (title.strip() + "\n" + clean_text(body or ""))[:limit]


def load(corpus, synth):
    docs = {}
    for path in sorted((corpus / "products").glob("*/*.yml")):
        docs[(path.parent.name, path.stem)] = yaml.safe_load(path.read_text())
    real = [json.loads(x) for x in (corpus / "requests.jsonl").read_text().splitlines()]
    syn = []
    for path in sorted(synth.glob("*.jsonl")):  # check/ holds the blind check, not requests
        syn += [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return docs, real, syn


def build_pairs(items, docs, rng, negatives=2):
    pairs = []
    miss = 0
    for it in items:
        doc = docs[(it["product"], str(it["product_file"]))]
        anchors = anchors_of(doc)
        rel = it.get("relation") or STEP_REL[it["rule_step"]]
        anchor = it.get("anchor") if "relation" in it else it.get("deciding_anchor")
        i = resolve(anchors, anchor)
        if i is None:
            if rel in ("other_product", "situation", "general_form", "extends"):
                i = next((j for j, a in enumerate(anchors) if a[1].startswith(
                    ("need:", "category:"))), None)
            if i is None:
                miss += 1
                continue
        text = request_text(it["title"], it["body"])
        pairs.append((anchors[i][2], text, RELATIONS.index(rel)))
        if negatives:
            others = [j for j in range(len(anchors)) if j != i and anchors[j][0] != "positioning"]
            for j in rng.sample(others, min(negatives, len(others))):
                pairs.append((anchors[j][2], text, 0))
    return pairs, miss


def train(pairs, out, epochs, seed, max_len=160, batch=16, lr=6e-5, freeze=1):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    base = str(bundled_model_path())
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(RELATIONS))
    for p in model.bert.embeddings.parameters():
        p.requires_grad = False
    for layer in model.bert.encoder.layer[:freeze]:
        for p in layer.parameters():
            p.requires_grad = False
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps = epochs * ((len(pairs) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / (0.06 * steps)) * max(0.0, 1 - s / steps))
    counts = collections.Counter(y for _, _, y in pairs)
    weights = torch.tensor([len(pairs) / (len(RELATIONS) * max(1, counts[k]))
                            for k in range(len(RELATIONS))], dtype=torch.float32) ** 0.5
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    rng = random.Random(seed)
    model.train()
    t0 = time.time()
    step = 0
    for epoch in range(epochs):
        order = list(range(len(pairs)))
        rng.shuffle(order)
        total = 0.0
        for k in range(0, len(order), batch):
            chunk = [pairs[i] for i in order[k:k + batch]]
            enc = tok([a for a, _, _ in chunk], [b for _, b, _ in chunk], truncation="only_second",
                      max_length=max_len, padding=True, return_tensors="pt")
            logits = model(**enc).logits
            loss = loss_fn(logits, torch.tensor([y for _, _, y in chunk]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            total += loss.item()
            step += 1
            if step % 100 == 0:
                print(f"epoch {epoch} step {step}/{steps} loss {total / (k // batch + 1):.3f} "
                      f"{time.time() - t0:.0f}s", flush=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return model, tok


@torch.no_grad()
def score(model, tok, anchors, text, max_len=160):
    model.eval()
    enc = tok([a[2] for a in anchors], [text] * len(anchors), truncation="only_second",
              max_length=max_len, padding=True, return_tensors="pt")
    return torch.softmax(model(**enc).logits, -1).numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("synth")
    ap.add_argument("out")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--val", default="")
    ap.add_argument("--no-real", action="store_true")
    ap.add_argument("--no-synth", action="store_true")
    ap.add_argument("--negatives", type=int, default=0,
                    help="unrelated anchors of the same product per pair (0: positives only)")
    args = ap.parse_args()
    corpus, synth, out = Path(args.corpus), Path(args.synth), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.negatives == 0:  # positives only: no "unrelated" class (the model card's run)
        RELATIONS.remove("unrelated")
    docs, real, syn = load(corpus, synth)
    split = json.loads((corpus / "split.json").read_text())
    heldout = set(split["heldout"])
    val = set(args.val.split(",")) if args.val else set()
    train_real = [r for r in real if r["product"] not in heldout | val]
    train_syn = [s for s in syn if s["product"] not in heldout | val]
    rng = random.Random(7)
    items = ([] if args.no_real else train_real) + ([] if args.no_synth else train_syn)
    pairs, miss = build_pairs(items, docs, rng, negatives=args.negatives)
    print(f"pairs {len(pairs)} (unresolved anchors {miss}); by class",
          collections.Counter(RELATIONS[y] for _, _, y in pairs), flush=True)
    model, tok = train(pairs, out / "model", args.epochs, seed=13)
    evaluate_set = [r for r in real if r["product"] in (val or heldout)]
    from sentence_transformers import SentenceTransformer
    st_model = SentenceTransformer(str(bundled_model_path()), device="cpu")
    rows = []
    for r in evaluate_set:
        doc = docs[(r["product"], str(r["product_file"]))]
        anchors = anchors_of(doc)
        text = request_text(r["title"], r["body"])
        probs = score(model, tok, anchors, text)
        vecs = st_model.encode([text] + [a[2] for a in anchors], normalize_embeddings=True)
        cos = (vecs[1:] @ vecs[0]).tolist()
        rows.append({"id": r["id"], "label": r["label"], "step": r["rule_step"], "cos": cos,
                     "kinds": [a[0] for a in anchors], "names": [a[1] for a in anchors],
                     "probs": probs.tolist(), "outcome": r.get("outcome")})
    (out / "scores.json").write_text(json.dumps(rows))
    print("scored", len(rows))


if __name__ == "__main__":
    main()
