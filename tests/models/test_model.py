"""Tests of gpcis.models.model (SegmentationModel, ModelConfig) and the complexity script."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from gpcis.clicks import Click, ClickBatch
from gpcis.gp import GPHeadConfig
from gpcis.models import ModelConfig, SegmentationModel, create_model, save_checkpoint
from gpcis.models.registry import FULL_SIZE_MODELS

REPO = Path(__file__).resolve().parents[2]
SIZE = 64


def _batch(b=2, size=SIZE):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(b, 3, size, size, generator=gen)
    clicks = ClickBatch.from_lists(
        [[Click(10, 12, True), Click(50, 40, False)], [Click(size - 1, 0, True)]][:b]
    )
    return image, clicks


def _small_gp_model(**kw) -> SegmentationModel:
    return SegmentationModel(ModelConfig(backbone="tiny", head="gp", gp=GPHeadConfig(num_features=32), **kw))


@pytest.mark.parametrize("name", ["gpcis_tiny", "ritm_tiny"])
def test_forward_backward_tiny(name):
    model = create_model(name).train()
    image, clicks = _batch()
    prev = torch.rand(2, 1, SIZE, SIZE)
    out = model(image, clicks, prev)
    assert out.logits.shape == (2, 1, SIZE, SIZE) and out.aux_loss.dim() == 0
    (out.logits.mean() + out.aux_loss).backward()
    for part, params in (("backbone", model.backbone_parameters()), ("head", model.head_parameters())):
        grads = [p.grad for p in params if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), part
        assert any(g.abs().sum() > 0 for g in grads), part
    assert model.click_encoder.scale.grad.abs() > 0


@pytest.mark.parametrize("name", ["gpcis_tiny", "ritm_tiny"])
@pytest.mark.parametrize("stride", [1, 2])
def test_mixed_precision_training_step_on_the_cpu(name, stride):
    """Forward + backward under ``torch.autocast`` (bfloat16 on the CPU; the trainer uses
    float16 on CUDA): the backbone runs in low precision, the GP head in float32, and
    every parameter gets a finite gradient -- the CPU stand-in for the CUDA AMP test."""
    model = create_model(name).train()
    if name.startswith("gpcis"):
        model.set_gp_stride(stride)
    image, clicks = _batch()
    seen = []
    if name.startswith("gpcis"):  # what the GP itself receives and returns
        model.head.gp.register_forward_hook(
            lambda mod, args, out: seen.append((args[0].dtype, args[1].dtype, out.mean.dtype, out.vi_loss.dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(image, clicks, torch.rand(2, 1, SIZE, SIZE))
        loss = out.logits.float().mean() + out.aux_loss.float()
    if name.startswith("gpcis"):  # bfloat16 features in, the GP's mean and L_VI computed in float32
        assert seen == [(torch.bfloat16, torch.bfloat16, torch.float32, torch.float32)]
    assert out.logits.shape == (2, 1, SIZE, SIZE) and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("name", ["gpcis_tiny", "ritm_tiny"])
def test_zero_clicks_and_empty_mask_are_valid(name):
    model = create_model(name)
    image, _ = _batch()
    for mode in (model.train, model.eval):
        mode()
        out = model(image, ClickBatch.empty(2), None, return_std=True)
        assert out.logits.shape == (2, 1, SIZE, SIZE) and torch.isfinite(out.logits).all()
        assert (out.std is None) == (name == "ritm_tiny")


def test_odd_input_size_output_matches_input():
    model = _small_gp_model().eval()
    image = torch.rand(1, 3, 37, 53)
    out = model(image, ClickBatch.from_lists([[Click(36, 52, True)]]), return_std=True)
    assert out.logits.shape == (1, 1, 37, 53) and out.std.shape == (1, 1, 37, 53)


def test_gp_feature_width_is_d_plus_3():
    model = _small_gp_model()
    d = model.backbone.out_channels
    assert model.head.gp.in_dim == d + 3
    assert _small_gp_model(use_image_in_kernel=False).head.gp.in_dim == d


def test_side_tensor_matches_backbone():
    model = create_model("ritm_tiny")
    assert model.click_encoder.side_channels == model.backbone.side_channels
    assert model.click_encoder.side_stride == model.backbone.side_stride


def test_eval_logits_agree_with_clicks_end_to_end():
    """Coordinate convention end to end: the GP mean at each clicked pixel has the click's sign."""
    model = _small_gp_model().eval()
    image, clicks = _batch()
    with torch.no_grad():
        logits = model(image, clicks).logits
    for i, lst in enumerate(clicks.to_lists()):
        for c in lst:
            assert torch.sign(logits[i, 0, c.row, c.col]).item() == c.label


