"""Tests for the sample-corpus builder: wiki markup stripping and the C4 shard format."""

import gzip
import json
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# data_prep is a repo-root package, not part of the installed bert_jax distribution.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from data_prep import build_corpus  # noqa: E402

WIKITEXT = """{{Infobox person|name=Ada|image=Ada.jpg{{nested|x}}}}
'''Ada Lovelace''' was an English [[mathematician]] and [[Writer|writer]].<ref>Toole, p. 1.</ref>
She is known for her work on [[Charles Babbage]]'s [[Analytical Engine|engine]].<ref name="b"/>
[[File:Ada.jpg|thumb|Portrait of [[Ada Lovelace|Ada]] by an artist.]]
{| class="wikitable"
| cell one || cell two
|}
== Early life ==
<!-- a comment --> Her father was the poet [http://example.org Lord Byron], who left early.
* A short list item
[[Category:Mathematicians]]
[[de:Ada Lovelace]]
== References ==
Everything after this heading is dropped, even complete sentences like this one.
"""


def test_strip_wiki_markup_keeps_prose_and_drops_markup():
    text = build_corpus.strip_wiki_markup(WIKITEXT)
    assert text.split("\n") == [
        "Ada Lovelace was an English mathematician and writer.",
        "She is known for her work on Charles Babbage's engine.",
        "Her father was the poet Lord Byron, who left early.",
    ]


def test_chunk_document_splits_at_paragraphs():
    paragraphs = [f"Paragraph {i} " + "x" * 40 for i in range(10)]
    document = build_corpus.Document("\n".join(paragraphs), "https://a/b", "test")
    chunks = build_corpus.chunk_document(document, max_chars=120)
    assert "\n".join(c.text for c in chunks) == document.text
    assert all(len(c.text) <= 120 for c in chunks)
    assert [c.url for c in chunks[:2]] == ["https://a/b#part-0", "https://a/b#part-1"]


def test_split_keeps_chunks_of_one_text_together_and_is_deterministic():
    documents = [
        build_corpus.Document(f"text {g} {k}", f"https://a/{g}#part-{k}", "test")
        for g in range(100)
        for k in range(3)
    ]
    train, validation = build_corpus.split_train_validation(documents, 0.1, seed=0)
    assert sorted(train + validation) == sorted(documents)
    train_groups = {d.url.split("#")[0] for d in train}
    validation_groups = {d.url.split("#")[0] for d in validation}
    assert not train_groups & validation_groups
    assert 5 <= len(validation_groups) <= 15
    assert (train, validation) == build_corpus.split_train_validation(documents, 0.1, seed=0)


def _read_shards(pattern: str) -> list[dict]:
    paths = sorted((REPO_ROOT / "data/c4_sample").glob(pattern))
    assert paths, f"no {pattern} in data/c4_sample; run `make corpus`"
    records = []
    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8") as shard:
            records += [json.loads(line) for line in shard]
    return records


@pytest.fixture(scope="session")
def shards() -> dict[str, list[dict]]:
    return {
        "train": _read_shards("c4-train.*-of-*.json.gz"),
        "validation": _read_shards("c4-validation.00000-of-00001.json.gz"),
    }


def test_built_shards_have_c4_format(shards):
    names = sorted(p.name for p in (REPO_ROOT / "data/c4_sample").glob("c4-train.*.json.gz"))
    assert names[0].startswith("c4-train.00000-of-")
    for records in shards.values():
        for record in records:
            assert set(record) == {"text", "url", "timestamp"}
            assert record["text"].strip() and record["url"] and record["timestamp"]


def test_built_splits_are_disjoint_and_sized(shards):
    train_urls = {r["url"].split("#")[0] for r in shards["train"]}
    validation_urls = {r["url"].split("#")[0] for r in shards["validation"]}
    assert not train_urls & validation_urls
    train_chars = sum(len(r["text"]) for r in shards["train"])
    validation_chars = sum(len(r["text"]) for r in shards["validation"])
    assert train_chars > 3_000_000
    assert 0.01 < validation_chars / (train_chars + validation_chars) < 0.06


def test_built_corpus_excludes_rotten_tomatoes_and_wiki_markup(shards):
    all_text = "\n".join(r["text"] for records in shards.values() for r in records)
    assert "{{" not in all_text and "[[" not in all_text and "<ref" not in all_text
    assert not any("rotten" in r["url"] for records in shards.values() for r in records)
