"""ResNet Explainer's core: configs, models, probes, training and figures. No streamlit here."""
