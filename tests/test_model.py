"""Heads, the multi-crop model and the head re-initialisation."""

import pytest
import torch

from discomm_lite.choices import BACKBONES
from discomm_lite.method.heads import DINOHead, ProjectionHead
from discomm_lite.models.backbones import make_backbone
from discomm_lite.models.model import MultiCropModel, make_teacher
from discomm_lite.training.optim import param_groups, upgrade_optimizer_state
from discomm_lite.training.reset import reinit_head


def _pair(n_bits=8):
    torch.manual_seed(0)
    student = MultiCropModel(make_backbone("convnet-small"), ProjectionHead(256, n_bits, 32))
    return student, make_teacher(student)


def _one_step(student, optimizer, views):
    loss = sum(o.square().mean() for o in student(views))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_projection_head_is_dino_mlp_without_prototypes():
    head = ProjectionHead(384, 256)
    shapes = [tuple(m.weight.shape) for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert shapes == [(2048, 384), (2048, 2048), (256, 2048)]
    assert head(torch.randn(5, 384)).shape == (5, 256)


def test_dino_head_outputs_cosines_to_prototypes():
    head = DINOHead(16, n_prototypes=10, hidden_dim=32, bottleneck_dim=8)
    out = head(torch.randn(4, 16))
    assert out.shape == (4, 10)
    assert out.abs().max() <= 1 + 1e-6


def test_multicrop_groups_views_by_resolution():
    student, _ = _pair()
    calls = []
    student.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    views = [torch.rand(3, 3, 32, 32)] * 2 + [torch.rand(3, 3, 16, 16)] * 4
    out = student(views)
    assert [o.shape for o in out] == [(3, 8)] * 6
    assert calls == [(6, 3, 32, 32), (12, 3, 16, 16)]  # one forward per resolution
    # the batched forward equals per-view forwards (eval mode: no batch statistics)
    student.eval()
    batched = student(views)
    single = [student([v, v])[0] for v in views]
    for a, b in zip(batched, single, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("policy", ["copy", "keep"])
@pytest.mark.parametrize("clear", [True, False])
def test_reinit_changes_head_handles_its_state_and_follows_teacher_policy(policy, clear):
    student, teacher = _pair()
    optimizer = torch.optim.AdamW(param_groups(student), lr=1e-2)
    views = [torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)]
    _one_step(student, optimizer, views)
    teacher_head_before = {k: v.clone() for k, v in teacher.head.state_dict().items()}
    student_head_before = {k: v.clone() for k, v in student.head.state_dict().items()}
    backbone_before = {k: v.clone() for k, v in student.backbone.state_dict().items()}
    assert all(p in optimizer.state for p in student.head.parameters())
    moments_before = {p: {k: v.clone() for k, v in optimizer.state[p].items()}
                      for p in student.head.parameters()}

    reinit_head(student, teacher, optimizer, policy=policy, seed=5, clear_optimizer_state=clear)

    weights = [k for k in student_head_before if k.endswith("weight")]
    assert all(not torch.equal(student.head.state_dict()[k], student_head_before[k])
               for k in weights)
    assert all(torch.all(student.head.state_dict()[k] == 0) for k in student_head_before
               if k.endswith("bias"))
    if clear:
        assert not any(p in optimizer.state for p in student.head.parameters())
    else:  # an in-place re-initialisation: the moments stay as the old head left them
        for p, before in moments_before.items():
            assert all(torch.equal(optimizer.state[p][k], v) for k, v in before.items())
    assert all(p in optimizer.state for p in student.backbone.parameters() if p.requires_grad)
    for k, v in student.backbone.state_dict().items():
        assert torch.equal(v, backbone_before[k])  # the backbone is untouched
    for k, v in teacher.head.state_dict().items():
        expected = student.head.state_dict()[k] if policy == "copy" else teacher_head_before[k]
        assert torch.equal(v, expected)
    # the new head is drawn from the init distribution: trunc normal, std 0.02
    w = student.head.mlp[2].weight
    assert w.std().item() == pytest.approx(0.02, rel=0.05) and w.abs().max() <= 2.0
    _one_step(student, optimizer, views)  # training goes on, with fresh or kept Adam moments


def test_reinit_is_reproducible_from_its_seed():
    a, ta = _pair()
    b, tb = _pair()
    for s, t in ((a, ta), (b, tb)):
        opt = torch.optim.AdamW(s.parameters())
        torch.manual_seed(123 if s is a else 456)  # global RNG state must not matter
        reinit_head(s, t, opt, policy="copy", seed=9, clear_optimizer_state=True)
    for k, v in a.head.state_dict().items():
        assert torch.equal(v, b.head.state_dict()[k])


def test_teacher_has_no_stochastic_depth_and_is_deterministic_in_train_mode():
    torch.manual_seed(0)
    backbone = make_backbone("vit-tiny/4", drop_path=0.1)
    student = MultiCropModel(backbone, ProjectionHead(backbone.num_features, 64, 32))
    teacher = make_teacher(student)
    teacher.train()
    views = [torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)]
    with torch.no_grad():
        first, second = teacher(views), teacher(views)
        # The student keeps its stochastic depth: two passes differ, so the check can fail.
        assert not torch.equal(student(views)[0], student(views)[0])
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    # The teacher is the student's network with drop_path 0: the same weights and outputs.
    assert teacher.state_dict().keys() == student.state_dict().keys()
    torch.manual_seed(0)
    reference = MultiCropModel(make_backbone("vit-tiny/4", drop_path=0.0),
                               ProjectionHead(backbone.num_features, 64, 32))
    reference.load_state_dict(student.state_dict())
    reference.train()
    with torch.no_grad():
        for a, b in zip(first, reference(views), strict=True):
            torch.testing.assert_close(a, b)


