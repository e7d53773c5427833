"""Per-query tokens, the federation keyring, and the rule that the gateway never holds the secret."""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
import textwrap
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from hypothesis import given
from hypothesis import strategies as st

from connectors.errors import KeyringError, UnknownKeyEpoch
from connectors.federation_keys import (
    ENV_KEYRING,
    ENV_KEYRING_FILE,
    FederationKeyring,
    generate_keyring,
    load_keyring,
    rotate_keyring,
    write_keyring,
)
from connectors.tokens import (
    TOKEN_BYTES,
    Suite,
    Tokenizer,
    _hkdf,
    derive_query_key,
    mac,
)

ROOT = Path(__file__).resolve().parents[1]
SECRET = bytes(range(32))
SALT = bytes(range(100, 132))
KEY = bytes(range(200, 232))


def _key(**overrides: object) -> bytes:
    args: dict[str, object] = {
        "salt": SALT,
        "federation_id": "prov-demo",
        "epoch": 3,
        "suite": Suite.HMAC_SHA256,
        "entity_kind": "person",
        "query_id": "q-0001",
    }
    args.update(overrides)
    secret = args.pop("secret", SECRET)
    return derive_query_key(secret, **args)  # type: ignore[arg-type]


# --- known answers from the standards ------------------------------------------------------------------

