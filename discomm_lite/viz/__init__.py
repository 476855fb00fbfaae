"""Figures: training curves and comparisons (`plots`), the codes (`code_plots`), explanatory
drawings (`illustrations`) and the shared style (`style`)."""
