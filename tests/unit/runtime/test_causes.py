"""replica_cause: the replica's own exception out of Serve's deployment message."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from runtime.causes import MAX_TEXT, replica_cause

REAL = (Path(__file__).parent / "data" / "deploy_failed_message.txt").read_text()


def test_the_innermost_exception_and_the_users_frames_are_kept():
    assert replica_cause(REAL) == (
        "ValueError: This file contains pickled (object) data. If you trust the file you can load it unsafely "
        "using the `allow_pickle=` keyword argument or `pickle.load()`. "
        "(at runtime/app/tiny_model.py:34 in load <- runtime/app/model.py:34 in __init__)")


def test_pid_ip_actor_id_and_serves_own_frames_are_dropped():
    cause = replica_cause(REAL)
    for leak in ("pid=", "192.0.2.2", "actor_id", "site-packages", "RuntimeError", "\x1b["):
        assert leak not in cause


def test_a_custom_exception_without_a_conventional_suffix_is_found():
    message = ('Error:\n  File "/home/u/app/model.py", line 9, in __init__\n    raise WeightsMissing("BYO-V3-BOOM")\n'
               "model.WeightsMissing: BYO-V3-BOOM\n")
    assert replica_cause(message) == "model.WeightsMissing: BYO-V3-BOOM (at u/app/model.py:9 in __init__)"


def test_a_message_without_a_traceback_has_no_cause():
    assert replica_cause("The deployment failed to start 3 times in a row.") is None


@given(st.text())
def test_any_text_yields_none_or_one_bounded_line(text):
    cause = replica_cause(text)
    assert cause is None or ("\n" not in cause and len(cause) <= MAX_TEXT + 200)


def test_a_frame_of_shipped_code_is_named_by_its_path_inside_the_package():
    message = ('Traceback (most recent call last):\n'
               '  File "/tmp/ray/session_1/runtime_resources/working_dir_files/_ray_pkg_0a1b/sub/app.py", '
               'line 7, in __init__\n    raise WeightsMissing("BYO-V3-BOOM")\n'
               'WeightsMissing: BYO-V3-BOOM\n')
    assert replica_cause(message) == "WeightsMissing: BYO-V3-BOOM (at sub/app.py:7 in __init__)"
