"""Model controls shared by the pages: a preset, or a custom net built field by field.

Every widget key is `prefix + field`, and the same names are the query-string
keys, so a link reopens the same net. Pages call `ui.state.restore` with
`model_fields(prefix)` before `model_controls(prefix)` and `ui.state.publish`
after it. Picking a preset fills every field from it; the toggles then change
that preset (resnet56 with skip off is plain56). A bad combination is shown as
the ConfigError's message and `model_controls` returns None.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import streamlit as st

from resnet_core.config import (
    ACTIVATIONS,
    BLOCKS,
    CIFAR_DEPTHS,
    IMAGE_SIZE_RANGE,
    IMAGENET_LAYOUTS,
    INITS,
    MAX_BLOCKS_PER_STAGE,
    MAX_CLASSES,
    MAX_IN_CHANNELS,
    PRESETS,
    SHORTCUTS,
    STEMS,
    STYLES,
    ConfigError,
    ModelConfig,
    cifar_config,
    display_name,
    imagenet_config,
    make_config,
    preset,
    preset_name,
)
from ui.state import Field

CUSTOM = "custom"
PRESET_CHOICES = (*(f"resnet{d}" for d in IMAGENET_LAYOUTS), *(f"resnet{d}" for d in CIFAR_DEPTHS), CUSTOM)
LAYOUTS = ("cifar", "imagenet", "blocks")
# Fields every net has, set by the toggles below the preset and kept when the layout changes.
COMMON = ("shortcut", "skip", "batchnorm", "activation", "style", "init", "zero_init_residual",
          "in_channels", "image_size", "num_classes")
LAYOUT_FIELDS = ("layout", "depth", "layers", "block", "widths", "stem")
_INT_LIST = re.compile(r"^\s*\d+(\s*,\s*\d+)*\s*$")

_LABELS = {
    "shortcut": {"A": "A: zero-pad", "B": "B: 1x1 where shape changes", "C": "C: 1x1 everywhere"},
    "style": {"post": "post-activation (2015)", "pre": "pre-activation (2016)"},
    "init": {"default": "PyTorch default", "kaiming": "Kaiming normal, fan-out"},
    "layout": {"cifar": "CIFAR: 6n+2 layers", "imagenet": "ImageNet: 18…152", "blocks": "blocks per stage"},
    "block": {"basic": "BasicBlock (two 3x3)", "bottleneck": "Bottleneck (1x1-3x3-1x1)"},
    "stem": {"imagenet": "7x7/2 conv + max-pool", "small": "3x3 conv"},
}


def _preset_label(name: str) -> str:
    if name == CUSTOM:
        return "custom…"
    depth = int(name.removeprefix("resnet"))
    return f"ResNet-{depth} ({'ImageNet' if depth in IMAGENET_LAYOUTS else 'CIFAR'})"


def field_values(cfg: ModelConfig) -> dict[str, Any]:
    """The unprefixed field values that describe `cfg` (the preset field excluded)."""
    values = {k: getattr(cfg, k) for k in COMMON}
    layout = "blocks"
    if cfg.stem == "small" and cfg.widths == (16, 32, 64) and cfg.block == "basic" and len(set(cfg.layers)) == 1 \
            and len(cfg.layers) == 3:
        layout = "cifar"
    elif IMAGENET_LAYOUTS.get(cfg.depth) == (cfg.block, cfg.layers) and cfg.widths == (64, 128, 256, 512) \
            and cfg.stem == "imagenet":
        layout = "imagenet"
    values.update(layout=layout, depth=cfg.depth, layers=",".join(map(str, cfg.layers)), block=cfg.block,
                  widths=",".join(map(str, cfg.widths)), stem=cfg.stem)
    return values


def config_from_values(v: Mapping[str, Any]) -> ModelConfig:
    """The config the (unprefixed) field values describe; ConfigError if they describe none."""
    common = {k: v[k] for k in COMMON}
    if v["preset"] != CUSTOM:
        return preset(v["preset"], **common)
    if v["layout"] == "cifar":
        return cifar_config(v["depth"], **common)
    if v["layout"] == "imagenet":
        return imagenet_config(v["depth"], **common)
    return make_config(ModelConfig(), block=v["block"], layers=v["layers"], widths=v["widths"], stem=v["stem"],
                       **common)


def model_fields(prefix: str, default_preset: str = "resnet20") -> list[Field]:
    """The fields `model_controls(prefix)` draws, for ui.state.restore/publish."""
    d = {"preset": default_preset, **field_values(PRESETS[default_preset])}
    p = prefix
    return [
        Field(p + "preset", d["preset"], options=PRESET_CHOICES),
        Field(p + "layout", d["layout"], options=LAYOUTS),
        Field(p + "depth", d["depth"], lo=3, hi=3 * MAX_BLOCKS_PER_STAGE * 2 + 2),
        Field(p + "layers", d["layers"], check=lambda s: bool(_INT_LIST.match(s)),
              allowed="blocks per stage as whole numbers separated by commas, e.g. 2,2,2,2"),
        Field(p + "block", d["block"], options=BLOCKS),
        Field(p + "widths", d["widths"], check=lambda s: bool(_INT_LIST.match(s)),
              allowed="channels per stage as whole numbers separated by commas, e.g. 64,128,256,512"),
        Field(p + "stem", d["stem"], options=STEMS),
        Field(p + "shortcut", d["shortcut"], options=SHORTCUTS),
        Field(p + "skip", d["skip"]),
        Field(p + "batchnorm", d["batchnorm"]),
        Field(p + "activation", d["activation"], options=ACTIVATIONS),
        Field(p + "style", d["style"], options=STYLES),
        Field(p + "init", d["init"], options=INITS),
        Field(p + "zero_init_residual", d["zero_init_residual"]),
        Field(p + "in_channels", d["in_channels"], lo=1, hi=MAX_IN_CHANNELS),
        Field(p + "image_size", d["image_size"], lo=IMAGE_SIZE_RANGE[0], hi=IMAGE_SIZE_RANGE[1]),
        Field(p + "num_classes", d["num_classes"], lo=2, hi=MAX_CLASSES),
    ]


# ---------------------------------------------------------------- callbacks (run before the rerun)


def _apply_preset(prefix: str, keep: frozenset[str] = frozenset()) -> None:
    """Fill every field from the chosen preset, except the keys in `keep`."""
    ss = st.session_state
    name = ss[prefix + "preset"]
    if name == CUSTOM:
        return  # the custom fields already describe the net on screen (kept in sync below)
    for k, v in field_values(PRESETS[name]).items():
        if prefix + k not in keep:
            ss[prefix + k] = v


def _apply_layout(prefix: str) -> None:
    """A new layout family starts from its own depth, shortcut, input size and classes."""
    ss = st.session_state
    layout, depth = ss[prefix + "layout"], ss[prefix + "depth"]
    if layout == "cifar":
        base = cifar_config(depth if depth in range(8, 1203, 6) else 20)
    elif layout == "imagenet":
        nearest = min(IMAGENET_LAYOUTS, key=lambda d: abs(d - depth))
        base = imagenet_config(nearest)
    else:
        return
    for k in ("depth", "shortcut", "init", "image_size", "num_classes"):
        ss[prefix + k] = field_values(base)[k]


# ---------------------------------------------------------------- widgets


def config_error(prefix: str) -> str | None:
    """Why the last `model_controls(prefix)` returned None (for the page to repeat in its main area)."""
    return st.session_state.get(prefix + "_error")


def model_controls(prefix: str, *, container: Any = None, default_preset: str = "resnet20",
                   fixed: Mapping[str, Any] | None = None) -> ModelConfig | None:
    """Draw the model widgets into `container` (the sidebar by default); the ModelConfig, or None.

    `fixed` pins in_channels, image_size and num_classes when something else decides them
    (a dataset): their widgets are not drawn and the values override the fields.
    """
    ss, p = st.session_state, prefix
    fixed = dict(fixed or {})
    if not ss.get(p + "_started"):
        # A hand-written link may name just a preset and an override or two: fill the rest from it.
        ss[p + "_started"] = True
        _apply_preset(p, keep=frozenset(k for k in st.query_params if k.startswith(p)))
    container = container if container is not None else st.sidebar
    with container:
        st.selectbox("Preset", PRESET_CHOICES, key=p + "preset", format_func=_preset_label,
                     on_change=_apply_preset, args=(p,),
                     help="torchvision's ResNet-18…152 or He et al.'s CIFAR ResNet-20…110; "
                          "the settings below then change it.")
        custom = ss[p + "preset"] == CUSTOM
        if custom:
            st.radio("Layout", LAYOUTS, key=p + "layout", format_func=_LABELS["layout"].get,
                     on_change=_apply_layout, args=(p,))
            if ss[p + "layout"] == "blocks":
                st.text_input("Blocks per stage", key=p + "layers", help="e.g. 2,2,2,2 (1 to 6 stages)")
                st.text_input("Widths per stage", key=p + "widths", help="base channels, e.g. 64,128,256,512")
                st.selectbox("Block", BLOCKS, key=p + "block", format_func=_LABELS["block"].get)
                st.selectbox("Stem", STEMS, key=p + "stem", format_func=_LABELS["stem"].get)
            else:
                help_ = ("6n+2: 8, 14, 20, 32, 44, 56, 110, …" if ss[p + "layout"] == "cifar"
                         else "18, 34, 50, 101 or 152")
                st.number_input("Depth", min_value=3, max_value=1202, step=1, key=p + "depth", help=help_)
        st.toggle("Skip connections", key=p + "skip", help="Off builds the plain twin: the additions go.")
        st.radio("Shortcut", SHORTCUTS, key=p + "shortcut", format_func=_LABELS["shortcut"].get,
                 disabled=not ss[p + "skip"], help="How the skip path crosses a change of shape (He et al. 2016).")
        st.toggle("BatchNorm", key=p + "batchnorm")
        st.selectbox("Activation", ACTIVATIONS, key=p + "activation")
        st.selectbox("Block style", STYLES, key=p + "style", format_func=_LABELS["style"].get)
        st.selectbox("Initialisation", INITS, key=p + "init", format_func=_LABELS["init"].get)
        st.toggle("Zero-init last layer of each branch", key=p + "zero_init_residual")
        if not {"in_channels", "image_size", "num_classes"} <= fixed.keys():
            with st.expander("Advanced: input and classes"):
                if "in_channels" not in fixed:
                    st.number_input("Input channels", 1, MAX_IN_CHANNELS, step=1, key=p + "in_channels")
                if "image_size" not in fixed:
                    st.number_input("Image size (px)", *IMAGE_SIZE_RANGE, step=1, key=p + "image_size")
                if "num_classes" not in fixed:
                    st.number_input("Classes", 2, MAX_CLASSES, step=1, key=p + "num_classes")

        for k, v in fixed.items():  # no widget of theirs is drawn: the URL says what the net really gets
            ss[p + k] = v
        values = {k: ss[p + k] for k in ("preset", *LAYOUT_FIELDS, *COMMON)}
        try:
            cfg = config_from_values(values)
        except ConfigError as e:
            ss[p + "_error"] = f"This net cannot be built: {e}"
            st.error(ss[p + "_error"], icon="🚫")
            return None
        ss[p + "_error"] = None
        same = preset_name(cfg)
        if same and same != values["preset"]:
            st.caption(f"This is exactly **{display_name(same)}**.")
    # Fields whose widgets were not drawn follow the net on screen, so that switching to
    # "custom" or to another layout starts from it (and the URL describes it consistently).
    current = field_values(cfg)
    if not custom:
        hidden = LAYOUT_FIELDS
    elif ss[p + "layout"] == "blocks":
        hidden = ("depth",)
    else:
        hidden = ("layers", "block", "widths", "stem")
    for k in hidden:
        ss[p + k] = current[k]
    return cfg
