"""Every server limit: a default, an environment variable, a CLI flag where one applies, and a
message that names the limit and its value when a request goes beyond it, refused before any
work starts (no thread, no run folder, no download).

Queue-limit details are in test_jobs.py (test_queue_limits_refuse_with_the_limit_named), the
upload limit's zip bomb in test_runs.py (test_size_and_member_limits), the Train page's refusal
in test_app_train.py (test_a_refused_request_says_which_limit); here each limit is checked once,
side by side, for what the issue asks of all of them.
"""

from __future__ import annotations

import io
import threading
import urllib.request
import zipfile

import pytest

from resnet_core import data, limits
from resnet_core.cli import build_parser, main
from resnet_core.config import ConfigError, ModelTooLarge, make_train_config, preset
from resnet_core.jobs import JobManager
from resnet_core.limits import LimitError, Limits, applied, from_env
from resnet_core.runzip import ImportRefused, import_zip
from resnet_core.train import check_limits, train
from tests.trainkit import mnist_tiny, one_thread, tiny_model, tiny_train

# Where each limit can be set besides its environment variable. A new limit must be added here,
# which makes whoever adds it decide on its flag (test_every_limit_is_accounted_for).
CLI_FLAGS = {
    "max_params": ("describe", "gradflow", "train"),
    "max_sample_mb": ("describe", "gradflow", "train"),
    "max_train_memory_mb": ("train",),
    "max_steps": ("train",),
    "max_batch_size": ("gradflow", "train"),
    "max_download_mb": ("train",),
    # server-only: the CLI trains one run in the foreground and imports no uploads
    "max_running_jobs": (),
    "max_queued_per_session": (),
    "max_queued_total": (),
    "max_upload_mb": (),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def test_every_limit_is_accounted_for():
    assert set(CLI_FLAGS) == set(limits.NAMES)


@pytest.mark.parametrize("name", limits.NAMES)
def test_default_and_environment_variable(name):
    default = getattr(Limits(), name)
    assert isinstance(default, int) and default >= 0
    env = "RESNET_" + name.upper()
    assert getattr(from_env({env: "7"}), name) == 7
    assert getattr(from_env({}), name) == default
    with pytest.raises(ValueError, match=env):
        from_env({env: "lots"})
    with pytest.raises(ValueError, match=env):
        from_env({env: "-1"})
    with pytest.raises(ValueError, match=name):
        from_env({}, **{name: -1})


@pytest.mark.parametrize("name", [n for n, cmds in CLI_FLAGS.items() if cmds])
def test_cli_flag_where_it_applies(name):
    parser = build_parser()
    for command in ("describe", "gradflow", "train"):
        args, unknown = parser.parse_known_args([command, flag(name), "5"])
        if command in CLI_FLAGS[name]:
            assert getattr(args, name) == 5 and not unknown, command
        else:
            assert unknown, f"{command} should not take {flag(name)}"


def test_a_malformed_variable_is_one_line_from_the_cli(monkeypatch, capsys):
    monkeypatch.setenv("RESNET_MAX_STEPS", "many")
    with pytest.raises(SystemExit) as e:
        main(["describe"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "RESNET_MAX_STEPS" in err and "Traceback" not in err


def test_a_low_max_params_still_lets_the_presets_load():
    """Set below ResNet-152's 60 M, the server must still start; asking for ResNet-152 is what is refused."""
    with applied(from_env({}, max_params=20_000_000)):
        assert preset("resnet18").depth == 18
        with pytest.raises(ModelTooLarge, match="max_params"):
            preset("resnet152")


# ---------------------------------------------------------------- each limit's message


def _cli_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_max_params(capsys):
    tight = from_env({}, max_params=1_000)
    with applied(tight), pytest.raises(ModelTooLarge) as e:
        preset("resnet20")
    assert isinstance(e.value, LimitError) and isinstance(e.value, ConfigError) and e.value.limit == "max_params"
    message = str(e.value)
    assert "limit max_params" in message and "at most 1,000" in message and "RESNET_MAX_PARAMS" in message
    with pytest.raises(ModelTooLarge, match="at most 1,000"):  # a manager's or train()'s limits apply too
        check_limits(preset("resnet20"), tiny_train(), tight)
    for command in ("describe", "gradflow"):
        err = _cli_error([command, "--max-params", "1000"], capsys)
        assert "--max-params" in err and "at most 1,000" in err and "269," in err
    # raising it lets a net through that the default (100 M) refuses
    big = {"widths": (1024, 1024, 1024), "layers": (5, 5, 5)}  # ~283 M parameters
    with pytest.raises(ModelTooLarge, match="at most 100,000,000"):
        preset("resnet20", **big)
    with applied(from_env({}, max_params=300_000_000)):
        preset("resnet20", **big)


def test_max_sample_mb(capsys):
    with applied(from_env({}, max_sample_mb=1)), pytest.raises(ModelTooLarge) as e:
        preset("resnet20", image_size=256)
    assert e.value.limit == "max_sample_mb" and "at most 1 MiB" in str(e.value)
    assert "RESNET_MAX_SAMPLE_MB" in str(e.value)
    err = _cli_error(["describe", "--image-size", "256", "--max-sample-mb", "1"], capsys)
    assert "--max-sample-mb" in err and "at most 1 MiB" in err


def test_max_train_memory_mb(capsys, tmp_path):
    with pytest.raises(LimitError) as e:
        check_limits(mnist_tiny(), tiny_train(batch_size=512), from_env({}, max_train_memory_mb=1))
    assert e.value.limit == "max_train_memory_mb" and "is 1 MiB" in str(e.value)
    assert "RESNET_MAX_TRAIN_MEMORY_MB" in str(e.value)
    err = _cli_error(["train", "--batch-size", "512", "--max-train-memory-mb", "1", "--out", str(tmp_path)], capsys)
    assert "max_train_memory_mb is 1 MiB" in err and not any(tmp_path.iterdir())


def test_max_steps(capsys, tmp_path):
    with pytest.raises(LimitError) as e:
        make_train_config(steps=101, limits=from_env({}, max_steps=100))
    assert e.value.limit == "max_steps" and "max_steps is 100 steps" in str(e.value)
    assert "needs 101 steps" in str(e.value) and "RESNET_MAX_STEPS" in str(e.value)
    err = _cli_error(["train", "--steps", "101", "--max-steps", "100", "--out", str(tmp_path)], capsys)
    assert "max_steps is 100" in err and not any(tmp_path.iterdir())


def test_max_batch_size(capsys, tmp_path):
    with pytest.raises(LimitError) as e:
        make_train_config(batch_size=65, limits=from_env({}, max_batch_size=64))
    assert e.value.limit == "max_batch_size" and "max_batch_size is 64" in str(e.value)
    err = _cli_error(["train", "--batch-size", "65", "--max-batch-size", "64", "--out", str(tmp_path)], capsys)
    assert "max_batch_size is 64" in err and not any(tmp_path.iterdir())
    err = _cli_error(["gradflow", "--batch-size", "65", "--max-batch-size", "64"], capsys)
    assert "1 to 64" in err and "max_batch_size" in err


def test_max_download_mb(capsys, tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a download beyond the limit must be refused before any request")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    root = tmp_path / "data"
    # through train(): the limits it is given reach the download (CIFAR-10 is ~163 MiB)
    with pytest.raises(data.DownloadTooLarge) as e:
        train(tiny_model(in_channels=3, image_size=32, num_classes=10), tiny_train(dataset="cifar10"),
              limits=from_env({}, max_download_mb=100), data_root=str(root), download=True)
    assert e.value.limit == "max_download_mb" and "max_download_mb is 100 MiB" in str(e.value)
    assert "RESNET_MAX_DOWNLOAD_MB" in str(e.value)
    code = main(["train", "--dataset", "cifar10", "--download", "--max-download-mb", "100", "--data-root",
                 str(root), "--steps", "2", "--out", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "max_download_mb is 100 MiB" in err and "Traceback" not in err
    assert not root.exists() or not any(root.rglob("*.gz"))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_max_upload_mb(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("run/config.json", b"x" * (2 << 20))
    with pytest.raises(ImportRefused) as e:
        import_zip(buf.getvalue(), tmp_path / "runs", from_env({}, max_upload_mb=1))
    assert "max_upload_mb is 1 MiB" in str(e.value) and "RESNET_MAX_UPLOAD_MB" in str(e.value)
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- the job manager's limits


def _manager(tmp_path, **overrides) -> JobManager:
    return JobManager(root=tmp_path / "runs", limits=from_env({}, **overrides), max_running=None, idle_s=600)


def _refused_before_work(m: JobManager, tmp_path, limit: str, words: str, owner: str = "s", **train) -> None:
    threads, folders = threading.active_count(), _folders(tmp_path)
    with pytest.raises(LimitError) as e:
        m.submit(mnist_tiny(), tiny_train(**train), owner=owner)
    assert e.value.limit == limit and words in str(e.value)
    assert f"RESNET_{limit.upper()}" in str(e.value)
    assert threading.active_count() == threads and _folders(tmp_path) == folders


def _folders(tmp_path) -> list[str]:
    root = tmp_path / "runs"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_the_managers_own_limits_refuse_before_any_thread_or_folder(tmp_path):
    m = _manager(tmp_path, max_params=100, max_steps=50, max_batch_size=8, max_train_memory_mb=1)
    try:
        _refused_before_work(m, tmp_path, "max_params", "at most 100 (limit max_params", steps=5, batch_size=8)
        m.limits = from_env({}, max_steps=50)
        _refused_before_work(m, tmp_path, "max_steps", "limit max_steps is 50 steps", steps=51)
        m.limits = from_env({}, max_batch_size=8)
        _refused_before_work(m, tmp_path, "max_batch_size", "limit max_batch_size is 8", batch_size=9)
        m.limits = from_env({}, max_train_memory_mb=1)
        _refused_before_work(m, tmp_path, "max_train_memory_mb", "limit max_train_memory_mb is 1 MiB",
                             batch_size=1024)
        assert m.jobs() == []
    finally:
        m.shutdown()


def test_running_and_queue_limits(tmp_path):
    m = _manager(tmp_path, max_running_jobs=1, max_queued_per_session=1, max_queued_total=2)
    assert m.max_running == 1  # from the limit (0 would mean one per GPU, else one)
    try:
        first = m.get(m.submit(mnist_tiny(), tiny_train(steps=20_000, batch_size=8), owner="a"))
        first.pause()  # holds the one slot without using the CPU
        second = m.get(m.submit(mnist_tiny(), tiny_train(steps=5, batch_size=8), owner="a"))
        assert second.state == "queued" and second.snapshot()["queue_place"] == 1
        _refused_before_work(m, tmp_path, "max_queued_per_session", "limit max_queued_per_session is 1",
                             owner="a", steps=5, batch_size=8)
        m.submit(mnist_tiny(), tiny_train(steps=5, batch_size=8), owner="b")
        threads = threading.active_count()
        with pytest.raises(LimitError, match="limit max_queued_total is 2 queued jobs"):
            m.submit(mnist_tiny(), tiny_train(steps=5, batch_size=8), owner="c")
        assert threading.active_count() == threads and len(m.jobs()) == 3
    finally:
        m.shutdown()


@pytest.mark.parametrize(("raw", "kw", "expected"), [
    (None, {}, 60.0),  # unset: the default
    ("12.5", {}, 12.5),
    ("abc", {}, 60.0),  # not a number
    ("nan", {}, 60.0),
    ("0", {}, 60.0),  # 0 is not a timeout
    ("0", {"zero_ok": True}, 0.0),  # but it is a count of warm actors
    ("-3", {"zero_ok": True}, 60.0),
    ("1e8", {}, 60.0),  # beyond the top
    ("0.05", {"lo": 0.1, "hi": 10.0, "zero_ok": True}, 60.0),
    ("10", {"lo": 0.1, "hi": 10.0, "zero_ok": True}, 10.0),  # both ends of a range are in it
    ("0.1", {"lo": 0.1, "hi": 10.0, "zero_ok": True}, 0.1),
])
def test_env_float_keeps_the_default_for_a_bad_value(raw, kw, expected):
    env = {} if raw is None else {"RESNET_X_S": raw}
    assert limits.env_float("RESNET_X_S", 60.0, env=env, **kw) == expected
