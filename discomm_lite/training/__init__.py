"""Training: one plain-PyTorch loop for every method, CPU to multi-GPU.

Start with `engine.train` (set-up -> resume -> epochs of steps -> evaluate? -> save?). One step is
`step.train_step`; the state a checkpoint holds is built in `setup`; a run starts from a
checkpoint through `start`; the head reset is `reset`; what the loop watches is `monitor`; the run
folder's files are written by `runlog` (metrics.jsonl), `checkpoint` (checkpoint.pt) and guarded
by `runlock`.
"""
