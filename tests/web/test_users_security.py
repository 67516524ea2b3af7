"""Found in a security review of the accounts and the server (person.web.accounts, person.web.server, person.files):
- a removed account added again must not bring back the sessions signed for the old one (its role may differ);
- with --workers the parent process, which only supervises, must not hold the gallery's startup generation;
- a server bound to loopback behind a proxy (--forwarded-allow-ips, or an --allowed-host of another machine) is
  beyond this machine: with no account it is refused, and it is never open to everyone without one;
- the users file's temp is 0600 from the moment it exists, not after a chmod."""
import gc
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from person import files
from person.cli import serve as serve_cmd
from person.errors import PersonError
from person.gallery import store
from person.gallery.manifest import MANIFEST
from person.gallery.search_options import SearcherOptions
from person.web import accounts as accounts_module
from person.web import server
from person.web.accounts import USERS_FILE, Accounts
from person.web.app import create_app
from person.web.sessions import SESSION_COOKIE
from tests.web.test_app import append_rows
from tests.web.test_auth import PASSWORD, STATIC, enrolled, gallery, sign_in  # noqa: F401 (fixtures)


@pytest.fixture
def bare(tmp_path):
    """A folder that passes for a gallery to the accounts (its manifest file), and an app over it that opens nothing
    until a search: enough for sign-in and /api/me."""
    (tmp_path / MANIFEST).write_text("{}")
    return tmp_path, create_app(SimpleNamespace(folder=tmp_path), STATIC)


# ---------------------------------------------------------------- 1. a name added again is a new account

def test_a_removed_user_added_again_as_admin_does_not_revive_the_old_viewer_cookie(bare):
    folder, app = bare
    accounts = Accounts(folder)
    accounts.add_user("root", PASSWORD, "admin")  # so that the gallery has accounts throughout
    accounts.add_user("bob", PASSWORD, "viewer")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert sign_in(client, "bob").status_code == 303
        old = client.cookies[SESSION_COOKIE]
        assert client.get("/api/me").json()["role"] == "viewer"
        accounts.remove_user("bob")
        accounts.add_user("bob", "another long password", "admin")
        client.cookies.clear()
        client.cookies.set(SESSION_COOKIE, old)
        r = client.get("/api/me")
        assert r.status_code == 401, r.text  # not bob the admin
        assert sign_in(client, "bob", "another long password").status_code == 303  # the new bob signs in
        assert client.get("/api/me").json()["role"] == "admin"


def test_a_new_account_s_generation_is_not_one_an_earlier_account_had():
    seen = {accounts_module.new_generation() for _ in range(1000)}
    assert len(seen) == 1000 and all(isinstance(g, int) and 1 <= g <= 2 ** 62 for g in seen)


# ---------------------------------------------------------------- 2. the supervising parent lets go of the gallery

def test_with_workers_the_parent_releases_the_gallery_before_uvicorn_supervises(gallery, plain_export,
                                                                               monkeypatch):
    monkeypatch.delenv(server.CONFIG_VARIABLE, raising=False)  # restored after the test
    startup = store.Gallery.open(gallery)
    generation, dim = startup.generation, startup.manifest.dim
    startup.close()
    held = []

    def run(app, **kw):  # what uvicorn would do: supervise worker processes; here, a write and a purge meanwhile
        assert app == server.WORKER_APP and kw["workers"] == 2
        assert kw["timeout_worker_healthcheck"] == server.WORKER_HEALTHCHECK_S > 5  # not uvicorn's 5 s
        append_rows(gallery, ["new.jpg"], np.eye(1, dim, dtype=np.float32))
        gc.collect()  # the test's own short-lived readers: only what serve() still holds counts
        held.append(store.purge(gallery))

    monkeypatch.setattr(server.uvicorn, "run", run)
    serve_cmd.main(["--gallery", str(gallery), "--text-model", str(plain_export), "--workers", "2"])
    assert held == [[]], f"the parent still holds generation {generation}'s lease"
    assert store.Gallery.open(gallery).generation > generation


# ---------------------------------------------------------------- 3. behind a proxy is beyond this machine

