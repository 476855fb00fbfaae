"""Evaluation of a backbone's features and a head's codes: the paper's protocols.

`features` (extracting them), `metrics` (k-NN, retrieval mAP, Hamming search), `probes` (the
linear probes), `geometry` (effective dimension and rank, paper Table 2), `language` (the codes
as a binary language), `suite` (everything at once, for a checkpoint or a model).
"""