# RFC 4231 section 4: HMAC-SHA-256 test cases 1-4, and 6-7 for keys longer than a SHA-256 block.
RFC4231 = [
    (
        b"\x0b" * 20,
        b"Hi There",
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    ),
    (
        b"Jefe",
        b"what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    (
        b"\xaa" * 20,
        b"\xdd" * 50,
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
    ),
    (
        bytes(range(1, 26)),
        b"\xcd" * 50,
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
    ),
    (
        b"\xaa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
    (
        b"\xaa" * 131,
        b"This is a test using a larger than block-size key and a larger than block-size data. "
        b"The key needs to be hashed before being used by the HMAC algorithm.",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ),
]


@pytest.mark.parametrize(("key", "data", "expected"), RFC4231)
def test_hmac_sha256_matches_rfc4231(key: bytes, data: bytes, expected: str) -> None:
    full = mac(key, Suite.HMAC_SHA256, data)
    assert full.hex() == expected
    assert full[:TOKEN_BYTES] == bytes.fromhex(expected)[:TOKEN_BYTES]


def test_hkdf_matches_rfc5869_case_1() -> None:
    okm = _hkdf(b"\x0b" * 22, bytes(range(13)), bytes(range(0xF0, 0xFA)), 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_sm3_is_the_national_standard_hash() -> None:
    # GB/T 32905-2016 appendix A, examples 1 and 2.
    for data, expected in [
        (b"abc", "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"),
        (b"abcd" * 16, "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"),
    ]:
        h = hashes.Hash(hashes.SM3())
        h.update(data)
        assert h.finalize().hex() == expected


def _rfc2104_sm3(key: bytes, data: bytes) -> bytes:
    def sm3(raw: bytes) -> bytes:
        h = hashes.Hash(hashes.SM3())
        h.update(raw)
        return h.finalize()

    padded = (sm3(key) if len(key) > 64 else key).ljust(64, b"\0")
    inner = sm3(bytes(b ^ 0x36 for b in padded) + data)
    return sm3(bytes(b ^ 0x5C for b in padded) + inner)


@pytest.mark.parametrize(("key", "data", "_"), RFC4231)
def test_hmac_sm3_is_rfc2104_over_sm3(key: bytes, data: bytes, _: str) -> None:
    assert mac(key, Suite.HMAC_SM3, data) == _rfc2104_sm3(key, data)


@pytest.mark.parametrize(("key", "data", "_"), RFC4231[:4])
def test_blake2b_is_keyed_blake2b_with_32_byte_digest(key: bytes, data: bytes, _: str) -> None:
    assert mac(key, Suite.BLAKE2B, data) == hashlib.blake2b(data, key=key, digest_size=32).digest()


def test_query_key_info_layout_is_pinned() -> None:
    # Connectors written in another language must derive the same key: pin the info bytes.
    def field(text: str) -> bytes:
        raw = text.encode()
        return len(raw).to_bytes(2, "big") + raw

    info = b"".join(
        field(f) for f in ["fedgate-token/v1", "prov-demo", "3", "hmac-sha256", "person", "q-0001"]
    )
    assert info[:18] == b"\x00\x10fedgate-token/v1"
    assert _key() == _hkdf(SECRET, SALT, info, 32)
    value = "11010519491231002X"
    expected = hmac.new(_hkdf(SECRET, SALT, info, 32), value.encode(), "sha256").digest()[:16]
    assert Tokenizer(_key(), Suite.HMAC_SHA256).token(value) == expected


# --- tokens ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", list(Suite))
def test_every_suite_gives_16_byte_tokens(suite: Suite) -> None:
    tok = Tokenizer(_key(suite=suite), suite)
    tokens = tok.tokens(["11010519491231002X", "440524188001010014", ""])
    assert [len(t) for t in tokens] == [TOKEN_BYTES] * 3
    assert len(set(tokens)) == 3
    assert tok.token("11010519491231002X") == mac(_key(suite=suite), suite, b"11010519491231002X")[:16]


@pytest.mark.parametrize("suite", list(Suite))
@given(values=st.lists(st.text(max_size=40), max_size=30))
def test_tokens_equals_token_one_by_one(suite: Suite, values: list[str]) -> None:
    tok = Tokenizer(KEY, suite)
    assert tok.tokens(values) == [tok.token(v) for v in values]
    assert tok.tokens(iter(values)) == tok.tokens(values)


@given(value=st.text(min_size=1, max_size=40))
def test_hmac_sha256_tokens_equal_stdlib_hmac(value: str) -> None:
    assert Tokenizer(KEY, Suite.HMAC_SHA256).token(value) == hmac.digest(KEY, value.encode(), "sha256")[:16]


def test_same_inputs_give_the_same_token_in_two_tokenizers() -> None:
    for suite in Suite:
        a = Tokenizer(_key(suite=suite), suite)
        b = Tokenizer(_key(suite=suite), suite)
        assert a.tokens(["11010519491231002X", "X"]) == b.tokens(["11010519491231002X", "X"])


@pytest.mark.parametrize(
    "change",
    [
        {"query_id": "q-0002"},
        {"entity_kind": "household"},
        {"epoch": 4},
        {"federation_id": "prov-other"},
        {"salt": bytes(32)},
        {"secret": bytes(range(1, 33))},
    ],
)
def test_any_key_input_changes_the_token(change: dict[str, object]) -> None:
    value = "11010519491231002X"
    base = Tokenizer(_key(), Suite.HMAC_SHA256).token(value)
    assert Tokenizer(_key(**change), Suite.HMAC_SHA256).token(value) != base


def test_suite_changes_the_key_and_the_token() -> None:
    value = "11010519491231002X"
    keys = {suite: _key(suite=suite) for suite in Suite}
    assert len(set(keys.values())) == len(Suite)
    assert len({Tokenizer(k, s).token(value) for s, k in keys.items()}) == len(Suite)
    # Even under one key, the three MACs differ.
    assert len({Tokenizer(KEY, s).token(value) for s in Suite}) == len(Suite)


def test_fields_are_length_prefixed_not_concatenated() -> None:
    assert _key(entity_kind="ab", query_id="c") != _key(entity_kind="a", query_id="bc")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"secret": b""}, "secret is empty"),
        ({"secret": bytes(31)}, "31 bytes; at least 32"),
        ({"secret": "text"}, "must be bytes"),
        ({"salt": b"short"}, "salt has 5 bytes"),
        ({"federation_id": ""}, "federation_id must not be empty"),
        ({"entity_kind": ""}, "entity_kind must not be empty"),
        ({"query_id": ""}, "query_id must not be empty"),
        ({"query_id": "x" * 70_000}, "query_id is longer than"),
        ({"epoch": -1}, "epoch must be 0 or more"),
        ({"epoch": True}, "epoch must be an integer"),
        ({"suite": "md5"}, "md5"),
    ],
)
def test_bad_key_inputs_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        _key(**change)
    assert SECRET.hex() not in str(info.value)


def test_tokenizer_refuses_short_keys_and_hides_its_key() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Tokenizer(b"short", Suite.HMAC_SHA256)
    with pytest.raises(ValueError, match="at most 64"):
        Tokenizer(bytes(65), Suite.BLAKE2B)
    text = repr(Tokenizer(KEY, Suite.BLAKE2B))
    assert "redacted" in text
    assert KEY.hex() not in text
    assert repr(KEY)[2:20] not in text


# --- keyring ---------------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _doc(**overrides: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "federation_id": "prov-demo",
        "salt": _b64(SALT),
        "current_epoch": 3,
        "epochs": {"3": _b64(SECRET), "2": _b64(bytes(range(1, 33)))},
    }
    doc.update(overrides)
    return doc


