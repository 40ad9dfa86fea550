"""Redis URLs: which deployment a URL names, and the client that reaches it.

Three deployments, six schemes (``rediss`` = TLS):

- ``redis://[user:password@]host[:port][/db]``: one server (or a replicated primary's
  endpoint);
- ``redis+cluster://[user:password@]host:port[,host:port...]``: a Redis Cluster, found
  from any of its nodes (the seeds); Cluster has only database 0;
- ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``: the master
  that the Sentinels at those addresses name for ``service``. The credentials are the
  data nodes'; Sentinels that want a password of their own take
  ``?sentinel_password=...`` (and ``sentinel_username``).

Query options (``?socket_timeout=0.5&ssl_cert_reqs=none``) are the client's connection
options, as in redis-py's own URLs. Every message shows a URL without its password.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, unquote

from ..errors import ImproperlyConfigured
from ..redaction import redact_url

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.sentinel import Sentinel

__all__ = ["RedisClients", "RedisURL", "connect", "open_url", "parse_redis_url"]

Kind = Literal["server", "cluster", "sentinel"]

_KINDS: dict[str, tuple[Kind, bool]] = {
    "redis": ("server", False),
    "rediss": ("server", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}
_EXAMPLES: dict[Kind, str] = {
    "server": "redis://localhost:6379/0",
    "cluster": "redis+cluster://10.0.0.1:6379,10.0.0.2:6379",
    "sentinel": "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/0",
}
_DEFAULT_PORT: dict[Kind, int] = {"server": 6379, "cluster": 6379, "sentinel": 26379}
# Options only the Sentinel connections take; the rest go to the data nodes' connections.
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
_TOPOLOGY_SCHEMES = ("redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel")


@dataclass(frozen=True, slots=True)
class RedisURL:
    """A parsed Redis URL. Its ``repr`` and :attr:`shown` never include a password."""

    kind: Kind
    tls: bool
    nodes: tuple[tuple[str, int], ...]
    """``(host, port)`` of the server, the cluster's seed nodes, or the Sentinels."""
    username: str | None
    password: str | None = field(repr=False)
    db: int
    service: str | None
    """The Sentinel service (master) name; ``None`` for the other kinds."""
    options: dict[str, Any] = field(repr=False)
    """Connection options from the query string, already cast to their types."""
    shown: str
    """The URL as given, with any password replaced by ``***``."""


