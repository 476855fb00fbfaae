"""The presets: named sets of Config overrides, each non-obvious value with its reason.

`config.make_config(preset, **overrides)` applies them on top of the `Config` defaults. Plain
data: this module imports nothing.
"""

from __future__ import annotations

_IMAGENET_PAPER = dict(
    dataset="imagefolder", backbone="vit-base/16", image_size=224, n_bits=256,
    epochs=100, batch_size=256, lr=5e-4, lr_end=5e-5, warmup_epochs=10,
    weight_decay=0.04, weight_decay_end=0.4, momentum=0.996, momentum_end=1.0,
    eps=0.05, reinit_every=10, clip_grad=1.0, clip_grad_mode="per_param",
    # The authors' code re-initialises the head's modules in place: AdamW's moments stay and the
    # lr does not ramp. At this scale a reset period is ~50,000 steps; the toy runs' collapse
    # after a reset (studies/README.md, resets) was not measured here, so the preset keeps theirs.
    reinit_optimizer_state="keep", reinit_warmup_steps=0,
    n_global=2, n_local=10, global_size=224, local_size=96, global_scale_min=0.4,
    local_scale_min=0.05, local_scale_max=0.4, blur=True, solarize=True, drop_path=0.1,
    eval_every=10, log_every=50,
)