def test_keyring_loads_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    path.write_text(json.dumps(_doc()))
    ring = load_keyring(path, environ={})
    assert ring.federation_id == "prov-demo"
    assert ring.salt == SALT
    assert ring.current_epoch == 3
    assert dict(ring.epochs) == {3: SECRET, 2: bytes(range(1, 33))}


def test_keyring_loads_from_the_environment(tmp_path: Path) -> None:
    text = json.dumps(_doc())
    from_json = load_keyring(environ={ENV_KEYRING: text})
    path = tmp_path / "k.json"
    path.write_text(text)
    from_file = load_keyring(environ={ENV_KEYRING_FILE: str(path)})
    assert from_json == from_file
    # An explicit path wins over the environment.
    assert load_keyring(path, environ={ENV_KEYRING: "not json"}) == from_json


def test_keyring_from_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KEYRING_FILE, raising=False)
    monkeypatch.setenv(ENV_KEYRING, json.dumps(_doc()))
    assert load_keyring().current_epoch == 3


def test_tokens_from_the_keyring_use_the_derived_key() -> None:
    ring = load_keyring(environ={ENV_KEYRING: json.dumps(_doc())})
    tok = ring.tokenizer(epoch=3, suite=Suite.BLAKE2B, entity_kind="person", query_id="q-0001")
    assert tok.token("A") == Tokenizer(_key(suite=Suite.BLAKE2B), Suite.BLAKE2B).token("A")
    prev = ring.tokenizer(epoch=2, suite=Suite.BLAKE2B, entity_kind="person", query_id="q-0001")
    assert prev.token("A") != tok.token("A")


def test_missing_configuration_names_the_variables() -> None:
    with pytest.raises(KeyringError, match=f"{ENV_KEYRING}.*{ENV_KEYRING_FILE}"):
        load_keyring(environ={})
    with pytest.raises(KeyringError, match="set only one"):
        load_keyring(environ={ENV_KEYRING: "{}", ENV_KEYRING_FILE: "/nonexistent"})
    with pytest.raises(KeyringError, match=r"keyring file /nonexistent/k\.json .*does not exist"):
        load_keyring(environ={ENV_KEYRING_FILE: "/nonexistent/k.json"})


BAD_DOCUMENTS = [
    ("not json at all", "not valid JSON"),
    ("[]", "not a JSON object"),
    (json.dumps({"federation_id": "x"}), "missing field"),
    (json.dumps(_doc(extra=1)), "unknown field"),
    (json.dumps(_doc(salt=_b64(bytes(16)))), "salt must be exactly 32 bytes"),
    (json.dumps(_doc(salt="%%%")), "the salt is not valid base64"),
    (json.dumps(_doc(current_epoch=4)), "current_epoch 4 has no secret"),
    (json.dumps(_doc(current_epoch="3")), "current_epoch must be an integer"),
    (json.dumps(_doc(epochs={"3": _b64(SECRET), "2": "!!" + _b64(SECRET)})), "epoch 2 is not valid base64"),
    (json.dumps(_doc(epochs={"3": _b64(SECRET[:16])})), "epoch 3 must be at least 32 bytes"),
    (json.dumps(_doc(epochs={"3": _b64(SECRET), "1": _b64(SECRET)})), "only the previous epoch 2"),
    (json.dumps(_doc(epochs={"three": _b64(SECRET)})), "decimal"),
    (json.dumps(_doc(epochs={})), "holds 0"),
    (
        json.dumps(_doc(epochs={"3": _b64(SECRET), "2": _b64(SECRET), "1": _b64(SECRET)})),
        "at most the previous one; it holds 3",
    ),
    ('{"epochs": {"3": "a", "3": "b"}}', "appears twice"),
]