def test_inputs_change_the_output():
    model = create_model("ritm_tiny").eval()
    with torch.no_grad():
        model.click_encoder.scale.fill_(1.0)
    image, clicks = _batch()
    with torch.no_grad():
        base = model(image, clicks).logits
        assert not torch.allclose(model(image, ClickBatch.empty(2)).logits, base)
        assert not torch.allclose(model(image, clicks, torch.ones(2, 1, SIZE, SIZE)).logits, base)


def test_training_samples_reproducible_with_generator():
    model = _small_gp_model().train()
    image, clicks = _batch()
    a = model(image, clicks, generator=torch.Generator().manual_seed(5)).logits
    b = model(image, clicks, generator=torch.Generator().manual_seed(5)).logits
    torch.testing.assert_close(a, b)


def test_parameter_groups_partition_the_model():
    model = create_model("gpcis_tiny")
    bb = {id(p) for p in model.backbone_parameters()}
    hd = {id(p) for p in model.head_parameters()}
    assert bb and hd and not (bb & hd)
    assert bb | hd == {id(p) for p in model.parameters()}
    assert {id(p) for p in model.click_encoder.parameters()} <= hd


def test_reduced_lr_scope_is_the_trunk_for_ritm_and_the_backbone_for_gpcis():
    """RITM's LRMult(0.1) covers the pretrained trunk only (its ASPP / decoder / our fusion
    layers train at the full rate); GPCIS's covers its whole DeepLabV3+. Checkpoint configs
    without the field (before session 13) read as the whole backbone, what they trained
    with, so their saved optimizer groups still fit."""
    ritm = create_model("ritm_efflite0")
    trunk = {id(p) for p in ritm.backbone.encoder.parameters()}
    assert {id(p) for p in ritm.backbone_parameters()} == trunk
    neck = {id(p) for p in ritm.backbone.parameters()} - trunk
    assert neck and neck <= {id(p) for p in ritm.head_parameters()}
    gp = create_model("gpcis_efflite0")
    assert {id(p) for p in gp.backbone_parameters()} == {id(p) for p in gp.backbone.parameters()}
    for model in (ritm, gp):
        bb, hd = ({id(p) for p in g} for g in (model.backbone_parameters(), model.head_parameters()))
        assert not (bb & hd) and bb | hd == {id(p) for p in model.parameters()}
    old = ritm.config.to_dict()
    del old["backbone_lr_scope"]
    assert ModelConfig.from_dict(old).effective_backbone_lr_scope == "backbone"
    tiny = create_model("ritm_tiny")  # no separate trunk: the whole backbone
    assert {id(p) for p in tiny.backbone_parameters()} == {id(p) for p in tiny.backbone.parameters()}
    with pytest.raises(ValueError, match="backbone_lr_scope"):
        ModelConfig(backbone_lr_scope="decoder")


@pytest.mark.parametrize(
    "args, match",
    [
        (dict(image=torch.rand(2, 1, SIZE, SIZE)), "image must have shape"),
        (dict(image=torch.randint(0, 255, (2, 3, SIZE, SIZE), dtype=torch.uint8)), "float"),
        (dict(image=torch.rand(2, 3, SIZE, SIZE) * 255), r"\[0, 1\]"),
        (dict(clicks=ClickBatch.empty(3)), "batch size"),
        (dict(clicks=ClickBatch.from_lists([[Click(SIZE, 0, True)], []])), "outside"),
        (dict(clicks="click"), "ClickBatch"),
        # a 0/1 label convention: the 0 drew no disk while the GP read it as negative
        (dict(clicks=ClickBatch(torch.tensor([[[5.0, 5.0], [20.0, 20.0]]] * 2), torch.tensor([[1.0, 0.0]] * 2),
                                torch.ones(2, 2, dtype=torch.bool))), r"\+1 \(positive\) or -1"),
        (dict(prev_mask=torch.zeros(2, 1, SIZE, SIZE - 1)), "prev_mask"),
        (dict(num_samples=-2), "num_samples"),
        (dict(num_samples=1.5), "num_samples"),
        # NaN passed the range checks: a NaN coordinate drew no disk while the GP read pixel (0, 0)
        (dict(clicks=ClickBatch(torch.tensor([[[float("nan"), 5.0]]] * 2), torch.ones(2, 1),
                                torch.ones(2, 1, dtype=torch.bool))), "non-finite coordinate"),
        (dict(image=torch.full((2, 3, SIZE, SIZE), float("nan"))), "image contains NaN"),
        (dict(prev_mask=torch.full((2, 1, SIZE, SIZE), 255.0)), r"prev_mask values must lie in \[0, 1\]"),
        (dict(prev_mask=torch.full((2, 1, SIZE, SIZE), float("nan"))), r"prev_mask values must lie in \[0, 1\]"),
    ],
)
def test_bad_inputs_raise_value_error(args, match):
    model = create_model("ritm_tiny")
    image, clicks = _batch()
    kwargs = dict(image=image, clicks=clicks, prev_mask=None, num_samples=None)
    kwargs.update(args)
    with pytest.raises(ValueError, match=match):
        model(**kwargs)


