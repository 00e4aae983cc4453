"""The server's settings, in one place: how the app is deployed, read from the environment and a TOML file.

The server's operator sets them (they are trusted); browser users never can. Each key is a top-level key of
the TOML file named by ``MOLESEG_CONFIG`` and an environment variable ``MOLESEG_<KEY>`` (upper case), which
wins over the file. Lists are TOML arrays in the file; in the environment, ``data_roots`` is separated by
``os.pathsep`` (``:``) and every other list by commas.

``mode``
    ``personal`` (the default): one user on this machine; the server listens on loopback only.
    ``shared``: several users reach the server through a reverse proxy; it needs ``identity`` (not
    ``none``) and at least one of ``allowed_hosts``.
``address``
    Address the server listens on: ``127.0.0.1`` by default in personal mode (which refuses any other than
    a loopback address), ``0.0.0.0`` by default in shared mode.
``port``
    TCP port the server listens on, 1..65535 (default 8501).
``data_roots``
    Absolute paths of the existing server folders whose sub-folders the pages may read (datasets, test
    sets, study files, model files); symlinks are resolved. None by default: the pages then take uploads
    only.
``data_dir``
    Absolute path of the app's own data folder, the only place it writes to (records, runs, "My dataset"):
    by default the user's data folder, ``$XDG_DATA_HOME/moleseg`` (``~/.local/share/moleseg``). In shared
    mode it holds each user's space (:mod:`moleseg.core.userspace`), so no data root may hold it or lie in it.
``allowed_hosts``
    Host names (no port) the browser may use to reach the server, beside the loopback names
    ``localhost``, ``127.0.0.1`` and ``::1`` which are always allowed; a request naming any other host is
    refused (against DNS rebinding). Shared mode needs at least one (the public name of the proxy).
``identity``
    Where the user's name comes from: ``none`` (personal use, the default), ``proxy-header`` (a header set by
    the reverse proxy in front, believed only from ``trusted_proxies``) or ``streamlit-oidc`` (Streamlit's
    ``st.login``, configured in ``.streamlit/secrets.toml``).
``user_headers``
    With ``proxy-header``: the request headers naming the user, the first holding a name wins (default
    ``X-Forwarded-User``, ``X-Forwarded-Email``); each must be one the proxy sets or removes on every
    request, since a header it passes through is the browser's own.
``trusted_proxies``
    With ``proxy-header``: IP addresses or CIDR networks of the reverse proxy; required.
``proxy_secret``
    With ``proxy-header``: a long random value (at least 16 characters) the reverse proxy adds to every
    request in ``proxy_secret_header``; required. The user header is believed only from a trusted proxy
    address *and* with this secret: Streamlit's server reports a loopback peer by the address its
    ``X-Forwarded-For`` names, so the address alone does not prove the proxy (see the README's Security).
``proxy_secret_header``
    With ``proxy-header``: the header carrying ``proxy_secret`` (default ``X-Moleseg-Proxy-Secret``).
``admin_users``
    User names that see every user's records.
``database_url``
    Where the records live: empty (the default) for the SQLite file ``records.sqlite`` in ``data_dir``, or a
    PostgreSQL URL ``postgresql://USER:PASSWORD@HOST:PORT/DATABASE`` shared by several app replicas (see the
    README's deployment). Its password is never shown: messages carry :func:`masked_url`.
``records_files_dir``
    Absolute path of the folder of the records' image and mask files (a volume shared by every replica with
    ``database_url``); default ``files`` in ``data_dir``. In shared mode no data root may hold it or lie in it.
``user_quota_gb``
    Most disk space one user's files may take, in GB (10^9 bytes): their space's runs, studies, "My dataset",
    example cache, the pictures of their saved visits and the datasets unpacked from their uploaded ZIPs. A training or study
    start, a save of either kind and a ZIP unpacked is refused once the user holds that much. 0 turns it off;
    default :data:`DEFAULT_USER_QUOTA_GB` of the mode (off in personal mode).

Examples
--------
>>> settings = read_settings({"MOLESEG_DATA_DIR": "/srv/moleseg"})
>>> settings.mode, settings.address, str(settings.data_dir)
('personal', '127.0.0.1', '/srv/moleseg')
"""

