"""Plotly figures built from configs, anatomies, probes and run records (no streamlit here).

degradation.py  final training loss and test error against depth, ours beside He et al. 2016's
diagram.py   the architecture diagram (blocks, skips, shortcuts, gradient colouring)
gradflow.py  per-block gradient norms at initialisation, residual vs plain
training.py  loss/accuracy curves and the layer-by-step gradient heatmap
theme.py     the template every figure uses: plotly_white, cut down to what the app draws
"""
