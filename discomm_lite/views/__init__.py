"""The views a run trains on: the augmentations and the batches of views.

`pixel_ops` (crops, flips, colour jitter, blur, solarise on tensors), `augment` (the views of a
batch, sampled per image, on the device), `multicrop` (the same views in DataLoader workers, for
ImageFolder data), `pipeline` (a run's splits and its batches of views, seeded so that a resumed
run draws the same views). What the views are is a Config's `config.view_spec.ViewSpec`.
"""
