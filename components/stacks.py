"""Stack files: start a new stack from a copy, and catch a wrong passphrase before Pulumi
creates anything.

A stack file copied from another (`local`, say) carries that stack's `encryptionsalt`: the
passphrase secrets provider's key check, made with *that* passphrase. Run with another
one, `pulumi stack init` creates the stack and only the first operation then stops with
"incorrect passphrase". So:

    python -m components.stacks check-passphrase stacks/Pulumi.<stack>.yaml
        exits 0 when the file has no salt yet or PULUMI_CONFIG_PASSPHRASE opens it; else
        exits 2 saying what to do (`make stack` runs it before `pulumi stack init`)
    python -m components.stacks new <name> [--from local]
        writes stacks/Pulumi.<name>.yaml: the source's config without its salt and its
        secrets (re-set those with `pulumi config set --secret`), for `make new-stack`

The check is Pulumi's own (sdk/go/common/resource/config/crypt.go): the salt line is
`v1:<salt>:v1:<nonce>:<ciphertext>`, the key PBKDF2-SHA256(passphrase, salt, 1,000,000
iterations, 32 bytes), and the ciphertext the AES-256-GCM encryption of "pulumi".
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
from pathlib import Path

import yaml

from runtime.constants import PROJECT_DIR

STACKS = PROJECT_DIR / "stacks"


class StackFileError(Exception):
    """A stack file that cannot be used as it is: what is wrong, and what to do."""


def passphrase_opens(encryption_salt: str, passphrase: str) -> bool:
    """Whether `passphrase` is the one `encryption_salt` was made with. Pure."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        version, salt, check_version, nonce, ciphertext = encryption_salt.split(":")
        if (version, check_version) != ("v1", "v1"):
            raise ValueError(encryption_salt)
        key = hashlib.pbkdf2_hmac("sha256", passphrase.encode(), base64.b64decode(salt), 1_000_000, 32)
        return AESGCM(key).decrypt(base64.b64decode(nonce), base64.b64decode(ciphertext), None) == b"pulumi"
    except InvalidTag:
        return False
    except ValueError as exc:
        raise StackFileError(f"encryptionsalt is not a Pulumi passphrase salt (v1:<salt>:v1:<nonce>:<data>): "
                             f"{str(exc)[:80]}") from None


def check_passphrase(stack_file: Path, passphrase: str | None) -> None:
    """Raise StackFileError when the file's salt was made with another passphrase."""
    document = _load(stack_file)
    salt = document.get("encryptionsalt")
    if not salt:
        return  # a fresh file: `pulumi stack init` makes a salt with this passphrase
    if not passphrase:
        raise StackFileError(f"{stack_file} has an encryptionsalt but PULUMI_CONFIG_PASSPHRASE is not set: "
                             "export the passphrase this stack was made with")
    if not passphrase_opens(str(salt), passphrase):
        secrets = _secure_keys(document)
        raise StackFileError(
            f"PULUMI_CONFIG_PASSPHRASE does not open {stack_file}: its encryptionsalt was made with another "
            "passphrase (was the file copied from another stack?). Nothing was created. Either export that "
            f"passphrase, or start the stack afresh: `make new-stack NAME={stack_file.stem.split('.', 1)[-1]} "
            "FROM=<the stack it came from>`, or delete its encryptionsalt line"
            + (f" and its secure values ({', '.join(secrets)}), then set those again with "
               "`pulumi config set --secret`" if secrets else "") + ".")


def new_stack_file(name: str, source: str, stacks: Path = STACKS) -> tuple[Path, list[str]]:
    """Write stacks/Pulumi.<name>.yaml from the source stack's config, without its salt and
    secrets. Returns the new file and the secret keys left out."""
    target = stacks / f"Pulumi.{name}.yaml"
    if target.exists():
        raise StackFileError(f"{target} exists already; choose another NAME or delete it first")
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise StackFileError(f"stack name {name!r}: letters, digits, '-', '_' and '.' only")
    document = _load(stacks / f"Pulumi.{source}.yaml")
    config = document.get("config") or {}
    dropped = _secure_keys(document)
    kept = {key: value for key, value in config.items() if key not in dropped}
    header = (f"# Made from stacks/Pulumi.{source}.yaml by `make new-stack`. `pulumi stack init {name}` adds\n"
              "# this stack's own encryptionsalt, made with your PULUMI_CONFIG_PASSPHRASE.\n")
    target.write_text(header + yaml.safe_dump({"config": kept}, sort_keys=False))
    return target, dropped


def _secure_keys(document: dict) -> list[str]:
    config = document.get("config") or {}
    return [key for key, value in config.items() if isinstance(value, dict) and "secure" in value]


def _load(path: Path) -> dict:
    from components.config_file import read_stack_file
    from components.config_errors import ConfigError

    try:
        _stack, config = read_stack_file(path)  # strict: whatever bytes it holds, one clear error
    except ConfigError as exc:
        raise StackFileError(str(exc)) from None
    salt = (yaml.safe_load(path.read_text()) or {}).get("encryptionsalt")
    return {"config": config, "encryptionsalt": salt}


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 2 and argv[0] == "check-passphrase":
            check_passphrase(Path(argv[1]), os.environ.get("PULUMI_CONFIG_PASSPHRASE"))
            return 0
        if len(argv) in (2, 4) and argv[0] == "new" and (len(argv) == 2 or argv[2] == "--from"):
            target, dropped = new_stack_file(argv[1], argv[3] if len(argv) == 4 else "local")
            print(f"wrote {target.relative_to(PROJECT_DIR) if target.is_relative_to(PROJECT_DIR) else target}"
                  + (f"; left out the secrets {', '.join(dropped)}: set them with `pulumi config set --secret`"
                     if dropped else ""))
            return 0
    except StackFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("usage: python -m components.stacks check-passphrase <stack file>\n"
          "       python -m components.stacks new <name> [--from <stack>]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
