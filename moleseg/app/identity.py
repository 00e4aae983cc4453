"""Who is using the app: the one place that resolves the current user from the server's settings, and the
folders their files go to (:func:`user_space`).

Personal mode has one user, the account that runs the server; they reach every record. In shared mode with
``identity = "proxy-header"`` the user's name comes from a header set by the reverse proxy in front (e.g.
``X-Forwarded-User`` from Caddy's ``basic_auth``/``forward_auth`` or oauth2-proxy). The header is believed
only when both hold:

* the connection comes from one of the settings' ``trusted_proxies``, as Streamlit reports its address
  (``st.context.ip_address``: None for a loopback peer, read here as ``127.0.0.1`` or ``::1``); and
* it carries the settings' ``proxy_secret`` in the ``proxy_secret_header``, which only the proxy sets.

The second check is needed because Streamlit's server (uvicorn, with its default ``proxy_headers``) replaces
the address of a loopback peer by the client named in that peer's ``X-Forwarded-For``: any program on the
server's machine can connect to the app's port directly and claim to be the proxy, or any address. The
proxy therefore removes ``X-Forwarded-For`` (so its own address is the one Streamlit reports) and adds the
secret. With ``identity = "streamlit-oidc"`` the user is Streamlit's logged-in ``st.user`` (its e-mail, unless
the identity provider says it is not verified: :func:`oidc_email`).
Anything else is refused with one sentence, and the page shows no record.

In shared mode each user's runs, studies and "My dataset" are in their own space of the data folder
(:func:`moleseg.core.userspace.shared_space`); personal mode keeps the data folder's own folders.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import streamlit as st

from moleseg.core.config import SIGN_IN_MAX_AGE_S, data_dir
from moleseg.core.errors import first_line
from moleseg.core.settings import ServerSettings, load_settings
from moleseg.core.userspace import UserSpace, personal_space, shared_space, signed_in_name
from moleseg.engine.recordtypes import User, personal_owner

__all__ = ["Refusal", "current_user", "require_user", "resolve_user", "personal_user", "oidc_email", "sees_everyone",
           "find_user_space", "user_space", "LOOPBACK_PEERS"]

#: The peer addresses of a loopback connection (``st.context.ip_address`` reports None for both).
LOOPBACK_PEERS: tuple[str, ...] = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class Refusal:
    """Why no user could be believed: one sentence for the page (it reveals nothing of the settings)."""

    message: str


NOT_THROUGH_PROXY = Refusal("This request did not come through the clinic's sign-in proxy, so it cannot be "
                            "told who you are: open moleseg at its usual address.")
NOT_SIGNED_IN = Refusal("You are not signed in: open moleseg at its usual address and sign in.")
NAMED_TWICE = Refusal("This request names its user more than once, so it cannot be told who you are: ask the "
                      "server's operator to have the sign-in proxy replace the user header, not add to it.")


def personal_user() -> User:
    """The one user of personal mode: the account that runs the server
    (:func:`moleseg.engine.recordtypes.personal_owner`), an admin of its own records."""
    return User(personal_owner(), admin=True)


def _first_named(candidates: Iterable[str | None], settings: ServerSettings) -> User | Refusal:
    """The user of the first of ``candidates`` that is a name (:func:`moleseg.core.userspace.signed_in_name`),
    an admin when the settings' ``admin_users`` list it; :data:`NOT_SIGNED_IN` when none is."""
    for candidate in candidates:
        try:
            name = signed_in_name(candidate or "")
        except ValueError:
            continue
        return User(name, admin=name in settings.admin_users)
    return NOT_SIGNED_IN