def test_head_reset_clears_sync_batchnorm_statistics():
    head = torch.nn.SyncBatchNorm.convert_sync_batchnorm(ProjectionHead(8, 4, 16,
                                                                        norm="batchnorm"))
    assert isinstance(head.norm, torch.nn.SyncBatchNorm)
    head.norm.running_mean.fill_(3.0)
    head.norm.running_var.fill_(5.0)
    head.reset_parameters()
    assert torch.all(head.norm.running_mean == 0) and torch.all(head.norm.running_var == 1)


def test_param_groups_exclude_biases_and_norms_from_decay_and_set_the_head_apart():
    student, _ = _pair()
    groups = param_groups(student)
    assert [(g["is_head"], g["apply_weight_decay"]) for g in groups] == [
        (False, True), (False, False), (True, True), (True, False)]
    for group in groups:
        part = student.head if group["is_head"] else student.backbone
        ids = {id(p) for p in part.parameters()}
        assert all(id(p) in ids for p in group["params"])
        if group["apply_weight_decay"]:
            assert all(p.ndim > 1 for p in group["params"])
        else:
            assert all(p.ndim == 1 for p in group["params"]) and group["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(student.parameters()))


def test_a_two_group_optimizer_state_is_rearranged_into_the_four_groups():
    # What checkpoints written before the head had groups of its own hold: AdamW over DINO's two
    # groups. Loaded into the four groups, each parameter must get its own moments back.
    student, _ = _pair()
    decay = [p for n, p in student.named_parameters() if p.ndim > 1 and not n.endswith(".bias")]
    no_decay = [p for n, p in student.named_parameters() if p.ndim <= 1 or n.endswith(".bias")]
    old = torch.optim.AdamW([{"params": decay, "apply_weight_decay": True},
                             {"params": no_decay, "apply_weight_decay": False,
                              "weight_decay": 0.0}], lr=1e-2)
    _one_step(student, old, [torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)])
    new = torch.optim.AdamW(param_groups(student), lr=1e-2)
    new.load_state_dict(upgrade_optimizer_state(old.state_dict(), student))
    for p in student.parameters():
        for key, value in old.state[p].items():
            assert torch.equal(new.state[p][key], value)
    assert [g["weight_decay"] for g in new.param_groups] == [0.01, 0.0, 0.01, 0.0]
    assert upgrade_optimizer_state(new.state_dict(), student) == new.state_dict()


@pytest.mark.parametrize("name", [n for n in BACKBONES if n in
                                  ("convnet-small", "resnet18-cifar", "vit-tiny/4")])
def test_small_backbones_follow_the_contract(name):
    backbone = make_backbone(name).eval()
    feats = backbone(torch.rand(2, 3, 32, 32))
    assert feats.shape == (2, backbone.num_features)


def test_vit_16_takes_multicrop_resolutions():
    backbone = make_backbone("vit-tiny/16").eval()
    assert backbone(torch.rand(1, 3, 224, 224)).shape == (1, 192)
    assert backbone(torch.rand(1, 3, 96, 96)).shape == (1, 192)


def test_unknown_backbone_is_refused():
    with pytest.raises(ValueError, match="Config.backbone"):
        make_backbone("resnet19")