def parse_redis_url(url: str) -> RedisURL:
    """Parse any of the six Redis schemes; a mistake raises ImproperlyConfigured."""
    shown = _redact(url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _KINDS:
        raise ImproperlyConfigured(
            f"{shown!r} is not a Redis URL. Use redis:// (or rediss://) for one server, "
            "redis+cluster:// for a Redis Cluster, redis+sentinel:// for Sentinel."
        )
    kind, tls = _KINDS[scheme.lower()]
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    location, _, path = rest.partition("/")
    userinfo, at, hosts = location.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes = tuple(_node(item, kind, shown) for item in hosts.split(",")) if hosts else ()
    if not nodes:
        what = {"server": "host", "cluster": "seed node", "sentinel": "Sentinel"}[kind]
        raise ImproperlyConfigured(
            f"The Redis URL {shown!r} names no {what}. Use {_EXAMPLES[kind]}."
        )
    if kind == "server" and len(nodes) > 1:
        raise ImproperlyConfigured(
            f"The Redis URL {shown!r} names several hosts. For a Redis Cluster use "
            f"{_EXAMPLES['cluster']}; for Sentinel use {_EXAMPLES['sentinel']}."
        )
    service, db = _path(path, kind, shown)
    return RedisURL(
        kind=kind,
        tls=tls,
        nodes=nodes,
        username=username,
        password=password,
        db=db,
        service=service,
        options=_options(query, shown),
        shown=shown,
    )


def _redact(url: str) -> str:
    shown = redact_url(url)
    # A password may also travel as a query option (password=, sentinel_password=).
    base, sep, query = shown.partition("?")
    if not sep:
        return shown
    parts = [
        f"{name}=***" if "password" in name.lower() else f"{name}={value}" if eq else name
        for name, eq, value in (part.partition("=") for part in query.split("&"))
    ]
    return f"{base}?{'&'.join(parts)}"


def _node(item: str, kind: Kind, shown: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [IPv6]:port
        host, bracket, port = item[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise ImproperlyConfigured(
                f"The Redis URL {shown!r} has a malformed IPv6 address {item!r}; "
                "write it as [::1]:6379."
            )
        port = port[1:]
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ImproperlyConfigured(f"The Redis URL {shown!r} has an address with no host.")
    if not port:
        return host, _DEFAULT_PORT[kind]
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ImproperlyConfigured(
            f"The Redis URL {shown!r} has the port {port!r}; a port is a number from 1 to 65535."
        )
    return host, int(port)


def _path(path: str, kind: Kind, shown: str) -> tuple[str | None, int]:
    parts = [unquote(part) for part in path.split("/") if part]
    if kind == "sentinel":
        if not parts:
            raise ImproperlyConfigured(
                f"The Sentinel URL {shown!r} names no service. Add the name the Sentinels "
                f"monitor, as in {_EXAMPLES['sentinel']}."
            )
        if len(parts) > 2:
            raise ImproperlyConfigured(
                f"The Sentinel URL {shown!r} has too many path parts; use /service or /service/db."
            )
        return parts[0], _db(parts[1] if len(parts) == 2 else "0", shown)
    if len(parts) > 1:
        raise ImproperlyConfigured(
            f"The Redis URL {shown!r} has too many path parts; the only one is the db number."
        )
    db = _db(parts[0] if parts else "0", shown)
    if kind == "cluster" and db != 0:
        raise ImproperlyConfigured(
            f"The Redis Cluster URL {shown!r} names database {db}, but a cluster has only "
            "database 0. Remove it, or use a different key prefix instead."
        )
    return None, db


def _db(text: str, shown: str) -> int:
    if not (text.isascii() and text.isdigit()):  # "²".isdigit() is True; int() refuses it
        raise ImproperlyConfigured(
            f"The Redis URL {shown!r} names the database {text!r}; a database is a number "
            "such as 0."
        )
    return int(text)


def _options(query: str, shown: str) -> dict[str, Any]:
    from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS

    options: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        parse = URL_QUERY_ARGUMENT_PARSERS.get(name)
        try:
            options[name] = parse(value) if parse else value
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"The Redis URL {shown!r} has an invalid value for {name!r}."
            ) from exc
    if "db" in options:
        raise ImproperlyConfigured(
            f"The Redis URL {shown!r} passes db as an option; put it in the path instead."
        )
    return options


@functools.cache
def _sentinel_class() -> type[Sentinel]:
    from redis.asyncio.sentinel import Sentinel

    class OneAtATimeSentinel(Sentinel):
        """Asks the Sentinels for the master one request at a time.

        redis-py's ``discover_master`` reorders its list of Sentinels between awaits;
        several requests reconnecting at once after a failover corrupt that list (one
        Sentinel listed twice, another lost, its connections never closed).
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._discovering = asyncio.Lock()

        async def discover_master(self, service_name: str) -> Any:
            async with self._discovering:
                return await super().discover_master(service_name)

    return OneAtATimeSentinel


@dataclass(slots=True)
class RedisClients:
    """What :func:`connect` built: the client the store talks to, and what to close."""

    client: Redis | RedisCluster
    sentinel: Sentinel | None = None

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.sentinel is not None:
            await self.sentinel.aclose()


def connect(
    url: RedisURL,
    *,
    socket_timeout: float,
    socket_connect_timeout: float,
    max_connections: int,
    **options: Any,
) -> RedisClients:
    """Build the redis-py client for ``url``: a ``Redis``, a ``RedisCluster``, or the
    ``Redis`` that a ``Sentinel`` keeps pointed at the current master."""
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError

    settings: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "username": url.username,
        "password": url.password,
    }
    sentinel_settings = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
    }
    for name, value in {**url.options, **options}.items():
        if name in _SENTINEL_OPTIONS:
            sentinel_settings[name.removeprefix("sentinel_")] = value
        else:
            settings[name] = value
    if url.kind == "cluster":
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        # No retry by the cluster client: it would resend a script whose reply timed out,
        # and a write must not run twice. A command that fails marks the slot map stale,
        # so the next request re-reads it and finds a promoted replica; MOVED and ASK
        # redirections are followed either way (the command did not run).
        settings.setdefault("retry", Retry(NoBackoff(), 0))
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in url.nodes],
            # Serve the slots that have a master while others are failing over.
            require_full_coverage=False,
            # A MOVED answer updates that slot only: resetting the whole client closes
            # connections other requests are using (redis-py), failing them too.
            reinitialize_steps=0,
            ssl=url.tls,
            max_connections=max_connections,
            **settings,
        )
        return RedisClients(cluster)
    # One immediate retry on a dropped connection (a pooled socket that died while the
    # server restarted, or a master Sentinel has replaced), none on timeouts: an outage
    # fails fast instead of backing off.
    settings.setdefault("retry", Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)))
    if url.kind == "sentinel":
        if url.tls:
            sentinel_settings["ssl"] = True
        service = url.service or ""  # parse_redis_url refuses a Sentinel URL without one
        sentinel = _sentinel_class()(list(url.nodes), sentinel_kwargs=sentinel_settings)
        master = sentinel.master_for(
            service, db=url.db, ssl=url.tls, max_connections=max_connections, **settings
        )
        return RedisClients(master, sentinel)
    host, port = url.nodes[0]
    if url.tls:
        settings["ssl"] = True
    server = redis.asyncio.Redis(
        host=host, port=port, db=url.db, max_connections=max_connections, **settings
    )
    _pack_with_hiredis(server.connection_pool)
    return RedisClients(server)


def open_url(
    url: str,
    *,
    socket_timeout: float,
    socket_connect_timeout: float,
    max_connections: int,
    **options: Any,
) -> RedisClients:
    """The clients for any Redis URL: the cluster and Sentinel schemes through
    :func:`connect`, ``redis://``, ``rediss://`` and ``unix://`` through redis-py's own
    ``from_url`` (so every option it knows keeps working)."""
    scheme = url.partition("://")[0].lower()
    if scheme in _TOPOLOGY_SCHEMES:
        return connect(
            parse_redis_url(url),
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            max_connections=max_connections,
            **options,
        )
    if scheme in ("redis", "rediss"):
        _check_server_path(url)
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError

    # One immediate retry on a dropped connection (a pooled socket that died while the
    # server restarted), none on timeouts: an outage fails fast.
    options.setdefault("retry", Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)))
    options.setdefault("decode_responses", True)
    try:
        client = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            max_connections=max_connections,
            **options,
        )
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"Invalid Redis URL {redact_url(url)!r}: {redact_url(str(exc))}"
        ) from exc
    _pack_with_hiredis(client.connection_pool)
    return RedisClients(client)


def _check_server_path(url: str) -> None:
    """Refuse a ``redis://`` path that redis-py would misread rather than reject: it drops
    every slash and falls back to database 0 on anything else, so ``/sessions`` means
    database 0 and ``/1/2`` database 12. Valid: no path, ``/`` or ``/<db number>``."""
    rest = url.partition("://")[2].partition("?")[0].partition("#")[0]
    _path(rest.partition("/")[2], "server", _redact(url))


def _pack_with_hiredis(pool: Any) -> None:
    """Have the pool's connections pack commands with hiredis, as redis-py's synchronous
    ones do: its asyncio connections encode every argument in Python (measured: a save's
    script call spends 28 us less CPU)."""
    try:
        from hiredis import pack_command
    except ImportError:  # pragma: no cover - the [redis] extra installs hiredis
        return
    base = pool.connection_class

    class HiredisPacking(base):  # type: ignore[misc, valid-type]
        def pack_command(self, *args: Any) -> list[bytes]:
            if isinstance(args[0], str) and " " in args[0]:
                return super().pack_command(*args)  # type: ignore[no-any-return]  # "CONFIG GET"
            try:
                return [pack_command(args)]
            except TypeError:
                return super().pack_command(*args)  # type: ignore[no-any-return]  # its error

    HiredisPacking.__name__ = HiredisPacking.__qualname__ = f"HiredisPacking{base.__name__}"
    pool.connection_class = HiredisPacking
