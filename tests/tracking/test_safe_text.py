"""URIs lose their credentials and nothing else; printed commands paste as the arguments they name."""

from __future__ import annotations

import logging
import shlex
import string
import subprocess

from hypothesis import given, settings
from hypothesis import strategies as st

from tracking.background import settle
from tracking.safe_text import redact, redact_file, redact_log_records, redact_tree, shell_command
from tracking.store import TrackingConfig

SECRET_CHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:%@"  # RFC 3986 userinfo, "@" unencoded too
schemes = st.sampled_from(["http", "https", "postgresql", "mysql+pymysql", "databricks"])
hosts = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5}){0,2}", fullmatch=True)
secrets = st.text(SECRET_CHARS, min_size=1, max_size=30).filter(lambda s: not s.endswith("@"))
texts = st.text(string.ascii_letters + " ,'\"()=", max_size=20)


@settings(max_examples=300, deadline=None)
@given(schemes, st.text(SECRET_CHARS.replace("@", ""), min_size=1, max_size=10), secrets, hosts, texts, texts)
def test_a_uri_keeps_its_scheme_host_and_path_and_loses_its_credentials(scheme, user, password, host, before, after):
    uri = f"{scheme}://{user}:{password}@{host}:5055/api?x=1"
    shown = redact(f"{before} {uri} {after}")
    assert shown == f"{before} {scheme}://***@{host}:5055/api?x=1 {after}"
    assert redact(shown) == shown  # idempotent: a redacted file stays as it is


@given(st.text(max_size=60).filter(lambda s: "://" not in s))
def test_text_without_a_uri_is_unchanged(text):
    assert redact(text) == text


def test_uris_without_credentials_are_unchanged():
    for uri in ("sqlite:///mlflow.db", "http://127.0.0.1:5000", "file:///a/b@c", "http://host/p?user=a@b", "x://"):
        assert redact(uri) == uri


def test_a_uri_escaped_by_hydra_in_a_multirun_loses_its_credentials():
    assert (
        redact(r"tracking.uri=http\://alice\:s3cretPW@127.0.0.1\:9 seed=1")
        == r"tracking.uri=http\://***@127.0.0.1\:9 seed=1"
    )


def test_log_records_created_after_installing_the_factory_are_redacted(caplog):
    before = logging.getLogRecordFactory()
    try:
        redact_log_records()
        redact_log_records()  # once only: not wrapped twice
        with caplog.at_level(logging.INFO):
            logging.getLogger("hydra.test").info("#0 : tracking.uri=%s seed=%d", "http://alice:s3cretPW@h:9", 1)
    finally:
        logging.setLogRecordFactory(before)
    assert [r.getMessage() for r in caplog.records] == ["#0 : tracking.uri=http://***@h:9 seed=1"]


def test_every_string_of_a_nested_config_is_redacted_and_other_values_kept():
    tree = {"tracking": {"uri": "http://alice:pw@h:1", "timeout_s": 5.0}, "tags": ["https://t0k3n@h"], "n": (1, None)}
    assert redact_tree(tree) == {"tracking": {"uri": "http://***@h:1", "timeout_s": 5.0}, "tags": ["https://***@h"],
                                 "n": (1, None)}  # fmt: skip


def test_a_file_is_rewritten_only_when_it_holds_credentials(tmp_path):
    dirty, clean = tmp_path / "overrides.yaml", tmp_path / "config.yaml"
    dirty.write_text("- tracking.uri=http://alice:s3cretPW@127.0.0.1:5055\n")
    clean.write_text("uri: sqlite:///mlflow.db\n")
    before = clean.stat().st_mtime_ns
    for path in (dirty, clean):
        redact_file(path)
    assert dirty.read_text() == "- tracking.uri=http://***@127.0.0.1:5055\n"
    assert clean.stat().st_mtime_ns == before  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "overrides.yaml"]  # no temporary file left


HOSTILE = "run x;touch PWNED;#"


def pasted(command: str, cwd) -> list[str]:
    """The arguments bash gives `command` when pasted, its program replaced by printf."""
    program, _, rest = command.partition(" ")
    assert program == "python"
    done = subprocess.run(["bash", "-c", "printf '%s\\n' " + rest], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def test_a_hostile_folder_is_one_argument_of_the_printed_command(tmp_path):
    folder = tmp_path / HOSTILE
    command = shell_command("python", "-m", "tracking", folder)
    assert shlex.split(command) == ["python", "-m", "tracking", str(folder)]
    assert pasted(command, tmp_path) == ["-m", "tracking", str(folder)] and not (tmp_path / "PWNED").exists()


def test_the_hints_a_detached_helper_prints_paste_as_the_folder_it_names(tmp_path, capsys):
    folder = tmp_path / HOSTILE
    folder.mkdir()
    settle(folder, TrackingConfig(uri="http://alice:s3cretPW@127.0.0.1:9"), None, "ConnectionError: refused", "boom")
    err = capsys.readouterr().err
    commands = [line.rsplit(" with: ", 1)[1] for line in err.splitlines()]
    assert [pasted(c, tmp_path) for c in commands] == [["-m", "sim.plots", str(folder)],
                                                       ["-m", "tracking", str(folder)]]  # fmt: skip
    assert not (tmp_path / "PWNED").exists() and not list(tmp_path.rglob("PWNED"))
    assert "s3cretPW" not in err + "".join(p.read_text() for p in folder.iterdir())
    assert "http://***@127.0.0.1:9" in err