@pytest.mark.parametrize("argv,why", [
    (["--forwarded-allow-ips", "127.0.0.1"], "--forwarded-allow-ips 127.0.0.1 says it is behind a proxy"),
    (["--allowed-host", "localhost", "--allowed-host", "search.example.com"],
     "--allowed-host search.example.com is a name beyond this machine"),
])
def test_loopback_behind_a_proxy_with_no_account_is_refused(gallery, plain_export, monkeypatch, argv, why):
    calls = []
    monkeypatch.setattr(server.uvicorn, "run", lambda app, **kw: calls.append(kw))
    with pytest.raises(PersonError) as refused:
        serve_cmd.main(["--gallery", str(gallery), "--text-model", str(plain_export), "--host", "127.0.0.1", *argv])
    message = str(refused.value)
    assert why in message and "behind a proxy" in message and "Add an account first" in message
    assert f"search/users.py --gallery {gallery} add NAME --role admin" in message and calls == []
    serve_cmd.main(["--gallery", str(gallery), "--text-model", str(plain_export), *argv, "--insecure-no-auth"])
    # this machine's own names only, and no proxy: still served open, as before
    serve_cmd.main(["--gallery", str(gallery), "--text-model", str(plain_export), "--allowed-host", "localhost",
                    "--allowed-host", "[::1]"])
    assert len(calls) == 2


def test_the_refusal_decides_from_every_setting_and_only_from_them():
    assert server.local_only("127.0.0.1") and server.local_only("::1", ["localhost", "127.0.0.1", "LocalHost"])
    assert not server.local_only("0.0.0.0")
    assert not server.local_only("127.0.0.1", forwarded_allow_ips="127.0.0.1")
    assert not server.local_only("localhost", forwarded_allow_ips="")  # given, even empty: uvicorn's proxy headers
    assert not server.local_only("127.0.0.1", ["localhost", "search.example.com"])


@pytest.mark.parametrize("settings,host_header", [
    ({"forwarded_allow_ips": "127.0.0.1"}, "127.0.0.1"),
    ({"allowed_hosts": ["search.example.com"]}, "search.example.com"),
])
def test_loopback_behind_a_proxy_is_not_open_once_its_last_account_is_removed(gallery, plain_export, tmp_path,
                                                                             settings, host_header):
    options = SearcherOptions(text_model=str(plain_export))
    Accounts(gallery).add_user("ann", PASSWORD)  # so that it starts
    app = server.build_app(gallery, options, host="127.0.0.1", thumb_cache=tmp_path / "t", **settings)
    Accounts(gallery).remove_user("ann")  # while it runs
    with TestClient(app, base_url=f"http://{host_header}") as client:
        r = client.get("/api/search", params={"q": "a person"})
        assert r.status_code == 401 and "search/users.py --gallery GALLERY add NAME" in r.json()["error"]
    plain = server.build_app(gallery, options, host="127.0.0.1", thumb_cache=tmp_path / "t")
    with TestClient(plain, base_url="http://127.0.0.1") as client:  # no proxy: open to this machine, as before
        assert client.get("/api/search", params={"q": "a person"}).status_code == 200


# ---------------------------------------------------------------- 4. the users file's temp is 0600 from the start

def test_the_users_file_temp_is_created_0600_not_chmodded_after(tmp_path, monkeypatch):
    (tmp_path / MANIFEST).write_text("{}")
    renamed, replace = [], os.replace

    def inspecting(src, dst, *args, **kwargs):
        renamed.append((Path(dst).name, stat.S_IMODE(os.stat(src).st_mode)))
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", inspecting)
    monkeypatch.setattr(accounts_module.os, "fchmod", lambda fd, mode: None)  # what creation alone gives it
    umask = os.umask(0)  # the widest a process may run with
    try:
        Accounts(tmp_path).add_user("ann", PASSWORD)
        Accounts(tmp_path).new_token("ann")
    finally:
        os.umask(umask)
    assert [name for name, _ in renamed] == [USERS_FILE, USERS_FILE]
    assert all(mode == 0o600 for _, mode in renamed), renamed
    assert stat.S_IMODE(os.stat(tmp_path / USERS_FILE).st_mode) == 0o600


def test_atomic_file_takes_permissions_and_keeps_its_default_for_other_files(tmp_path, monkeypatch):
    modes, replace = {}, os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (modes.__setitem__(Path(dst).name,
                                                                           stat.S_IMODE(os.stat(src).st_mode)),
                                                         replace(src, dst)))
    umask = os.umask(0o022)
    try:
        with files.atomic_file(tmp_path / "secret", "w", encoding="utf-8", permissions=0o600) as f:
            f.write("hush")
        files.write_text(tmp_path / "plain", "hello")
        files.temp_name(tmp_path / "secret").write_text("left by an earlier attempt")  # O_EXCL still succeeds
        with files.atomic_file(tmp_path / "secret", permissions=0o600) as f:
            f.write(b"again")
    finally:
        os.umask(umask)
    assert modes == {"secret": 0o600, "plain": 0o644}
    assert (tmp_path / "secret").read_bytes() == b"again" and (tmp_path / "plain").read_text() == "hello"
    assert not list(tmp_path.glob(".*.tmp"))
