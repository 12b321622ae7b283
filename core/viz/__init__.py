"""Presentation: histogram binning and every plotly figure (the only plotly user in core).

* ``histograms.py``: fixed-edge binned histograms computed where the tensors live;
* ``style.py``: colours and layout shared by every figure;
* ``figures.py``: overview, weight histogram, per-class accuracy, Pareto;
* ``importance.py``: importance histogram, criteria overlap, MACs vs latency ratios;
* ``surgery.py``: block sequence, CKA, influence, drop-one, heal;
* ``samples.py``: example images of an evaluation set, as the person's files show them;
* ``graphdiff.py``: the graph diff of base against current, its table, the latency overlay;
* ``report.py``: a plan's self-contained HTML report.

Figures are plain functions (data in, figure out), so a notebook draws what the app draws.
"""
