"""Looking inside a trained net: its predictions (evaluate), one image block by block (forward),
where it looks (saliency) and what training changed (training_change). Imports no streamlit."""