from __future__ import annotations

import functools
import ipaddress
import math
import os
import re
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlsplit

from moleseg.core.words import noun_for

#: Environment variable naming the TOML settings file.
CONFIG_ENV: str = "MOLESEG_CONFIG"
#: Prefix of the environment variable of each key (``MOLESEG_`` + the key in upper case).
ENV_PREFIX: str = "MOLESEG_"
#: The deployment modes.
MODES: tuple[str, ...] = ("personal", "shared")
#: The identity sources.
IDENTITY_SOURCES: tuple[str, ...] = ("none", "proxy-header", "streamlit-oidc")
#: Host names that always reach the server (the machine itself).
LOOPBACK_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
#: Headers naming the user by default with ``identity = "proxy-header"`` (oauth2-proxy, Caddy's forward_auth).
DEFAULT_USER_HEADERS: tuple[str, ...] = ("X-Forwarded-User", "X-Forwarded-Email")
#: Header carrying the proxy's secret by default with ``identity = "proxy-header"``.
DEFAULT_PROXY_SECRET_HEADER: str = "X-Moleseg-Proxy-Secret"
#: Fewest characters of ``proxy_secret``.
MIN_PROXY_SECRET_LENGTH: int = 16
#: Default port (Streamlit's).
DEFAULT_PORT: int = 8501
#: Default listening address of each mode.
DEFAULT_ADDRESS: dict[str, str] = {"personal": "127.0.0.1", "shared": "0.0.0.0"}
#: A host name: letters, digits, hyphens and dots.
HOST_NAME: re.Pattern[str] = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
#: The keys, and whether each is a list.
KEYS: dict[str, bool] = {
    "mode": False, "address": False, "port": False, "data_roots": True, "data_dir": False,
    "allowed_hosts": True, "identity": False, "user_headers": True, "trusted_proxies": True,
    "admin_users": True, "proxy_secret": False, "proxy_secret_header": False, "database_url": False,
    "records_files_dir": False, "user_quota_gb": False,
}
#: Keys whose value is a number (in the TOML file a number, in the environment its text).
NUMBER_KEYS: tuple[str, ...] = ("port", "user_quota_gb")
#: Default ``user_quota_gb`` of each mode, in GB: off for the one user of personal mode; in shared mode 20 GB,
#: room for about 1,000 training runs of the shipped models' size (a 9.6 MB ``.keras`` file, twice with its
#: checkpoint) or 10,000 saved visits of a 2 MB picture, while a runaway study stops long before a full disk.
DEFAULT_USER_QUOTA_GB: dict[str, float] = {"personal": 0.0, "shared": 20.0}
#: URL scheme of ``database_url`` naming PostgreSQL's driver psycopg (SQLAlchemy's spelling).
DRIVER_SCHEME: str = "postgresql+psycopg"
#: URL schemes of ``database_url`` (PostgreSQL; the driver psycopg is implied by the first two).
DATABASE_SCHEMES: tuple[str, ...] = ("postgresql", "postgres", DRIVER_SCHEME)
#: What a password in a URL is shown as.
MASK: str = "***"


def user_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The user's data folder for moleseg: ``$XDG_DATA_HOME/moleseg``, else ``~/.local/share/moleseg``."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "moleseg"