def header_values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of the header ``name`` in ``headers``: ``st.context.headers`` (``get_all``) and Starlette's
    headers (``getlist``) keep each value a request repeats, a plain mapping holds one."""
    for method in ("get_all", "getlist"):
        values = getattr(headers, method, None)
        if callable(values):
            return [str(value) for value in values(name)]
    value = headers.get(name)
    return [] if value is None else [value]


def resolve_user(settings: ServerSettings, headers: Mapping[str, str], ip_address: str | None,
                 oidc_email: str | None = None) -> User | Refusal:
    """The user of a request, or why none is believed.

    Parameters
    ----------
    settings : ServerSettings
        The server's settings (:func:`moleseg.core.settings.load_settings`).
    headers : mapping
        The request's headers (case-insensitive, as ``st.context.headers``); a user header a request repeats
        (:func:`header_values`) is believed for nobody (:data:`NAMED_TWICE`).
    ip_address : str or None
        The peer address as ``st.context.ip_address`` reports it (None: a loopback peer).
    oidc_email : str or None
        The e-mail of Streamlit's logged-in user (``identity = "streamlit-oidc"``), None when not logged in.
    """
    if not settings.shared or settings.identity == "none":
        return personal_user()
    if settings.identity == "streamlit-oidc":
        return _first_named([oidc_email], settings)
    secret = headers.get(settings.proxy_secret_header) or ""
    from_proxy = any(settings.proxy_trusted(peer) for peer in ((ip_address,) if ip_address else LOOPBACK_PEERS))
    if not (from_proxy and settings.proxy_secret
            and hmac.compare_digest(secret.encode(), settings.proxy_secret.encode())):
        return NOT_THROUGH_PROXY
    named = [header_values(headers, header) for header in settings.user_headers]
    if any(len(values) > 1 for values in named):  # a proxy that adds its header leaves the browser's first
        return NAMED_TWICE
    return _first_named((values[0] if values else None for values in named), settings)


def oidc_email(claims: Mapping[str, Any], *, now: float | None = None) -> str | None:
    """The e-mail of an OIDC sign-in (``st.user``'s identity token claims), or None when nobody is logged in,
    the identity provider says the address is not verified (``email_verified`` false, as a boolean or the
    string some providers send: a provider that lets its users type any address would otherwise let one pass
    for another user, an admin included; one that sends no ``email_verified`` is believed), or the sign-in is
    older than :data:`~moleseg.core.config.SIGN_IN_MAX_AGE_S` (its ``iat``, seconds since the epoch, against
    ``now``, default the clock; an ``iat`` that is not a number is no time to go by)."""
    if not claims.get("is_logged_in"):
        return None
    verified = claims.get("email_verified")
    if verified is False or str(verified).strip().lower() == "false":
        return None
    issued = claims.get("iat")
    if issued is not None:
        if isinstance(issued, bool) or not isinstance(issued, (int, float)):
            return None
        if (time.time() if now is None else now) - issued > SIGN_IN_MAX_AGE_S:
            return None
    email = claims.get("email")
    return email if isinstance(email, str) else None


def sees_everyone(user: User) -> bool:
    """Whether ``user`` reaches other users' records (an admin in shared mode), so pages say who saved what."""
    return user.admin and load_settings().shared


def current_user() -> User | Refusal:
    """The user of this browser session (:func:`resolve_user` of Streamlit's request context)."""
    settings = load_settings()
    email = oidc_email(st.user) if settings.shared and settings.identity == "streamlit-oidc" else None
    return resolve_user(settings, st.context.headers, st.context.ip_address, email)


def require_user() -> User:
    """The current user; when none is believed, the page shows why in one sentence (and a log-in button
    with Streamlit's own log-in) and stops."""
    user = current_user()
    if isinstance(user, User):
        return user
    st.error(user.message)
    if load_settings().identity == "streamlit-oidc":
        st.button("Log in", on_click=st.login, key="identity_login")
    st.stop()


def find_user_space() -> UserSpace | Refusal:
    """The folders of this browser session's user: their own space in shared mode (created on first use),
    the data folder's ``runs/`` and ``corrections/`` in personal mode; why not, when no user is believed or
    the space cannot be created."""
    if not load_settings().shared:
        return personal_space()
    user = current_user()
    if not isinstance(user, User):
        return user
    try:
        return shared_space(data_dir(), user.name)
    except OSError as error:
        return Refusal(f"Cannot create your folders in the app's data folder {data_dir()}: {first_line(error)}")


def user_space() -> UserSpace:
    """:func:`find_user_space`; when there is none, the page shows why in one sentence and stops."""
    space = find_user_space()
    if isinstance(space, UserSpace):
        return space
    require_user()  # the log-in button where there is one
    st.error(space.message)
    st.stop()