PRESETS: dict[str, dict] = {
    # The quickstart: embedded synthetic images (classes: shape x texture), a small convnet,
    # 2048 training images, 12 epochs of 16 steps. Every choice below was measured in the CPU
    # recipe study (studies/README.md, groups slow_start and synthetic):
    # - views: each view is its own rendering of the object with background, colour, position
    #   and size drawn again (redraw_factors), so the two views share only what the class is
    #   made of. With views cut from one image (DINO's crops and colour jitter), the bits encode
    #   the background instead. No crops (global_scale_min=1): position and size already change
    #   between the views, and a crop can cut the object out.
    # - head_norm="batchnorm": the paper's plain head starts with logits ~0.005 and its BCE sits
    #   at ln 2; ending the head in an affine-free BatchNorm (as the same authors' CroVCA head)
    #   makes every bit balanced from the first step.
    # - lr 4e-3 and 12 epochs (192 steps), against the former 2e-3 and 6 epochs.
    "synthetic-toy": dict(
        dataset="synthetic", backbone="convnet-small", image_size=32, global_size=32,
        train_subset=2048, n_bits=64, head_hidden_dim=512, head_norm="batchnorm", epochs=12,
        batch_size=128, lr=4e-3, lr_end=1e-4, warmup_epochs=1, momentum=0.99, eval_every=3,
        log_every=8, redraw_factors="background,colour,position,size", global_scale_min=1.0,
        # The clipping mode makes no measurable difference here (seed 0, the run's own k-NN:
        # 0.920 at k=20 and 0.785 at k=200 per parameter, 0.919 and 0.794 global, against a
        # seed-to-seed std of 0.026 at k=20); per_param is the paper's (DINO's) convention.
        clip_grad_mode="per_param",
    ),
    # Toy CIFAR-10 on a laptop CPU: 10,000 images, 5 epochs of 39 steps, a small convnet. The
    # values are BITS's, each measured by the CPU recipe study (studies/README.md):
    # - head_norm="batchnorm": with the paper's plain head the logits stay ~0.005 and the BCE at
    #   ln 2 for the whole run (slow-start diagnostics); the BatchNorm ending is the fix.
    # - lr 8e-3: the best of 1e-3 ... 8e-3 on held-out training images (section 2); each method
    #   got the same tuning budget, and its own values are METHOD_SETTINGS["cifar-toy"].
    # - global clipping: gradient norms stay near 0.15, far below clip_grad, so BITS ran
    #   identically with per-parameter clipping; SimDINO and DINO lost about a point with it.
    "cifar-toy": dict(
        dataset="cifar10", backbone="convnet-small", image_size=32, global_size=32,
        train_subset=10000, test_subset=2000, n_bits=128, head_hidden_dim=512,
        head_norm="batchnorm", epochs=5, batch_size=256, lr=8e-3, lr_end=1e-4, warmup_epochs=1,
        momentum=0.99, eval_every=1, clip_grad_mode="global",
    ),
    # CIFAR-10 on one GPU: ResNet-18 with a CIFAR stem, 2 x 32 px views, AdamW at batch 512
    # (the recipe of the CIFAR study in issue 7; see notebooks/05_full_cifar_gpu.ipynb). Gradient
    # clipping 1 per parameter, the paper's convention (the Config default).
    "cifar-full": dict(
        dataset="cifar10", backbone="resnet18-cifar", image_size=32, global_size=32,
        n_bits=256, epochs=200, batch_size=512, lr=2e-3, lr_end=1e-4, warmup_epochs=10,
        weight_decay=0.04, weight_decay_end=0.4, momentum=0.99, eval_every=10, log_every=50,
    ),
    # The paper's ImageNet-1k protocol: ViT-B/16, 100 epochs, batch 256, K = 256, beta = 0.1,
    # head reset every 10 epochs, grad clip 1 per parameter (DINO's clip_gradients, which SimDINO
    # keeps), final lr 5e-5, 2 x 224 + 10 x 96 crops, SimDINO's defaults otherwise (lr 5e-4 x
    # 256/256, 10 warmup epochs, wd 0.04 -> 0.4, EMA 0.996 -> 1, drop path 0.1 in the student
    # only). coding_rate_weight is left to the method (0.1 for bits, SimDINO's 1 for simdino).
    "imagenet-paper": _IMAGENET_PAPER,
    # The SimDINO baseline under the paper's protocol, with SimDINO's own method defaults
    # (RobinWu218/SimDINO simdino/main_dino.py and its README's ViT-B/16 command): coding-rate
    # weight 1 (--coeff 1), eps 0.05 (--eps 0.05), the rate on the mean of the student's and the
    # teacher's normalised outputs (--expa_type 1), no head resets (the paper: resets make SimDINO
    # diverge). SimDINO's head has no prototype layer, so nothing is frozen. Its default
    # --reduce_cov 0 is coding_rate_scope="per_process"; the preset keeps "global" so that the
    # run does not depend on the number of GPUs: set per_process to match a SimDINO run on as
    # many GPUs. SimDINO's own clip_grad (3.0) and min_lr (1e-6) are not used: the preset keeps
    # the paper's protocol, which does not say its baselines changed them.
    "imagenet-paper-simdino": {
        **_IMAGENET_PAPER, "method": "simdino", "reinit_every": 0, "coding_rate_weight": 1.0,
        "eps": 0.05, "coding_rate_input": "student_teacher_mean",
    },
    # The DINO baseline under the paper's protocol, with DINO's own method defaults
    # (facebookresearch/dino main_dino.py, used as is by its README's vit_base command): 65536
    # prototypes behind a 256-d bottleneck, the last layer frozen for the first epoch, teacher
    # temperature 0.04 throughout (the README's 0.04 -> 0.07 over 30 epochs is its "boosting"
    # recipe for ViT-S over 300 epochs), student temperature 0.1, center momentum 0.9, no head
    # resets. As for SimDINO, DINO's clip_grad 3.0 and min_lr 1e-6 give way to the protocol's.
    "imagenet-paper-dino": {
        **_IMAGENET_PAPER, "method": "dino", "reinit_every": 0, "n_prototypes": 65536,
        "head_bottleneck_dim": 256, "head_hidden_dim": 2048, "freeze_last_layer_epochs": 1,
        "teacher_temp": 0.04, "teacher_temp_warmup": 0.04, "teacher_temp_warmup_epochs": 0,
        "student_temp": 0.1, "center_momentum": 0.9,
    },
}


# Each method's own settings where a preset's values are BITS's: what turns the preset into that
# method's run (`config.method_settings`). For cifar-toy, chosen by the study's tuning with the
# same budget for every method (studies/README.md, section 2): SimDINO's plain head (its loss
# normalises the outputs) at lr 8e-3; DINO's prototype head at lr 5e-4 (its best, at the low edge
# of the grid); both with global clipping, better than per-parameter for them by about a point.
METHOD_SETTINGS: dict[str, dict[str, dict]] = {
    "cifar-toy": {
        "simdino": dict(method="simdino", head_norm="none", lr=8e-3, clip_grad_mode="global"),
        "dino": dict(method="dino", head_norm="none", lr=5e-4, clip_grad_mode="global"),
    },
}