def temp_root(environ: Mapping[str, str] | None = None) -> Path:
    """Where the browser sessions' folders live (their uploads and the datasets unpacked from them):
    ``MOLESEG_TMPDIR``, else the system temporary folder. In shared mode no data root may hold it (one may lie in
    it, beside the session folders, as in the system's ``/tmp``)."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("MOLESEG_TMPDIR") or tempfile.gettempdir())


def cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """Folder of moleseg's caches (decoded training examples, converted inference graphs): ``MOLESEG_CACHE``,
    else ``~/.cache/moleseg``. In shared mode no data root may hold it or lie in it."""
    environ = os.environ if environ is None else environ
    value = environ.get("MOLESEG_CACHE")
    return Path(value) if value else Path.home() / ".cache" / "moleseg"


def masked_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` query field) shown as :data:`MASK`.

    >>> masked_url("postgresql://moleseg:s3cret@db:5432/records?sslmode=require&password=x")
    'postgresql://moleseg:***@db:5432/records?sslmode=require&password=***'
    """
    scheme, separator, rest = url.partition("://")
    if not separator:  # no scheme: the whole text may still be USER:PASSWORD@HOST/DATABASE
        scheme, rest = "", url
    user, at, after_user = rest.rpartition("@")  # the last '@': a password may hold '@', '/', '?' or '#'
    end = min([after_user.index(mark) for mark in "/?#" if mark in after_user] or [len(after_user)])
    netloc, tail = user + at + after_user[:end], after_user[end:]
    if at and ":" in user:
        netloc = f"{user.split(':', 1)[0]}:{MASK}@{after_user[:end]}"
    tail = re.sub(r"([?&]password=)[^&#]*", rf"\g<1>{MASK}", tail, flags=re.IGNORECASE)
    return f"{scheme}{separator}{netloc}{tail}"


class SettingsError(ValueError):
    """The settings are invalid; ``problems`` holds one sentence per problem."""

    def __init__(self, problems: list[str], source: str) -> None:
        self.problems = problems
        super().__init__(f"moleseg settings ({source}): " + " ".join(problems))