def test_config_validation_and_dict_round_trip():
    with pytest.raises(ValueError, match="head"):
        ModelConfig(head="mlp")
    with pytest.raises(ValueError, match="click_radius"):
        ModelConfig(click_radius=0)
    cfg = ModelConfig(backbone="tiny", gp=GPHeadConfig(num_features=64), name="x")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    assert ModelConfig(pretrained=Path("/weights.pth")).pretrained == "/weights.pth"  # str: checkpoint-safe
    with pytest.raises(ValueError, match="config must be a ModelConfig"):
        SegmentationModel({"backbone": "tiny"})
    with pytest.raises(ValueError, match="gp_stride"):
        ModelConfig(gp_stride=0)
    legacy = cfg.to_dict()
    del legacy["gp_stride"]  # checkpoints written before the field existed
    assert ModelConfig.from_dict(legacy).gp_stride == 1
    # NaN passed the old `<= 0` checks; a gp that is no config crashed deep in the head
    for field in ("click_radius", "vi_weight"):
        with pytest.raises(ValueError, match=f"{field} must be a finite number"):
            ModelConfig(**{field: float("nan")})
    with pytest.raises(ValueError, match="gp must be a GPHeadConfig or a dict"):
        ModelConfig(gp="oops")
    with pytest.raises(ValueError, match=r"unknown GPHeadConfig field\(s\) \['bogus'\]"):
        ModelConfig(gp={"bogus": 1})
    with pytest.raises(ValueError, match="GPHeadConfig.eval_noise"):
        ModelConfig.from_dict({**cfg.to_dict(), "gp": {**cfg.to_dict()["gp"], "eval_noise": -1.0}})


def test_gp_stride_is_parameter_free_and_settable():
    """A model built at stride 2 and one switched to stride 2 agree; the conv head refuses."""
    torch.manual_seed(0)
    a = create_model("gpcis_tiny", gp_stride=2).eval()
    b = create_model("gpcis_tiny").eval()
    b.load_state_dict(a.state_dict())  # same parameters: the stride adds none
    image, clicks = _batch()
    b.set_gp_stride(2)
    assert b.config.gp_stride == 2
    torch.testing.assert_close(a(image, clicks).logits, b(image, clicks).logits)
    with pytest.raises(ValueError, match="GP heads"):
        create_model("ritm_tiny").set_gp_stride(2)
    with pytest.raises(ValueError, match="gp_stride"):
        b.set_gp_stride(0)


