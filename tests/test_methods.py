"""The method registry: the paper's three records, and a toy method added through it alone.

The toy method is registered here and nowhere else; it trains through `engine.train`, and every
field of its record is seen to take effect: its head, its loss and parts, its running center,
its hook before the optimizer step, its health check, its defaults and fixed fields, its codes.
"""

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from discomm_lite import method as methods
from discomm_lite.api import train
from discomm_lite.config import Config, make_config
from discomm_lite.config.checks import BaselineResetWarning
from discomm_lite.method import registry
from discomm_lite.method.heads import DINOHead, ProjectionHead
from discomm_lite.models.model import make_model
from discomm_lite.training.engine import ChannelCollapseWarning


def test_the_papers_methods_and_their_defaults():
    assert methods.method_names()[:3] == ("bits", "simdino", "dino")
    expected = {  # (beta, coding-rate input, codes): the paper, SimDINO's and DINO's defaults
        "bits": (0.1, "student", True),
        "simdino": (1.0, "student_teacher_mean", True),
        "dino": (None, "student", False),  # DINO has no coding rate
    }
    for name, (beta, rate_input, codes) in expected.items():
        record = methods.get_method(name)
        assert (record.coding_rate_weight, record.coding_rate_input, record.emits_codes) == \
            (beta, rate_input, codes)
    dino = dict(n_prototypes=32, head_bottleneck_dim=8)
    heads = {name: make_model(Config(method=name, n_bits=8, head_hidden_dim=16,
                                     **(dino if name == "dino" else {}))).head
             for name in ("bits", "simdino", "dino")}
    assert isinstance(heads["bits"], ProjectionHead) and isinstance(heads["dino"], DINOHead)
    assert heads["bits"].mlp[-1].out_features == 8 and heads["dino"].prototypes.shape == (32, 8)


def test_unknown_and_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="Unknown method 'byol'.*bits, simdino, dino"):
        methods.get_method("byol")
    with pytest.raises(ValueError, match="already registered"):
        methods.register(methods.get_method("bits"))


# ---- a toy method, registered here only ---------------------------------------------------------
HOOK_CALLS: list[tuple[int, bool]] = []


def _toy_head(config, in_dim):
    return ProjectionHead(in_dim, 2 * config.n_bits, 16)  # twice the bits: visibly its own head


def _toy_loss(config, student_logits, teacher_logits, state, step, steps_per_epoch):
    """Squared distance of normalised outputs over view pairs v != g."""
    pairs = [(s, t) for g, t in enumerate(teacher_logits)
             for v, s in enumerate(student_logits) if v != g]
    loss = sum(F.mse_loss(F.normalize(s.float(), dim=-1), F.normalize(t.detach().float(), dim=-1))
               for s, t in pairs) / len(pairs)
    return loss, {"toy_distance": loss.detach(), "toy_count": state["count"][0].clone(),
                  "toy_step": torch.tensor(float(step))}


def _toy_state(config, device):
    return {"count": torch.zeros(1, device=device)}


def _toy_update(state, teacher_logits, config):
    return {"count": state["count"] + 1}  # counts the steps: the count in force at step s is s


def _toy_hook(student, epoch, config):
    HOOK_CALLS.append((epoch, student.head.mlp[0].weight.grad is not None))


def _toy_health(record, config):
    return "toy collapse" if record["step"] == 2 else None


TOY = methods.Method(
    name="toy", make_head=_toy_head, loss=_toy_loss, coding_rate_weight=0.25,
    coding_rate_input="student_teacher_mean", emits_codes=False, make_state=_toy_state,
    update_state=_toy_update, before_optimizer_step=_toy_hook, health_check=_toy_health,
    fixed_fields=(("eps", 0.05, "the toy keeps the default eps"),),
)


@pytest.fixture
def toy():
    methods.register(TOY)
    HOOK_CALLS.clear()
    yield TOY
    del registry.REGISTRY["toy"]


def test_the_config_takes_the_toys_defaults_and_rules(toy):
    config = make_config("synthetic-toy", method="toy", coding_rate_input=None)
    assert (config.beta, config.rate_input) == (0.25, "student_teacher_mean")
    with pytest.raises(ValueError, match=r"Config.eps = 0.1.*left at 0.05 for "
                                         r"method='toy' \(the toy keeps the default eps\)"):
        Config(method="toy", eps=0.1)
    # BITS's own options are refused for another method, at any value but their default
    with pytest.raises(ValueError, match=r"Config.targets = 'soft'.*option of method 'bits'"):
        Config(method="toy", targets="soft")
    with pytest.raises(ValueError, match=r"Config.teacher_temp = 0.07.*option of method 'dino'"):
        Config(method="bits", teacher_temp=0.07)
    with pytest.raises(ValueError, match=r"Config.coding_rate_weight = 0.1.*no coding-rate"):
        Config(method="dino", coding_rate_weight=0.1)
    with pytest.warns(BaselineResetWarning):
        Config(method="toy", reinit_every=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Config(method="bits", reinit_every=1)  # resets are part of BITS


@pytest.mark.slow
def test_a_toy_method_trains_through_the_registry_alone(toy, tmp_path):
    config = make_config("synthetic-toy", method="toy", train_subset=128, test_subset=64,
                         batch_size=64, n_bits=8, head_hidden_dim=16, epochs=2, eval_every=0,
                         log_every=1, out_dir=str(tmp_path / "run"))
    with pytest.warns(ChannelCollapseWarning, match="toy collapse"):
        run = train(config, progress=False)
    assert run.student.head.mlp[-1].out_features == 16
    train_records = [r for r in run.records if r["kind"] == "train"]
    assert [r["step"] for r in train_records] == [1, 2, 3, 4]
    # The state is threaded through: the loss at step s sees the s updates before it.
    assert [r["toy_count"] for r in train_records] == [0.0, 1.0, 2.0, 3.0]
    assert [r["toy_step"] for r in train_records] == [0.0, 1.0, 2.0, 3.0]
    assert all(r["toy_distance"] >= 0 for r in train_records)
    assert HOOK_CALLS == [(0, True), (0, True), (1, True), (1, True)]
    warning = [r for r in run.records if r["kind"] == "warning"]
    assert [(r["step"], r["message"]) for r in warning] == [(2, "toy collapse")]
    checkpoint = torch.load(Path(config.out_dir) / "checkpoint.pt", weights_only=True)
    assert checkpoint["method_state"]["count"].item() == 4.0

    from discomm_lite.evaluation.suite import evaluate_checkpoint

    result = evaluate_checkpoint(Path(config.out_dir) / "checkpoint.pt", write=False)
    assert 0 <= result["knn20_top1"] <= 1 and result["method"] == "toy"
    assert "map_hamming" not in result and not any(k.startswith("code_") for k in result)