@pytest.mark.parametrize(("text", "message"), BAD_DOCUMENTS)
def test_bad_keyrings_are_refused_without_quoting_secrets(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "keyring.json"
    path.write_text(text)
    with pytest.raises(KeyringError, match=message) as from_file:
        load_keyring(path)
    with pytest.raises(KeyringError, match=message) as from_env:
        load_keyring(environ={ENV_KEYRING: text})
    assert str(path) in str(from_file.value)
    assert ENV_KEYRING in str(from_env.value)
    for exc in (from_file.value, from_env.value):
        assert "expected a JSON object" in str(exc)
        for secret in (SECRET, SECRET[:16]):
            assert _b64(secret) not in str(exc)
            assert secret.hex() not in str(exc)
        assert exc.__cause__ is None
        assert exc.__suppress_context__


def test_keyring_repr_is_redacted() -> None:
    ring = load_keyring(environ={ENV_KEYRING: json.dumps(_doc())})
    for text in (repr(ring), str(ring), f"{ring!r}"):
        assert "prov-demo" in text
        assert "redacted" in text
        for raw in (SECRET, SALT, bytes(range(1, 33))):
            assert _b64(raw) not in text
            assert raw.hex() not in text
            assert repr(raw)[2:20] not in text


def test_keyring_is_immutable() -> None:
    epochs = {3: SECRET}
    ring = FederationKeyring(federation_id="f", salt=SALT, current_epoch=3, epochs=epochs)
    epochs[3] = bytes(32)
    assert ring.epochs[3] == SECRET
    with pytest.raises(TypeError):
        ring.epochs[3] = bytes(32)  # type: ignore[index]


def test_unknown_epoch_is_refused() -> None:
    ring = load_keyring(environ={ENV_KEYRING: json.dumps(_doc())})
    for epoch in (1, 4, 0):
        with pytest.raises(UnknownKeyEpoch, match=f"key epoch {epoch} is not held"):
            ring.tokenizer(epoch=epoch, suite=Suite.HMAC_SHA256, entity_kind="person", query_id="q")
    with pytest.raises(UnknownKeyEpoch):
        ring.tokenizer(epoch=True, suite=Suite.HMAC_SHA256, entity_kind="person", query_id="q")


def test_generated_keyring_is_fresh_and_loadable() -> None:
    a, b = generate_keyring("prov-demo"), generate_keyring("prov-demo")
    ring = load_keyring(environ={ENV_KEYRING: json.dumps(a)})
    assert ring.current_epoch == 1
    assert list(ring.epochs) == [1]
    assert a["salt"] != b["salt"]
    assert a["epochs"] != b["epochs"]
    assert len(ring.salt) == 32 and len(ring.epochs[1]) == 32
    assert generate_keyring("f", epoch=0)["current_epoch"] == 0
    with pytest.raises(KeyringError):
        generate_keyring("")


def test_rotation_keeps_the_previous_epoch_and_revokes_older() -> None:
    def ring(doc: dict[str, object]) -> FederationKeyring:
        return load_keyring(environ={ENV_KEYRING: json.dumps(doc)})

    def token(r: FederationKeyring, epoch: int) -> bytes:
        return r.tokenizer(epoch=epoch, suite=Suite.HMAC_SHA256, entity_kind="person", query_id="q").token(
            "A"
        )

    doc1 = generate_keyring("prov-demo")
    doc2 = rotate_keyring(doc1)
    doc3 = rotate_keyring(doc2)
    r1, r2, r3 = ring(doc1), ring(doc2), ring(doc3)
    assert (r2.current_epoch, sorted(r2.epochs)) == (2, [1, 2])
    assert (r3.current_epoch, sorted(r3.epochs)) == (3, [2, 3])
    assert r1.salt == r2.salt == r3.salt
    assert r1.federation_id == r3.federation_id
    # The previous epoch still gives the same tokens, so queries signed before the rotation still run.
    assert token(r2, 1) == token(r1, 1)
    assert token(r3, 2) == token(r2, 2)
    assert token(r3, 3) != token(r3, 2)
    with pytest.raises(UnknownKeyEpoch):
        token(r3, 1)
    # Rotation returns a copy; the input document is unchanged.
    epochs1 = doc1["epochs"]
    assert isinstance(epochs1, dict) and list(epochs1) == ["1"]
    with pytest.raises(KeyringError, match="cannot rotate"):
        rotate_keyring({"federation_id": "x"})


def test_keyring_file_is_written_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    path.write_text("{}")
    path.chmod(0o644)
    doc = generate_keyring("prov-demo", epoch=7)
    write_keyring(doc, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keyring(path) == load_keyring(environ={ENV_KEYRING: json.dumps(doc)})
    fresh = tmp_path / "new.json"
    write_keyring(rotate_keyring(doc), fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert load_keyring(fresh).current_epoch == 8
    with pytest.raises(KeyringError, match="refusing to write"):
        write_keyring({"federation_id": "x"}, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keyring.json", "new.json"]


# --- the gateway never holds the federation secret -------------------------------------------------

PROJECT_PACKAGES = ("gateway", "connectors", "aggregation", "privacy", "audit")
SECRET_MODULE = "connectors.federation_keys"
SECRET_API = {
    "load_keyring",
    "FederationKeyring",
    "generate_keyring",
    "rotate_keyring",
    "write_keyring",
    "derive_query_key",
}
SECRET_STRINGS = ("FEDGATE_FEDERATION_KEYRING", "federation_keys")


def _module_file(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _with_parents(name: str) -> Iterator[str]:
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])


def _nodes(tree: ast.AST, *, into_functions: bool) -> Iterator[ast.AST]:
    """Walk an AST; without `into_functions`, only the code that runs when the module is imported."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if into_functions or not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                todo.append(child)


def _imports(
    tree: ast.AST, module: str, is_package: bool, *, into_functions: bool
) -> Iterator[tuple[int, str]]:
    """Yield (line, module) for the modules an AST imports, relative imports resolved.

    A name imported with `from a import b` is yielded as `a.b` too, since it may be a submodule.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in _nodes(tree, into_functions=into_functions):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Name) and node.func.id in {"__import__", "import_module"})
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
        ):
            yield node.lineno, node.args[0].value


