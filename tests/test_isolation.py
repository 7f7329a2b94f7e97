"""The suite writes only into temporary folders: the caches the libraries really use are the session's (conftest.py),
never the user's home. Each library reads its setting once, at import, so this checks the values in effect."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

TMP = Path(tempfile.gettempdir()).resolve()


def in_session_cache(path) -> bool:
    session = Path(os.environ["HF_HOME"]).resolve().parent
    return Path(path).resolve().is_relative_to(session) and session.is_relative_to(TMP) and session != TMP


def test_the_session_cache_is_a_temporary_folder():
    assert in_session_cache(os.environ["HF_HOME"])
    assert not Path(os.environ["HF_HOME"]).resolve().is_relative_to(Path.home().resolve() / ".cache")


@pytest.mark.parametrize("cache", ["datasets", "hub", "modules", "matplotlib"])
def test_libraries_use_the_session_cache(cache):
    if cache == "datasets":
        import datasets.config

        path = datasets.config.HF_DATASETS_CACHE
    elif cache == "hub":
        import huggingface_hub.constants

        path = huggingface_hub.constants.HF_HUB_CACHE
    elif cache == "modules":
        import transformers.utils.hub

        path = transformers.utils.hub.HF_MODULES_CACHE
    else:
        import matplotlib

        path = matplotlib.get_cachedir()
    assert in_session_cache(path), path
