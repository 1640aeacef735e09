"""Official files load strictly; truncated and foreign files give one-line errors naming the file."""

from __future__ import annotations

import pytest
import torch

from smoothdino.models import CheckpointError, load_decoder, load_encoder
from smoothdino.models.checkpoints import OFFICIAL_FILES, official_file, resolve
from smoothdino.models.weights import verify

from .spec_keys import save_official


@pytest.mark.parametrize("arch", ["vits14", "vitb14"])
def test_official_layout_loads_strictly(tmp_path, arch):
    backbone = save_official(tmp_path / f"dinov2_{arch}_pretrain.pth", arch, "backbone")
    dpt = save_official(tmp_path / f"dinov2_{arch}_nyu_dpt_head.pth", arch, "dpt", seed=1)
    lin = save_official(tmp_path / f"dinov2_{arch}_nyu_linear4_head.pth", arch, "linear4", seed=2)

    enc = load_encoder(arch, tmp_path)  # a folder holding the official names
    assert set(enc.state_dict()) == set(backbone)
    for k, v in backbone.items():
        assert torch.equal(enc.state_dict()[k], v), k
    dec = load_decoder(arch, "dpt", tmp_path / f"dinov2_{arch}_nyu_dpt_head.pth")
    assert set(dec.head.state_dict()) == set(dpt)
    assert torch.equal(dec.head.state_dict()["conv_depth.head.4.weight"], dpt["conv_depth.head.4.weight"])
    dec4 = load_decoder(arch, "linear4", tmp_path)
    assert torch.equal(dec4.head.conv_depth.weight, lin["conv_depth.weight"])
    assert enc.weights_id.startswith(f"dinov2_{arch}_pretrain.pth@sha256:")


def test_truncated_file_one_line_error(tmp_path):
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    save_official(path, "vits14", "backbone")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError) as err:
        load_encoder("vits14", path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "fetch it again" in msg


def test_foreign_file_names_keys(tmp_path):
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    save_official(path, "vitb14", "backbone")  # a ViT-B file under a ViT-S name
    with pytest.raises(CheckpointError) as err:
        load_encoder("vits14", path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "wrong shapes" in msg and "cls_token" in msg

    other = tmp_path / "random.pth"
    torch.save({"foo.weight": torch.zeros(3), "cls_token": torch.zeros(1, 1, 384)}, other)
    with pytest.raises(CheckpointError) as err:
        load_encoder("vits14", other)
    msg = str(err.value)
    assert "missing keys" in msg and "unexpected keys (foo.weight)" in msg and "\n" not in msg

    head = tmp_path / "head.pth"
    torch.save({"state_dict": {"backbone.x": torch.zeros(1)}}, head)
    with pytest.raises(CheckpointError, match="decode_head"):
        load_decoder("vits14", "dpt", head)


def test_missing_weights_say_how_to_get_them(home):
    with pytest.raises(CheckpointError) as err:
        load_encoder("vits14")
    msg = str(err.value)
    assert "dinov2_vits14_pretrain.pth" in msg and "smoothdino weights fetch vits14" in msg
    assert "--random-weights" in msg


def test_registry_urls_follow_release_layout():
    names = {f.name for f in OFFICIAL_FILES}
    assert "dinov2_vits14_nyu_dpt_head.pth" in names and "dinov2_vitg14_nyu_linear4_head.pth" in names
    f = official_file("vitb14", "backbone")
    assert f.url == "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth"


def test_verify_pins_hash_and_detects_change(tmp_path):
    path = tmp_path / "dinov2_vits14_nyu_linear4_head.pth"
    save_official(path, "vits14", "linear4")
    f = official_file("vits14", "linear4")
    digest = verify(path, f)
    assert (tmp_path / "SHA256SUMS").read_text().split()[0] == digest
    assert resolve(f, tmp_path) == path
    save_official(path, "vits14", "linear4", seed=5)  # same layout, other bytes
    with pytest.raises(CheckpointError, match="differs from the pinned"):
        verify(path, f)