def _reads_keyring_variable(node: ast.AST) -> bool:
    def names_variable(arg: ast.AST) -> bool:
        return (
            isinstance(arg, ast.Constant)
            and isinstance(arg.value, str)
            and "FEDGATE_FEDERATION_KEYRING" in arg.value
        )

    if isinstance(node, ast.Subscript):
        return names_variable(node.slice)
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        return name in {"getenv", "get", "pop", "setdefault", "getenvb"} and names_variable(node.args[0])
    return False


def scan_gateway(root: Path) -> list[str]:
    """Return every way the gateway package under `root` could reach the federation secret.

    Modules under gateway/ must not import the keyring module (anywhere, even inside a function), name its
    API, or mention the keyring variables. No project module that a gateway module imports may load the
    keyring module when it is imported, directly or through its own imports, nor read the keyring
    variables.
    """
    findings: list[str] = []
    todo = deque(_module_name(root, p) for p in sorted((root / "gateway").rglob("*.py")))
    # Breadth first, so each finding outside gateway/ names the shortest import chain that reaches it.
    parent: dict[str, str | None] = dict.fromkeys(todo)
    while todo:
        module = todo.popleft()
        path = _module_file(root, module)
        if path is None:
            continue
        in_gateway = module.split(".")[0] == "gateway"
        chain = [module]
        while (up := parent[chain[-1]]) is not None:
            chain.append(up)
        where = path.relative_to(root)
        via = "" if in_gateway else f" (reached by {' -> '.join(reversed(chain))})"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        # Every import written in gateway/ counts, even one deferred into a function; elsewhere only the
        # imports that run when the module is loaded, so a connector command that the shared CLI defers
        # does not count, while any module that loads the keyring when imported does.
        imports = _imports(tree, module, path.name == "__init__.py", into_functions=in_gateway)
        for line, imported in imports:
            if imported == SECRET_MODULE or imported.startswith(SECRET_MODULE + "."):
                findings.append(f"{where}:{line}: imports {SECRET_MODULE}{via}")
            for name in _with_parents(imported):
                known = name in parent or _module_file(root, name) is None
                if name.split(".")[0] in PROJECT_PACKAGES and not known:
                    parent[name] = module
                    todo.append(name)
        for node in ast.walk(tree):
            line = getattr(node, "lineno", 0)
            if _reads_keyring_variable(node):
                findings.append(f"{where}:{line}: reads a federation keyring variable{via}")
            if not in_gateway:
                continue
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                # A docstring may explain the rule; any other string naming the module could import it.
                strings = SECRET_STRINGS[:1] if id(node) in docstrings else SECRET_STRINGS
                hits = [s for s in strings if s in node.value]
                if hits:
                    findings.append(f"{where}:{line}: mentions {hits[0]}")
            name = (
                node.id
                if isinstance(node, ast.Name)
                else node.attr
                if isinstance(node, ast.Attribute)
                else node.name
                if isinstance(node, ast.alias)
                else ""
            )
            if name.rpartition(".")[2] in SECRET_API:
                findings.append(f"{where}:{line}: uses {name}")
    return sorted(set(findings))


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_gateway_source_cannot_reach_the_federation_secret() -> None:
    assert (ROOT / "gateway" / "__init__.py").is_file()
    findings = scan_gateway(ROOT)
    assert not findings, "the gateway can reach the federation secret:\n" + "\n".join(findings)


