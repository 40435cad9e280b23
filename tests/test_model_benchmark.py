"""benchmarks.model: the inputs both codes get, and a clear refusal of a directory that is not the authors'
checkout (the side-by-side run itself needs that checkout and is never part of the tests)."""

from __future__ import annotations

import torch

from benchmarks import model as bench


def test_inputs_are_reproducible_and_masks_follow_the_eot():
    a = bench.make_inputs(2, 3, 32, vocab=1000, size=(8, 8))
    b = bench.make_inputs(2, 3, 32, vocab=1000, size=(8, 8))
    for key in a:
        assert torch.equal(a[key], b[key]), key  # the same in every process
    eot = a["captions"].argmax(-1)
    assert (eot == bench.CAPTION_EOT).all() and (a["text"].argmax(-1) == 31).all()
    positions = torch.arange(32)
    assert torch.equal(a["caption_mask"].bool(), positions <= eot.unsqueeze(-1))
    assert (a["captions"][..., bench.CAPTION_EOT + 1 :] == 0).all()
    assert a["video"].shape == (2, 3, 3, 8, 8) and a["video_mask"].all()


def test_a_directory_that_is_not_the_authors_checkout_is_refused(tmp_path, capsys):
    (tmp_path / "tvr").mkdir()
    rc = bench.main(["--reference", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1
    assert (
        f"error: {tmp_path.resolve()}: not a checkout of the authors' code (no tvr/models/modeling.py)" in err
    )
