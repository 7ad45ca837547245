"""A new stack from a copy, and a wrong passphrase caught before Pulumi creates anything."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components.stacks import StackFileError, check_passphrase, main, new_stack_file

STACKS = Path(__file__).resolve().parents[3] / "stacks"
LOCAL_PASSPHRASE = "gpuserve-local-stack"  # the Makefile's, for local-target stacks


def test_the_local_stacks_salt_opens_with_its_passphrase():
    check_passphrase(STACKS / "Pulumi.local.yaml", LOCAL_PASSPHRASE)


def test_a_copied_stack_file_run_with_another_passphrase_is_refused_before_anything_is_created(tmp_path):
    copy = tmp_path / "Pulumi.mine.yaml"
    copy.write_text((STACKS / "Pulumi.local.yaml").read_text())
    with pytest.raises(StackFileError, match="does not open .*Pulumi.mine.yaml.*Nothing was created.*make new-stack"):
        check_passphrase(copy, "my-own-passphrase")


def test_a_file_without_a_salt_takes_any_passphrase(tmp_path):
    fresh = tmp_path / "Pulumi.fresh.yaml"
    fresh.write_text("config:\n  gpuserve:target: local\n")
    check_passphrase(fresh, "anything")


def test_a_salt_that_is_not_pulumis_is_a_clear_error(tmp_path):
    odd = tmp_path / "Pulumi.odd.yaml"
    odd.write_text("encryptionsalt: hello\nconfig: {}\n")
    with pytest.raises(StackFileError, match="not a Pulumi passphrase salt"):
        check_passphrase(odd, "x")


def test_a_new_stack_takes_the_sources_config_without_its_salt_or_secrets(tmp_path):
    (tmp_path / "Pulumi.src.yaml").write_text(yaml.safe_dump({
        "encryptionsalt": "v1:abc:v1:def:ghi",
        "config": {"gpuserve:target": "local", "gpuserve:token": {"secure": "v1:xx:yy"}}}))
    target, dropped = new_stack_file("dev-eu", "src", tmp_path)
    document = yaml.safe_load(target.read_text())
    assert document == {"config": {"gpuserve:target": "local"}} and dropped == ["gpuserve:token"]
    with pytest.raises(StackFileError, match="exists already"):
        new_stack_file("dev-eu", "src", tmp_path)


def test_the_command_line_says_usage_or_the_error_and_exits_2(tmp_path, capsys):
    assert main(["frobnicate"]) == 2 and "usage:" in capsys.readouterr().err
    assert main(["check-passphrase", str(tmp_path / "missing.yaml")]) == 2
    assert "error:" in capsys.readouterr().err