def test_the_gateway_scan_flags_every_way_in(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "gateway/__init__.py": "",
            "gateway/clean.py": '"""Never imports federation_keys."""\nfrom connectors import tokens\n',
            "gateway/dynamic_name.py": "MODULE = 'connectors.' + 'federation_keys'\n",
            "gateway/direct.py": "import connectors.federation_keys\n",
            "gateway/from_package.py": "from connectors import federation_keys\n",
            "gateway/from_module.py": "from connectors.federation_keys import load_keyring as lk\n",
            "gateway/sub/__init__.py": "",
            "gateway/sub/relative.py": "from ...connectors import federation_keys\n",
            "gateway/dynamic.py": "import importlib\nimportlib.import_module('connectors.federation_keys')\n",
            "gateway/env.py": "import os\nx = os.environ['FEDGATE_FEDERATION_KEYRING_FILE']\n",
            "gateway/named.py": "import connectors\nring = connectors.load_keyring()\n",
            "gateway/indirect.py": "from aggregation import helper\n",
            "aggregation/__init__.py": "",
            "aggregation/helper.py": "from connectors.federation_keys import FederationKeyring\n",
            "privacy/__init__.py": "",
            "privacy/env.py": "import os\nx = os.getenv('FEDGATE_FEDERATION_KEYRING')\n",
            "gateway/via_privacy.py": "import privacy.env\n",
            "gateway/lazy.py": "def f():\n    from connectors.federation_keys import FederationKeyring\n",
            "gateway/lazy_service.py": "def f():\n    import connectors.service\n",
            "connectors/service.py": '"""Serves."""\nfrom . import federation_keys\n',
            "gateway/shared_cli.py": "from connectors import cli\n",
            "connectors/cli.py": "def serve():\n    from connectors import federation_keys\n",
            "connectors/__init__.py": "",
            "connectors/tokens.py": "def derive_query_key(): ...\n",
            "connectors/federation_keys.py": "def load_keyring(): ...\n",
        },
    )
    findings = "\n".join(scan_gateway(tmp_path))
    for offender in [
        "gateway/direct.py:1: imports",
        "gateway/from_package.py:1: imports",
        "gateway/from_module.py:1: imports",
        "gateway/from_module.py:1: uses load_keyring",
        "gateway/sub/relative.py:1: imports",
        "gateway/dynamic.py:2: imports",
        "gateway/dynamic_name.py:1: mentions federation_keys",
        "gateway/env.py:2: reads a federation keyring variable",
        "gateway/env.py:2: mentions FEDGATE_FEDERATION_KEYRING",
        "gateway/named.py:2: uses load_keyring",
        "gateway/lazy.py:2: imports connectors.federation_keys",
        "connectors/service.py:2: imports connectors.federation_keys (reached by gateway.lazy_service",
        "aggregation/helper.py:1: imports connectors.federation_keys (reached by gateway.indirect",
        "privacy/env.py:2: reads a federation keyring variable (reached by gateway.via_privacy -> privacy",
    ]:
        assert offender in findings
    assert "clean.py" not in findings
    # A deferred import outside gateway/ runs only when that function is called (a connector command).
    assert "connectors/cli.py" not in findings
    assert "connectors/tokens.py" not in findings


_IMPORT_ALL = """
import importlib, pkgutil, sys
root = sys.argv[1]
sys.path.insert(0, root)
import gateway
assert gateway.__file__.startswith(root), gateway.__file__
names = ["gateway"]
for info in pkgutil.walk_packages(gateway.__path__, "gateway."):
    # __main__ runs a command line when imported.
    if info.name.rpartition(".")[2] != "__main__":
        importlib.import_module(info.name)
        names.append(info.name)
print(len(names))
loaded = sorted(n for n in sys.modules if n == "{secret}" or n.startswith("{secret}."))
if loaded:
    sys.exit("imported " + ", ".join(loaded))
""".replace("{secret}", SECRET_MODULE)


def _import_gateway(root: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDGATE_")}
    return subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, str(root)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=120,
        check=False,
    )


def test_importing_every_gateway_module_leaves_the_keyring_unloaded() -> None:
    done = _import_gateway(ROOT)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) >= 1


def test_the_import_check_fails_when_the_gateway_loads_the_keyring(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "gateway/__init__.py": "",
            "gateway/deep/__init__.py": "",
            "gateway/deep/late.py": "import connectors.federation_keys\n",
            "connectors/__init__.py": "",
            "connectors/federation_keys.py": "",
        },
    )
    done = _import_gateway(tmp_path)
    assert done.returncode != 0
    assert f"imported {SECRET_MODULE}" in done.stderr
