"""``clip-metric score --workers``: no more decoding processes than there are batches and CPUs to use."""

from __future__ import annotations

import warnings

import pytest

from _helpers.data import captioned_folder
from clip_metric.cli import main
from clip_metric.cli.score import usable_cpus


@pytest.fixture()
def captioned(tmp_path):
    return captioned_folder(tmp_path, count=2)


@pytest.mark.parametrize("quiet", [False, True])
def test_more_workers_than_batches_and_cpus_are_capped_with_a_note_unless_quiet(quiet, captioned, tiny_clip_dir,
                                                                                capsys):
    requested = usable_cpus() + 3  # above the CPUs, so torch would warn, yet few enough to start if not capped
    argv = ["score", str(captioned), "--model", str(tiny_clip_dir), "--precision", "32", "--workers", str(requested)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv + (["--quiet"] if quiet else [])) == 0
    err = capsys.readouterr().err
    assert not [w for w in caught if "worker" in str(w.message)], [str(w.message) for w in caught]
    if quiet:
        assert "worker" not in err, err
    else:
        assert f"note: --workers {requested}: 1 decoding worker(s) used" in err, err
