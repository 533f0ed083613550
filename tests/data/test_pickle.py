from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from dfml.data._pickle import load_data_pickle


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def test_plain_data_pickles_load_with_their_arrays(tmp_path: Path) -> None:
    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps({"data": np.arange(6, dtype=np.uint8).reshape(2, 3), "names": ["a"]}, protocol))
        out = load_data_pickle(path)
        assert out["names"] == ["a"] and out["data"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_pickles_that_would_run_code_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(RunsCode()))
    with pytest.raises(ValueError, match=r"evil.pkl is not a readable dataset pickle .*refusing to load global"):
        load_data_pickle(path)
