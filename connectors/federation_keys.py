"""The federation keyring: the only code that reads the federation secret.

Connectors import this module; the gateway must never import it (a test walks the gateway's imports), since
a gateway holding the secret could recompute tokens for every possible ID and reverse them.

The keyring is a JSON document:

    {"federation_id": "prov-demo",
     "salt": "<base64, 32 bytes>",
     "current_epoch": 3,
     "epochs": {"3": "<base64 secret, 32 bytes or more>", "2": "<base64 secret>"}}

A connector holds the current epoch and at most the previous one, so queries signed just before a rotation
still run; an epoch absent from the file is revoked (or was never issued) and is refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from connectors.errors import KeyringError, UnknownKeyEpoch
from connectors.tokens import MIN_SECRET_BYTES, Suite, Tokenizer, derive_query_key

__all__ = [
    "ENV_KEYRING",
    "ENV_KEYRING_FILE",
    "SALT_BYTES",
    "FederationKeyring",
    "generate_keyring",
    "load_keyring",
    "rotate_keyring",
    "write_keyring",
]

ENV_KEYRING = "FEDGATE_FEDERATION_KEYRING"
ENV_KEYRING_FILE = "FEDGATE_FEDERATION_KEYRING_FILE"
SALT_BYTES = 32
MAX_EPOCHS = 2

_FIELDS = frozenset({"federation_id", "salt", "current_epoch", "epochs"})
_EPOCH_NAME = re.compile(r"0|[1-9][0-9]{0,17}")
_EXPECTED = (
    'expected a JSON object {"federation_id": str, "salt": base64 of 32 bytes, "current_epoch": int, '
    '"epochs": {"<epoch>": base64 secret of 32+ bytes}} holding the current and at most the previous epoch'
)


@dataclass(frozen=True, repr=False)
class FederationKeyring:
    """The federation id, its fixed salt, and the secrets of the epochs this connector holds."""

    federation_id: str
    salt: bytes
    current_epoch: int
    epochs: Mapping[int, bytes]

    def __post_init__(self) -> None:
        if not isinstance(self.federation_id, str) or not self.federation_id:
            raise KeyringError("federation_id must be a non-empty string")
        if not isinstance(self.salt, bytes) or len(self.salt) != SALT_BYTES:
            raise KeyringError(f"the salt must be exactly {SALT_BYTES} bytes")
        if not _is_epoch(self.current_epoch):
            raise KeyringError("current_epoch must be an integer, 0 or more")
        if not isinstance(self.epochs, Mapping):
            raise KeyringError("epochs must map epoch numbers to secrets")
        held = dict(self.epochs)
        if not held or len(held) > MAX_EPOCHS:
            raise KeyringError(
                f"a keyring holds the current epoch and at most the previous one; it holds {len(held)} "
                "(rotate with connectors.federation_keys.rotate_keyring, which drops older epochs)"
            )
        for epoch, secret in held.items():
            if not _is_epoch(epoch):
                raise KeyringError("epoch numbers must be integers, 0 or more")
            if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
                raise KeyringError(f"the secret of epoch {epoch} must be at least {MIN_SECRET_BYTES} bytes")
        if self.current_epoch not in held:
            raise KeyringError(f"current_epoch {self.current_epoch} has no secret in epochs")
        others = set(held) - {self.current_epoch}
        if others and others != {self.current_epoch - 1}:
            raise KeyringError(
                f"besides the current epoch {self.current_epoch} a keyring may hold only the previous "
                f"epoch {self.current_epoch - 1}, not {sorted(others)}"
            )
        # Frozen in depth: a caller's dict must not be able to change the held secrets afterwards.
        object.__setattr__(self, "epochs", MappingProxyType(held))

    def __repr__(self) -> str:
        return (
            f"FederationKeyring(federation_id={self.federation_id!r}, current_epoch={self.current_epoch}, "
            f"epochs={sorted(self.epochs)}, salt=<redacted>, secrets=<redacted>)"
        )

    def tokenizer(self, *, epoch: int, suite: Suite, entity_kind: str, query_id: str) -> Tokenizer:
        """Return the tokenizer of one entity kind of one query under key epoch `epoch`.

        Raises `UnknownKeyEpoch` if this connector does not hold `epoch` (never issued, or revoked).
        """
        if not _is_epoch(epoch):
            raise UnknownKeyEpoch(f"key epoch must be an integer, 0 or more, got {type(epoch).__name__}")
        secret = self.epochs.get(epoch)
        if secret is None:
            raise UnknownKeyEpoch(
                f"key epoch {epoch} is not held by this connector (it holds {sorted(self.epochs)}); "
                "it was never issued or has been revoked: install the federation's current keyring"
            )
        key = derive_query_key(
            secret,
            salt=self.salt,
            federation_id=self.federation_id,
            epoch=epoch,
            suite=suite,
            entity_kind=entity_kind,
            query_id=query_id,
        )
        return Tokenizer(key, suite)


def _is_epoch(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise KeyringError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        # The decoder's message may quote the offending characters, which are secret material.
        raise KeyringError(f"{what} is not valid base64") from None


def _from_document(doc: object) -> FederationKeyring:
    if not isinstance(doc, Mapping):
        raise KeyringError("the keyring is not a JSON object")
    missing = sorted(_FIELDS - set(doc))
    if missing:
        raise KeyringError(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(str(k) for k in set(doc) - _FIELDS)
    if unknown:
        raise KeyringError(f"unknown field(s): {', '.join(unknown)}")
    current = doc["current_epoch"]
    if not _is_epoch(current):
        raise KeyringError("current_epoch must be an integer, 0 or more")
    raw_epochs = doc["epochs"]
    if not isinstance(raw_epochs, Mapping):
        raise KeyringError('"epochs" must be an object mapping epoch numbers to base64 secrets')
    epochs: dict[int, bytes] = {}
    for name, value in raw_epochs.items():
        if not isinstance(name, str) or not _EPOCH_NAME.fullmatch(name):
            raise KeyringError('the names in "epochs" must be epoch numbers written in decimal, like "3"')
        epochs[int(name)] = _unb64(value, f"the secret of epoch {name}")
    return FederationKeyring(
        federation_id=doc["federation_id"],
        salt=_unb64(doc["salt"], "the salt"),
        current_epoch=current,
        epochs=epochs,
    )


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        # json.loads would silently keep the last of two secrets for one epoch.
        raise KeyringError("a name appears twice in one JSON object")
    return doc


def _parse(text: str, source: str) -> FederationKeyring:
    try:
        return _from_document(json.loads(text, object_pairs_hook=_no_duplicates))
    except json.JSONDecodeError as exc:
        # Only the position: the decoder's full message can quote the text around it.
        raise KeyringError(
            f"{source} is not valid JSON (line {exc.lineno}, column {exc.colno}); {_EXPECTED}"
        ) from None
    except KeyringError as exc:
        raise KeyringError(f"{source}: {exc}; {_EXPECTED}") from None


def _read_file(path: Path, source: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyringError(f"{source} does not exist") from None
    except UnicodeDecodeError:
        raise KeyringError(f"{source} is not UTF-8 text; {_EXPECTED}") from None
    except OSError as exc:
        raise KeyringError(f"{source} cannot be read: {exc.strerror or type(exc).__name__}") from None


def load_keyring(path: Path | None = None, *, environ: Mapping[str, str] | None = None) -> FederationKeyring:
    """Load the federation keyring.

    From `path` if given, else from $FEDGATE_FEDERATION_KEYRING (the JSON itself) or
    $FEDGATE_FEDERATION_KEYRING_FILE (a path to it); setting both is refused. Raises `KeyringError`
    naming the file or variable and what is expected; secret material is never quoted.
    """
    if path is not None:
        source = f"keyring file {path}"
        return _parse(_read_file(Path(path), source), source)
    env = os.environ if environ is None else environ
    text = env.get(ENV_KEYRING, "")
    file = env.get(ENV_KEYRING_FILE, "")
    if text and file:
        raise KeyringError(
            f"both {ENV_KEYRING} and {ENV_KEYRING_FILE} are set; set only one, so that it is clear which "
            "keyring is in use"
        )
    if text:
        return _parse(text, f"environment variable {ENV_KEYRING}")
    if file:
        source = f"keyring file {file} (from {ENV_KEYRING_FILE})"
        return _parse(_read_file(Path(file), source), source)
    raise KeyringError(
        f"no federation keyring: set federation_keyring_file in the connector configuration, or set "
        f"{ENV_KEYRING} to the keyring JSON, or {ENV_KEYRING_FILE} to the path of the keyring file"
    )


def _to_document(keyring: FederationKeyring) -> dict[str, object]:
    return {
        "federation_id": keyring.federation_id,
        "salt": _b64(keyring.salt),
        "current_epoch": keyring.current_epoch,
        "epochs": {str(e): _b64(keyring.epochs[e]) for e in sorted(keyring.epochs, reverse=True)},
    }


def generate_keyring(federation_id: str, *, epoch: int = 1) -> dict[str, object]:
    """Return a new keyring document with a fresh random salt and a fresh secret for `epoch`."""
    if not _is_epoch(epoch):
        raise KeyringError("epoch must be an integer, 0 or more")
    keyring = FederationKeyring(
        federation_id=federation_id,
        salt=secrets.token_bytes(SALT_BYTES),
        current_epoch=epoch,
        epochs={epoch: secrets.token_bytes(MIN_SECRET_BYTES)},
    )
    return _to_document(keyring)


def rotate_keyring(doc: Mapping[str, object]) -> dict[str, object]:
    """Return a rotated copy of `doc`: a fresh secret for epoch current+1, the current epoch kept as the
    previous one, and every older epoch dropped (revoked). The salt and federation id do not change.
    """
    try:
        keyring = _from_document(doc)
    except KeyringError as exc:
        raise KeyringError(f"cannot rotate keyring document: {exc}; {_EXPECTED}") from None
    new_epoch = keyring.current_epoch + 1
    rotated = FederationKeyring(
        federation_id=keyring.federation_id,
        salt=keyring.salt,
        current_epoch=new_epoch,
        epochs={
            new_epoch: secrets.token_bytes(MIN_SECRET_BYTES),
            keyring.current_epoch: keyring.epochs[keyring.current_epoch],
        },
    )
    return _to_document(rotated)


def write_keyring(doc: Mapping[str, object], path: Path) -> None:
    """Write a keyring document to `path`, readable by its owner only (mode 0600).

    The document is validated first, and the file is replaced atomically, so a connector never reads a
    half-written or invalid keyring.
    """
    try:
        keyring = _from_document(doc)
    except KeyringError as exc:
        raise KeyringError(f"refusing to write keyring file {path}: {exc}; {_EXPECTED}") from None
    path = Path(path)
    text = json.dumps(_to_document(keyring), indent=2) + "\n"
    # mkstemp creates the file with mode 0600 before any secret is written to it.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
