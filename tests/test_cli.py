"""The CLI's error contract: one line naming the flag, exit status 2, no traceback."""

import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnet_core.cli import main

FLAGS = ["--blocks", "--widths", "--block", "--stem", "--shortcut", "--activation", "--style", "--init",
         "--in-channels", "--num-classes", "--image-size", "--preset"]


def run_main(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    return exit_info.value.code, err


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["describe", "--blocks", "0,2,2"], "--blocks"),
        (["describe", "--blocks", "two"], "--blocks"),
        (["describe", "--widths", "16,32"], "--widths"),
        (["describe", "--activation", "swish"], "--activation"),
        (["describe", "--preset", "resnet21"], "--preset"),
        (["describe", "--image-size", "big"], "--image-size"),
        (["describe", "--image-size", "4"], "--image-size"),
        (["gradflow", "--num-classes", "1"], "--num-classes"),
        (["gradflow", "--shortcut", "Z"], "--shortcut"),
        (["gradflow", "--batch-size", "0"], "--batch-size"),
        (["describe", "--frobnicate"], "--frobnicate"),
    ],
)
def test_bad_flags_exit_2_with_one_line_naming_the_flag(argv, flag, capsys):
    code, err = run_main(argv, capsys)
    assert code == 2
    assert flag in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_module_entry_point_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "resnet_core", "describe", "--blocks", "-1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--blocks" in proc.stderr
    assert "Traceback" not in proc.stderr


texts = st.one_of(st.text(max_size=10), st.integers(-10, 10_000).map(str),
                  st.lists(st.integers(-3, 600), min_size=1, max_size=7).map(lambda v: ",".join(map(str, v))))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(st.sampled_from(FLAGS), texts), min_size=1, max_size=3))
def test_fuzz_describe_flags(pairs, capsys):
    argv = ["describe", "--json"] + [x for flag, value in pairs for x in (flag, value)]
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.count("\n") == 1 and "Traceback" not in err
    else:
        out = capsys.readouterr().out
        assert code == 0 and '"total_params"' in out
