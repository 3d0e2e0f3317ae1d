"""The model card's cast probe (docs/cast_probe.py): its multiple-choice cast head finds the casts there are."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

PROBE = Path(__file__).resolve().parents[1] / "docs" / "cast_probe.py"
spec = importlib.util.spec_from_file_location("cast_probe", PROBE)
cast_probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cast_probe)


def test_a_cast_the_features_tell_is_learnt_with_a_confident_weight():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2000, 6, generator=generator)
    offsets = torch.where(features[:, :1] > 0, torch.tensor([20.0, -10.0]), torch.tensor([-15.0, 25.0]))
    head = cast_probe.fit_cast_head(features, offsets, k=4, steps=1500, seed=0)
    with torch.no_grad():
        casts, logits = head(features[:200])
    chosen = casts[torch.arange(200), logits.argmax(-1)]
    assert (chosen - offsets[:200]).norm(dim=-1).median() < 3.0
    assert logits.softmax(-1).amax(-1).mean() > 0.8


def test_casts_the_features_do_not_tell_are_all_found_with_even_weights():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(2000, 6, generator=generator)
    modes = torch.tensor([[30.0, 0.0], [-30.0, 0.0]])
    offsets = modes[torch.randint(0, 2, (2000,), generator=generator)]
    head = cast_probe.fit_cast_head(features, offsets, k=2, steps=1500, seed=0)
    with torch.no_grad():
        casts, logits = head(features[:200])
    relaxed = 2 * cast_probe.WINNER_SHARE - 1  # the loser's share pulls each cast towards the other mode
    for mode in modes:  # each mode has a cast at it, for every photo
        assert (casts - relaxed * mode).norm(dim=-1).amin(-1).median() < 1.5
    weights = logits.softmax(-1)
    assert (weights - 0.5).abs().mean() < 0.15


def test_a_release_without_a_guide_is_refused_in_one_sentence(debug_release, photo_folder, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cast_probe.main(["--model", str(debug_release), "--fit-data", str(photo_folder), "--data", str(photo_folder)])
    assert exit_info.value.code == 2
    assert "has no colour guide" in capsys.readouterr().err


def test_a_missing_photo_folder_is_one_sentence_and_exit_2(debug_release, tmp_path, capsys):
    code = cast_probe.main(["--fit-data", str(tmp_path / "none"), "--data", str(tmp_path / "none")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "none" in err and "Traceback" not in err
