"""The frame every page shares: the sidebar's page links, the app's name, the device, the demos.

The sidebar's page links are the app's navigation, drawn here from app.py's PAGES; Streamlit's own
list is switched off (`client.showSidebarNavigation = false` in .streamlit/config.toml, and
`st.navigation(..., position="hidden")`). Streamlit's list cannot be trusted on a first visit: with
a `pages/` folder beside app.py, a fresh server's first script run is its pre-st.navigation one,
which lists the folder's files ("app", "architecture", "gradient flow", ...) until app.py has run
as far as st.navigation, seconds later on a cold server. The links are drawn before anything here
imports torch, so a first visit sees the app's pages at once; st.page_link marks the current one.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st


def nav_links(pages: Sequence[st.Page]) -> None:
    """A link per page, with its icon and title, in the order of `pages`; the current one marked."""
    with st.sidebar.container(key="app_nav", gap="xxsmall"):
        for page in pages:
            st.page_link(page, width="stretch")


@st.cache_resource(show_spinner=False)
def _device_label() -> str:
    from resnet_core import device  # torch: imported once the links are drawn

    return device.describe()


def _wait_for_start(timeout: float = 300) -> None:
    """A visitor who comes while the server is still warming up (ui/boot.py) waits for it, with a
    spinner, instead of computing the same things beside it: the warm-up's caches are filled once."""
    from ui import boot

    w = boot.state()
    if w is not None and not w.done.is_set():
        with st.spinner("The server is starting: loading PyTorch and the demos' nets…"):
            w.done.wait(timeout)


def sidebar() -> None:
    """The rest of the sidebar: the app's name, the device it trains on, the papers, the classroom demos."""
    _wait_for_start()
    from ui import present  # torch: imported once the links are drawn
    from ui.classroom import demo_links

    with st.sidebar:
        st.markdown("### :material/stacks: ResNet Explainer")
        st.caption("Build residual networks, break them, watch them train.")
    present.frame()  # presenter mode (?present=1): larger, a trimmed sidebar, plain captions
    with present.extras():  # what presenter mode hides
        st.markdown(f":material/memory: **Device:** `{_device_label()}`")
        st.caption("Papers: [He et al. 2015](https://arxiv.org/abs/1512.03385) · "
                   "[Identity Mappings 2016](https://arxiv.org/abs/1603.05027)")
    with st.sidebar.expander("Classroom demos", icon=":material/school:", expanded=present.on()):
        demo_links(captions=False)


def after_page() -> None:
    """Once the page has run: the job manager, once per server, and with it the warm-up of its worker
    processes (in the background: the first Start then answers in about a second). After the page, so
    that on a fresh server the first visitor's page does not share the cores with the workers' imports
    (a server started by `streamlit run app.py` has made it already: ui/boot.py)."""
    from ui import live

    live.warm()
