"""ResNet Explainer: the router and the frame every page shares."""

import streamlit as st

from resnet_core import device
from ui import live
from ui.classroom import demo_links

st.set_page_config(page_title="ResNet Explainer", page_icon=":material/stacks:", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/school:", url_path="overview", default=True),
    st.Page("pages/architecture.py", title="Architecture", icon=":material/account_tree:", url_path="architecture"),
    st.Page("pages/gradient_flow.py", title="Gradient flow", icon=":material/trending_down:", url_path="gradient-flow"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:", url_path="train"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
    st.Page("pages/degradation.py", title="Degradation", icon=":material/stacked_line_chart:", url_path="degradation"),
]

page = st.navigation(PAGES)
live.warm()  # once per server: the first Start then answers in about a second

with st.sidebar:
    st.markdown("### :material/stacks: ResNet Explainer")
    st.caption("Build residual networks, break them, watch them train.")


@st.cache_resource
def _device_label() -> str:
    return device.describe()


st.sidebar.markdown(f":material/memory: **Device:** `{_device_label()}`")
st.sidebar.caption(
    "Papers: [He et al. 2015](https://arxiv.org/abs/1512.03385) · "
    "[Identity Mappings 2016](https://arxiv.org/abs/1603.05027)"
)
with st.sidebar.expander("Classroom demos", icon=":material/school:"):
    demo_links(captions=False)
page.run()
