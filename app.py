"""ResNet Explainer: the router and the frame every page shares.

`streamlit run app.py` reads this file twice. First it imports it to find its `st.App` (below), whose
start-up hook warms the server before anybody visits (ui/boot.py). Then every browser session runs it
as its script, with `__name__ == "__main__"`: the router below.
"""

import streamlit as st

if __name__ != "__main__":  # imported by `streamlit run`, which serves this st.App (uvicorn, Starlette)
    from ui import boot

    app = st.App(__file__, lifespan=boot.lifespan)
else:  # a session's script run
    from ui import frame

    st.set_page_config(page_title="ResNet Explainer", page_icon=":material/stacks:", layout="wide")

    PAGES = [
        st.Page("pages/overview.py", title="Overview", icon=":material/school:", url_path="overview", default=True),
        st.Page("pages/architecture.py", title="Architecture", icon=":material/account_tree:", url_path="architecture"),
        st.Page("pages/gradient-flow.py", title="Gradient flow", icon=":material/trending_down:",
                url_path="gradient-flow"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:", url_path="train"),
        st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
        st.Page("pages/inspect.py", title="Inspect", icon=":material/search_insights:", url_path="inspect"),
        st.Page("pages/why.py", title="Why it works", icon=":material/psychology:", url_path="why"),
        st.Page("pages/degradation.py", title="Degradation", icon=":material/stacked_line_chart:",
                url_path="degradation"),
    ]

    page = st.navigation(PAGES, position="hidden")  # the sidebar's links are the navigation: see ui/frame.py
    frame.nav_links(PAGES)
    frame.sidebar()
    try:
        page.run()
    finally:  # also after a page that stopped early (st.stop) or failed
        frame.after_page()