def _load_complexity_script():
    spec = importlib.util.spec_from_file_location("model_complexity", REPO / "benchmarks" / "model_complexity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_complexity_script_quick_writes_json_and_png(tmp_path):
    script = _load_complexity_script()
    assert script.main(["--quick", "--out", str(tmp_path / "cx")]) == 0
    data = json.loads((tmp_path / "cx" / "model_complexity.json").read_text())
    assert data["size"] == 64 and {r["model"] for r in data["rows"]} == {"gpcis_tiny", "ritm_tiny"}
    assert (tmp_path / "cx" / "model_complexity.png").stat().st_size > 1000
    script.plot([{"model": "gpcis_resnet50", "part": p, "gflops": 1.0, "mparams": 1.0}
                 for p in ("total", "backbone", "head")], 384, tmp_path / "paper.png")  # with the paper's marker
    assert (tmp_path / "paper.png").stat().st_size > 1000


def test_complexity_script_on_tiny_models(tmp_path, capsys):
    """Script logic: parts add up, MACs = FLOPs / 2, the conv head's MACs are h/4*w/4*d."""
    script = _load_complexity_script()
    out = tmp_path / "rows.json"
    assert script.main(["--models", "gpcis_tiny,ritm_tiny", "--size", "64", "--json", str(out)]) == 0
    assert "gpcis_tiny" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["benchmark"] == "model_complexity" and data["size"] == 64 and "machine" in data
    rows = data["rows"]
    # the report heads the table with that size and shows the paper's 384x384 column only at 384
    report = importlib.util.module_from_spec(spec := importlib.util.spec_from_file_location(
        "report", REPO / "benchmarks" / "report.py"))
    spec.loader.exec_module(report)
    assert "Model complexity at 64x64" in report.section_complexity(out, tmp_path)
    for size, paper in ((64, "|  |  |"), (384, "| 1.93 | 0.02 |")):
        f = tmp_path / f"cx{size}.json"
        f.write_text(json.dumps({"size": size, "rows": [
            {"model": "gpcis_resnet50", "part": "head", "gflops": 0.1, "mparams": 0.02}]}))
        (row,) = [line for line in report.section_complexity(f, tmp_path).splitlines() if line.startswith("| gpcis")]
        assert row.endswith(paper), (size, row)
    assert {(r["model"], r["part"]) for r in rows} == {
        (m, p) for m in ("gpcis_tiny", "ritm_tiny") for p in ("total", "backbone", "head")
    }
    get = {(r["model"], r["part"]): r for r in rows}
    for m in ("gpcis_tiny", "ritm_tiny"):
        for key in ("gflops", "mparams"):
            assert get[m, "total"][key] == pytest.approx(get[m, "backbone"][key] + get[m, "head"][key])
    model = create_model("ritm_tiny")
    d = model.backbone.out_channels
    assert get["ritm_tiny", "head"]["gflops"] == pytest.approx((64 // 4) ** 2 * d / 1e9)  # 1x1 conv d -> 1
    assert get["ritm_tiny", "head"]["mparams"] == pytest.approx((d + 1) / 1e6)
    assert get["ritm_tiny", "total"]["mparams"] == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)
    # same backbone and click encoder in both twins
    assert get["gpcis_tiny", "backbone"]["gflops"] == pytest.approx(get["ritm_tiny", "backbone"]["gflops"])
    # GP head at M = 64*64 pixels costs at least the random-feature product M * D * l
    gp = create_model("gpcis_tiny").head
    assert get["gpcis_tiny", "head"]["gflops"] >= 64 * 64 * gp.feature_dim * gp.gp.config.num_features / 1e9


# ResNet50 / HRNet18s take 4-18 s each on one CPU core (mostly saving/loading ~150 MB): slow.
_HEAVY = ("resnet50", "hrnet18s")


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n.split("_", 1)[1] in _HEAVY else n for n in FULL_SIZE_MODELS],
)
def test_full_size_train_step_and_checkpoint_round_trip(name, tmp_path):
    """Every full-size model at one small input: a train step, then a checkpoint round trip."""
    model = create_model(name).train()
    image, clicks = _batch(b=1)
    out = model(image, clicks)
    assert out.logits.shape == (1, 1, SIZE, SIZE)
    (out.logits.mean() + out.aux_loss).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    torch.optim.SGD(model.parameters(), lr=1e-3).step()
    model.eval()
    path = save_checkpoint(tmp_path / f"{name}.pt", model)
    loaded = create_model(checkpoint=path)
    with torch.no_grad():
        assert torch.equal(model(image, clicks).logits, loaded(image, clicks).logits)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["gpcis_tiny", "ritm_tiny"])
def test_cuda_forward_parity(name):
    model = create_model(name).eval()
    image, clicks = _batch()
    with torch.no_grad():
        cpu = model(image, clicks, return_std=True)
        gpu = model.cuda()(image.cuda(), clicks.to("cuda"), return_std=True)
    torch.testing.assert_close(gpu.logits.cpu(), cpu.logits, rtol=1e-3, atol=1e-3)
    if cpu.std is not None:
        torch.testing.assert_close(gpu.std.cpu(), cpu.std, rtol=1e-3, atol=1e-3)