@dataclass(frozen=True)
class ServerSettings:
    """How this server is deployed (see the module's docstring for each key)."""

    mode: str = "personal"
    address: str = DEFAULT_ADDRESS["personal"]
    port: int = DEFAULT_PORT
    data_roots: tuple[Path, ...] = ()
    data_dir: Path = user_data_dir()
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    identity: str = "none"
    user_headers: tuple[str, ...] = DEFAULT_USER_HEADERS
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    admin_users: frozenset[str] = frozenset()
    proxy_secret: str = field(default="", repr=False)
    proxy_secret_header: str = DEFAULT_PROXY_SECRET_HEADER
    database_url: str = field(default="", repr=False)
    records_files_dir: Path | None = None
    user_quota_gb: float = DEFAULT_USER_QUOTA_GB["personal"]

    @property
    def shared(self) -> bool:
        """True in shared mode."""
        return self.mode == "shared"

    def host_allowed(self, host: str | None) -> bool:
        """Whether a request's ``Host`` header (``name`` or ``name:port``) names an allowed host."""
        if not host:
            return False
        try:
            parsed = urlparse(f"//{host}")
            parsed.port  # noqa: B018 (raises ValueError on a port that is not a number in range)
        except ValueError:
            return False
        if (parsed.hostname is None or parsed.username is not None or parsed.password is not None
                or parsed.path or parsed.query or parsed.fragment):
            return False
        return parsed.hostname.lower().rstrip(".") in self.allowed_hosts

    def proxy_trusted(self, address: str | None) -> bool:
        """Whether a peer IP address is one of :attr:`trusted_proxies`."""
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_proxies)

    def streamlit_flags(self) -> list[str]:
        """The ``streamlit run`` options that enforce these settings: the listening address and port, the
        allowed hosts (WebSocket connections naming another host are refused), XSRF protection and CORS on."""
        return [f"--server.address={self.address}", f"--server.port={self.port}",
                *(f"--server.allowedHosts={host}" for host in self.allowed_hosts),
                "--server.enableXsrfProtection=true", "--server.enableCORS=true"]


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _from_file(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            values = tomllib.load(file)
    except OSError as error:
        problems.append(f"cannot read {path}: {error.strerror or error}.")
        return {}
    except tomllib.TOMLDecodeError as error:
        problems.append(f"{path} is not valid TOML: {error}.")
        return {}
    except UnicodeDecodeError as error:  # TOML is UTF-8; tomllib lets the decoder's error through
        problems.append(f"{path} is not valid TOML: not UTF-8 text (byte 0x{error.object[error.start]:02x} at "
                        f"position {error.start}).")
        return {}
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        problems.append(f"{path} has unknown {noun_for(len(unknown), 'key')} {', '.join(unknown)}; the keys are {', '.join(KEYS)}.")
    for key, is_list in KEYS.items():
        if key not in values:
            continue
        value = values[key]
        if is_list and not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
            problems.append(f"{key} must be a list of strings in {path}.")
            del values[key]
        elif key == "port" and (not isinstance(value, int) or isinstance(value, bool)):
            problems.append(f"port must be a whole number in {path}.")
            del values[key]
        elif key in NUMBER_KEYS and key != "port" and (isinstance(value, bool)
                                                         or not isinstance(value, (int, float))):
            problems.append(f"{key} must be a number in {path}.")
            del values[key]
        elif not is_list and key not in NUMBER_KEYS and not isinstance(value, str):
            problems.append(f"{key} must be a string in {path}.")
            del values[key]
    return {key: value for key, value in values.items() if key in KEYS}


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, is_list in KEYS.items():
        text = environ.get(ENV_PREFIX + key.upper())
        if text is None:
            continue
        if not is_list:
            values[key] = text.strip()
        else:
            separator = os.pathsep if key == "data_roots" else ","
            values[key] = [item.strip() for item in text.split(separator) if item.strip()]
    return values


def _absolute_folder(key: str, text: str, problems: list[str], must_exist: bool) -> Path | None:
    path = Path(text)
    if not path.is_absolute():
        problems.append(f"{key} must be an absolute path, not {text!r} (nothing like ~ or $HOME is expanded).")
        return None
    if must_exist and not path.is_dir():
        problems.append(f"{key} {text} is not an existing folder.")
        return None
    return path.resolve() if must_exist else path


def _roots_reaching(roots: list[Path | None], folder: Path | None, name: str, holding: str, *,
                    inside_too: bool = True) -> list[str]:
    """The problems of a shared server's data roots that hold the app's private ``folder`` (named ``name``
    in the sentence; every user's ``holding`` is there) or, with ``inside_too``, lie inside it: every user could
    read it. Without ``inside_too`` a root inside ``folder`` passes (a folder such as the system's temporary one,
    where the app's own sub-folders sit beside other programs')."""
    if folder is None:
        return []
    own = folder.resolve()
    where = "hold {name} or lie inside it" if inside_too else "hold {name}"
    return [f"in shared mode data_roots must not {where.format(name=name)}, not {root}: every user would read "
            f"the others' {holding}." for root in roots
            if root is not None and (own.is_relative_to(root) or (inside_too and root.is_relative_to(own)))]


def read_settings(environ: Mapping[str, str] | None = None) -> ServerSettings:
    """Read and check the settings from ``environ`` (default ``os.environ``) and the file it names.

    Raises
    ------
    SettingsError
        With one sentence per problem (unknown key, wrong type, bad value, a missing requirement of shared mode).
    """
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    config = environ.get(CONFIG_ENV)
    values = _from_file(Path(config), problems) if config else {}
    values.update(_from_environment(environ))
    source = f"{CONFIG_ENV}={config} and the environment" if config else "the environment"

    mode = values.get("mode", "personal")
    if mode not in MODES:
        problems.append(f"mode must be one of {', '.join(MODES)}, not {mode!r}.")
        mode = "personal"
    address = values.get("address") or DEFAULT_ADDRESS[mode]
    try:
        listening = ipaddress.ip_address(address)
    except ValueError:
        problems.append(f"address must be an IP address, not {address!r}.")
    else:
        if mode == "personal" and not listening.is_loopback:
            problems.append(f"personal mode listens on loopback only: address {address} needs mode = shared.")
    port = values.get("port", DEFAULT_PORT)
    try:
        port = int(port)
    except ValueError:
        problems.append(f"port must be a whole number, not {port!r}.")
        port = DEFAULT_PORT
    if not 1 <= port <= 65535:
        problems.append(f"port must be 1..65535, not {port}.")

    roots = [_absolute_folder("data_roots", text, problems, must_exist=True) for text in values.get("data_roots", [])]
    data_dir = (_absolute_folder("data_dir", values["data_dir"], problems, must_exist=False)
                if values.get("data_dir") else user_data_dir(environ))
    if mode == "shared":
        problems += _roots_reaching(roots, data_dir, "the app's data folder", "runs and datasets")
        problems += _roots_reaching(roots, temp_root(environ), "the session folders (MOLESEG_TMPDIR)",
                                    "uploads and unpacked datasets", inside_too=False)
        problems += _roots_reaching(roots, cache_root(environ), "the caches (MOLESEG_CACHE)",
                                    "cached training examples and converted models")

    configured_hosts = [host.lower().rstrip(".") for host in values.get("allowed_hosts", [])]
    for host in configured_hosts:
        if not (HOST_NAME.fullmatch(host) or _is_ip(host)):
            problems.append(f"allowed_hosts holds host names without a port or a scheme, not {host!r}.")
    if mode == "shared" and not configured_hosts:
        problems.append("shared mode needs allowed_hosts: the host names users type in their browser to reach "
                        "the proxy.")

    identity = values.get("identity", "none")
    if identity not in IDENTITY_SOURCES:
        problems.append(f"identity must be one of {', '.join(IDENTITY_SOURCES)}, not {identity!r}.")
    if mode == "shared" and identity == "none":
        problems.append("shared mode refuses to start without an identity source: set identity to "
                        "proxy-header or streamlit-oidc.")
    headers = tuple(values.get("user_headers", DEFAULT_USER_HEADERS))
    if identity == "proxy-header" and not headers:
        problems.append("identity proxy-header needs at least one of user_headers.")
    networks = []
    for text in values.get("trusted_proxies", []):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            problems.append(f"trusted_proxies holds IP addresses or networks (CIDR), not {text!r}.")
    if identity == "proxy-header" and not values.get("trusted_proxies"):
        problems.append("identity proxy-header needs trusted_proxies: the addresses of the reverse proxy, "
                        "the only peers whose user header is believed.")

    secret = values.get("proxy_secret", "")
    if identity == "proxy-header" and len(secret) < MIN_PROXY_SECRET_LENGTH:
        problems.append(f"identity proxy-header needs proxy_secret: a random value of at least "
                        f"{MIN_PROXY_SECRET_LENGTH} characters that the reverse proxy adds in proxy_secret_header "
                        f"(anyone on this machine can reach the app's port without the proxy).")

    database_url = values.get("database_url", "")
    if database_url:
        try:
            parts = urlsplit(database_url)
            valid = parts.scheme in DATABASE_SCHEMES and bool(parts.path.strip("/")) and (parts.port or 1) > 0
        except ValueError:  # a malformed host or port
            valid = False
        if not valid:
            problems.append(f"database_url must be a PostgreSQL URL such as postgresql://USER:PASSWORD@HOST:PORT/"
                            f"DATABASE, not {masked_url(database_url)!r}.")
    files_dir = (_absolute_folder("records_files_dir", values["records_files_dir"], problems, must_exist=False)
                 if values.get("records_files_dir") else None)
    if mode == "shared":
        problems += _roots_reaching(roots, files_dir, "records_files_dir", "saved visits")
    quota = values.get("user_quota_gb", DEFAULT_USER_QUOTA_GB[mode])
    try:
        quota = float(quota)
    except ValueError:
        quota = math.nan
    if not (math.isfinite(quota) and quota >= 0):
        problems.append(f"user_quota_gb must be a number of GB, 0 or more (0: no quota), not "
                        f"{values.get('user_quota_gb')!r}.")
        quota = DEFAULT_USER_QUOTA_GB[mode]

    if problems:
        raise SettingsError(problems, source)
    return ServerSettings(
        mode=mode, address=address, port=port, data_roots=tuple(root for root in roots if root is not None),
        data_dir=data_dir, allowed_hosts=tuple(dict.fromkeys([*LOOPBACK_HOSTS, *configured_hosts])),
        identity=identity, user_headers=headers, trusted_proxies=tuple(networks),
        admin_users=frozenset(values.get("admin_users", ())), proxy_secret=secret,
        proxy_secret_header=values.get("proxy_secret_header") or DEFAULT_PROXY_SECRET_HEADER,
        database_url=database_url, records_files_dir=files_dir, user_quota_gb=quota)


@functools.cache
def load_settings() -> ServerSettings:
    """The settings of this process (:func:`read_settings` of ``os.environ``, read once; tests call
    ``load_settings.cache_clear()`` after changing the environment)."""
    return read_settings()
