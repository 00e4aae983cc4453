"""The server's settings (moleseg.core.settings): defaults, the TOML file, the environment, and one message per
problem."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from moleseg.core import config
from moleseg.core.settings import LOOPBACK_HOSTS, ServerSettings, SettingsError, load_settings, read_settings


def test_personal_mode_is_the_default_loopback_only_in_the_users_data_folder(tmp_path):
    settings = read_settings({"XDG_DATA_HOME": str(tmp_path)})
    assert settings == ServerSettings(mode="personal", address="127.0.0.1", port=8501, data_roots=(),
                                      data_dir=tmp_path / "moleseg", allowed_hosts=("localhost", "127.0.0.1", "::1"),
                                      identity="none", user_headers=("X-Forwarded-User", "X-Forwarded-Email"),
                                      trusted_proxies=(), admin_users=frozenset())
    assert not settings.shared


def test_a_shared_deployment_from_a_toml_file_with_the_environment_winning(tmp_path):
    roots = [tmp_path / "derm", tmp_path / "cells"]
    for root in roots:
        root.mkdir()
    (tmp_path / "link").symlink_to(roots[1])
    file = tmp_path / "moleseg.toml"
    file.write_text(f'mode = "shared"\nport = 8600\ndata_roots = ["{roots[0]}", "{tmp_path / "link"}"]\n'
                    f'data_dir = "/srv/moleseg"\nallowed_hosts = ["Moles.Clinic.example."]\n'
                    'identity = "proxy-header"\ntrusted_proxies = ["10.0.0.0/24", "127.0.0.1"]\n'
                    'admin_users = ["dr.who@clinic.example"]\nproxy_secret = "a-long-random-secret"\n')
    settings = read_settings({"MOLESEG_CONFIG": str(file), "MOLESEG_PORT": "9000",
                              "MOLESEG_USER_HEADERS": "X-Forwarded-Email"})
    assert settings.mode == "shared" and settings.shared
    assert settings.address == "0.0.0.0" and settings.port == 9000
    assert settings.data_roots == (roots[0], roots[1])  # the link resolved
    assert settings.data_dir == Path("/srv/moleseg")
    assert settings.allowed_hosts == (*LOOPBACK_HOSTS, "moles.clinic.example")
    assert settings.identity == "proxy-header" and settings.user_headers == ("X-Forwarded-Email",)
    assert settings.trusted_proxies == (ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("127.0.0.1/32"))
    assert settings.admin_users == frozenset({"dr.who@clinic.example"})
    assert settings.proxy_secret == "a-long-random-secret" and "a-long-random-secret" not in repr(settings)
    assert settings.proxy_secret_header == "X-Moleseg-Proxy-Secret"
    assert settings.proxy_trusted("10.0.0.7") and settings.proxy_trusted("127.0.0.1")
    assert not settings.proxy_trusted("10.0.1.7") and not settings.proxy_trusted(None)
    assert not settings.proxy_trusted("not an address")
    assert settings.streamlit_flags() == [
        "--server.address=0.0.0.0", "--server.port=9000", "--server.allowedHosts=localhost",
        "--server.allowedHosts=127.0.0.1", "--server.allowedHosts=::1",
        "--server.allowedHosts=moles.clinic.example", "--server.enableXsrfProtection=true",
        "--server.enableCORS=true"]


def test_data_roots_from_the_environment_are_separated_by_the_path_separator(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    settings = read_settings({"MOLESEG_DATA_ROOTS": f"{tmp_path / 'a'}:{tmp_path / 'b'}:"})
    assert settings.data_roots == (tmp_path / "a", tmp_path / "b")


@pytest.mark.parametrize(("host", "allowed"), [
    ("localhost", True), ("localhost:8501", True), ("127.0.0.1:8501", True), pytest.param("[::1]:8501", True, id="ipv6-loopback-port"),
    ("LOCALHOST.", True), ("rebind.attacker.example:8501", False), ("localhost.attacker.example", False),
    ("localhost:notaport", False), ("user@localhost", False), ("localhost/path", False), ("", False), (None, False),
])
def test_only_loopback_hosts_are_allowed_in_personal_mode(host, allowed):
    assert read_settings({}).host_allowed(host) is allowed


def test_shared_mode_refuses_to_start_without_an_identity_source_or_a_host_name():
    with pytest.raises(SettingsError) as refused:
        read_settings({"MOLESEG_MODE": "shared"})
    assert refused.value.problems == [
        "shared mode needs allowed_hosts: the host names users type in their browser to reach the proxy.",
        "shared mode refuses to start without an identity source: set identity to proxy-header or streamlit-oidc.",
    ]
    assert str(refused.value).startswith("moleseg settings (the environment): shared mode needs allowed_hosts")


def test_in_shared_mode_no_data_root_reaches_the_users_spaces(tmp_path):
    (tmp_path / "data" / "users").mkdir(parents=True)
    (tmp_path / "datasets").mkdir()
    shared = {"MOLESEG_MODE": "shared", "MOLESEG_ALLOWED_HOSTS": "moles.example", "MOLESEG_IDENTITY": "streamlit-oidc",
              "MOLESEG_DATA_DIR": str(tmp_path / "data")}
    roots = [tmp_path, tmp_path / "data" / "users", tmp_path / "datasets"]
    with pytest.raises(SettingsError) as refused:
        read_settings({**shared, "MOLESEG_DATA_ROOTS": ":".join(map(str, roots))})
    assert refused.value.problems == [
        f"in shared mode data_roots must not hold the app's data folder or lie inside it, not {root}: every user "
        "would read the others' runs and datasets." for root in (tmp_path, tmp_path / "data" / "users")]
    assert read_settings({**shared, "MOLESEG_DATA_ROOTS": str(tmp_path / "datasets")}).data_roots == (
        tmp_path / "datasets",)
    assert read_settings({"MOLESEG_DATA_DIR": str(tmp_path / "data"),
                          "MOLESEG_DATA_ROOTS": str(tmp_path)}).data_roots == (tmp_path,)  # personal: one user


def test_in_shared_mode_no_data_root_reaches_the_records_pictures(tmp_path):
    # records_files_dir outside data_dir (the replicas' shared volume): a data root holding it offered every
    # user's saved visits (files/<uid>/image.png and mask.png, two levels down: in the folder pickers)
    (tmp_path / "mnt" / "moleseg-records").mkdir(parents=True)
    shared = {"MOLESEG_MODE": "shared", "MOLESEG_ALLOWED_HOSTS": "moles.example", "MOLESEG_IDENTITY": "streamlit-oidc",
              "MOLESEG_DATA_DIR": str(tmp_path / "data"),
              "MOLESEG_RECORDS_FILES_DIR": str(tmp_path / "mnt" / "moleseg-records")}
    with pytest.raises(SettingsError) as refused:
        read_settings({**shared, "MOLESEG_DATA_ROOTS": str(tmp_path / "mnt")})
    assert refused.value.problems == [
        f"in shared mode data_roots must not hold records_files_dir or lie inside it, not {tmp_path / 'mnt'}: "
        "every user would read the others' saved visits."]
    (tmp_path / "mnt" / "datasets").mkdir()
    assert read_settings({**shared, "MOLESEG_DATA_ROOTS": str(tmp_path / "mnt" / "datasets")}).data_roots == (
        tmp_path / "mnt" / "datasets",)


def test_in_shared_mode_no_data_root_reaches_the_session_folders_or_the_caches(tmp_path):
    # the browser sessions' folders (uploads, datasets unpacked from ZIPs) and the caches (training examples,
    # converted models) are every user's: a data root holding them offered them in the folder pickers
    for folder in ("srv/sessions", "srv/cache", "srv/images", "tmp/images"):
        (tmp_path / folder).mkdir(parents=True)
    shared = {"MOLESEG_MODE": "shared", "MOLESEG_ALLOWED_HOSTS": "moles.example", "MOLESEG_IDENTITY": "streamlit-oidc",
              "MOLESEG_DATA_DIR": str(tmp_path / "data"), "MOLESEG_TMPDIR": str(tmp_path / "srv" / "sessions"),
              "MOLESEG_CACHE": str(tmp_path / "srv" / "cache")}
    with pytest.raises(SettingsError) as refused:
        read_settings({**shared, "MOLESEG_DATA_ROOTS": str(tmp_path / "srv")})
    assert refused.value.problems == [
        f"in shared mode data_roots must not hold the session folders (MOLESEG_TMPDIR), not {tmp_path / 'srv'}: "
        "every user would read the others' uploads and unpacked datasets.",
        f"in shared mode data_roots must not hold the caches (MOLESEG_CACHE) or lie inside it, not "
        f"{tmp_path / 'srv'}: every user would read the others' cached training examples and converted models."]
    with pytest.raises(SettingsError) as refused:  # a root inside the caches
        read_settings({**shared, "MOLESEG_DATA_ROOTS": str(tmp_path / "srv" / "cache")})
    assert len(refused.value.problems) == 1 and "MOLESEG_CACHE" in refused.value.problems[0]
    # beside them, or inside the temporary folder next to the session folders (the system's /tmp), a root passes
    for beside in ("srv/images", "tmp/images"):
        environ = {**shared, "MOLESEG_TMPDIR": str(tmp_path / "tmp"), "MOLESEG_DATA_ROOTS": str(tmp_path / beside)}
        assert read_settings(environ).data_roots == (tmp_path / beside,)


def test_the_proxy_header_is_believed_only_from_configured_proxies():
    with pytest.raises(SettingsError) as refused:
        read_settings({"MOLESEG_MODE": "shared", "MOLESEG_ALLOWED_HOSTS": "moles.example",
                       "MOLESEG_IDENTITY": "proxy-header", "MOLESEG_TRUSTED_PROXIES": "10.0.0.300"})
    assert refused.value.problems == [
        "trusted_proxies holds IP addresses or networks (CIDR), not '10.0.0.300'.",
        "identity proxy-header needs proxy_secret: a random value of at least 16 characters that the reverse "
        "proxy adds in proxy_secret_header (anyone on this machine can reach the app's port without the proxy).",
    ]
    with pytest.raises(SettingsError) as refused:
        read_settings({"MOLESEG_IDENTITY": "proxy-header", "MOLESEG_USER_HEADERS": " , "})
    assert refused.value.problems == [
        "identity proxy-header needs at least one of user_headers.",
        "identity proxy-header needs trusted_proxies: the addresses of the reverse proxy, the only peers whose "
        "user header is believed.",
        "identity proxy-header needs proxy_secret: a random value of at least 16 characters that the reverse "
        "proxy adds in proxy_secret_header (anyone on this machine can reach the app's port without the proxy).",
    ]


def test_each_bad_value_gets_one_sentence(tmp_path):
    with pytest.raises(SettingsError) as refused:
        read_settings({"MOLESEG_MODE": "public", "MOLESEG_ADDRESS": "0.0.0.0", "MOLESEG_PORT": "70000",
                       "MOLESEG_DATA_ROOTS": f"~/data:{tmp_path / 'missing'}", "MOLESEG_DATA_DIR": "data",
                       "MOLESEG_ALLOWED_HOSTS": "http://x.example", "MOLESEG_IDENTITY": "ldap"})
    assert refused.value.problems == [
        "mode must be one of personal, shared, not 'public'.",
        "personal mode listens on loopback only: address 0.0.0.0 needs mode = shared.",
        "port must be 1..65535, not 70000.",
        "data_roots must be an absolute path, not '~/data' (nothing like ~ or $HOME is expanded).",
        f"data_roots {tmp_path / 'missing'} is not an existing folder.",
        "data_dir must be an absolute path, not 'data' (nothing like ~ or $HOME is expanded).",
        "allowed_hosts holds host names without a port or a scheme, not 'http://x.example'.",
        "identity must be one of none, proxy-header, streamlit-oidc, not 'ldap'.",
    ]


def test_a_settings_file_with_unknown_keys_or_wrong_types_is_refused_naming_it(tmp_path):
    file = tmp_path / "moleseg.toml"
    file.write_text('mode = "personal"\nroots = ["/data"]\nport = "8501"\nadmin_users = "me"\n')
    with pytest.raises(SettingsError) as refused:
        read_settings({"MOLESEG_CONFIG": str(file)})
    assert refused.value.problems == [
        f"{file} has unknown key roots; the keys are mode, address, port, data_roots, data_dir, allowed_hosts, "
        "identity, user_headers, trusted_proxies, admin_users, proxy_secret, proxy_secret_header, database_url, "
        "records_files_dir, user_quota_gb.",
        f"port must be a whole number in {file}.",
        f"admin_users must be a list of strings in {file}.",
    ]
    file.write_text("mode = \n")
    with pytest.raises(SettingsError, match=f"{file} is not valid TOML"):
        read_settings({"MOLESEG_CONFIG": str(file)})
    with pytest.raises(SettingsError, match=f"cannot read {tmp_path / 'absent.toml'}: No such file or directory"):
        read_settings({"MOLESEG_CONFIG": str(tmp_path / "absent.toml")})
    file.write_bytes(b"mode = 'shared'\n# caf\xe9\n")  # Latin-1: tomllib raised UnicodeDecodeError, no file named
    with pytest.raises(SettingsError) as refused:
        read_settings({"MOLESEG_CONFIG": str(file)})
    assert refused.value.problems == [f"{file} is not valid TOML: not UTF-8 text (byte 0xe9 at position 21)."]


def test_the_user_quota_is_off_in_personal_mode_on_in_shared_mode_and_checked(tmp_path):
    """Before, no setting bounded what one user of a shared server could write."""
    from moleseg.core.settings import DEFAULT_USER_QUOTA_GB

    shared = {"MOLESEG_MODE": "shared", "MOLESEG_ALLOWED_HOSTS": "moles.example", "MOLESEG_IDENTITY": "streamlit-oidc"}
    assert read_settings({}).user_quota_gb == DEFAULT_USER_QUOTA_GB["personal"] == 0
    assert read_settings(shared).user_quota_gb == DEFAULT_USER_QUOTA_GB["shared"] == 20
    assert read_settings({**shared, "MOLESEG_USER_QUOTA_GB": "2.5"}).user_quota_gb == 2.5
    file = tmp_path / "moleseg.toml"
    file.write_text("user_quota_gb = 0\n")
    assert read_settings({**shared, "MOLESEG_CONFIG": str(file)}).user_quota_gb == 0
    for text, problem in [("-1", "-1"), ("lots", "lots"), ("nan", "nan")]:
        with pytest.raises(SettingsError) as refused:
            read_settings({"MOLESEG_USER_QUOTA_GB": text})
        assert refused.value.problems == [f"user_quota_gb must be a number of GB, 0 or more (0: no quota), not "
                                          f"'{problem}'."]
    file.write_text('user_quota_gb = "5"\n')
    with pytest.raises(SettingsError) as refused:
        read_settings({"MOLESEG_CONFIG": str(file)})
    assert refused.value.problems == [f"user_quota_gb must be a number in {file}."]


def test_the_data_folders_default_to_the_settings_data_dir_never_the_program_folder(monkeypatch, tmp_path):
    for name in ("MOLESEG_DATA_DIR", "MOLESEG_RUNS_DIR", "MOLESEG_CORRECTIONS_DIR", "MOLESEG_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    load_settings.cache_clear()
    try:
        assert config.data_dir() == tmp_path / "xdg" / "moleseg"
        assert config.runs_dir() == tmp_path / "xdg" / "moleseg" / "runs"
        assert config.corrections_dir() == tmp_path / "xdg" / "moleseg" / "corrections"
        monkeypatch.setenv("MOLESEG_DATA_DIR", str(tmp_path / "app"))
        assert config.runs_dir() == tmp_path / "app" / "runs"
        assert config.corrections_dir() == tmp_path / "app" / "corrections"
    finally:
        monkeypatch.undo()
        load_settings.cache_clear()


def test_the_readme_security_section_documents_every_key_the_modes_and_a_worked_example():
    import tomllib

    from moleseg.core.settings import IDENTITY_SOURCES, KEYS, MODES

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Security\n", 1)[1].split("\n## ", 1)[0]
    for needed in [*(f"| `{key}` |" for key in KEYS), *MODES, *IDENTITY_SOURCES, "MOLESEG_CONFIG", "Caddy",
                   "trusted", "not inside the data folders this server offers"]:
        assert needed in section, needed
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    assert sorted(tomllib.loads(example)) == sorted(KEYS)  # the worked example sets every key
    assert "make run" in readme.split("\n## ", 1)[0] and "make test" in readme.split("\n## ", 1)[0]
