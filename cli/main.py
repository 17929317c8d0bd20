"""``rspm``: administer a Package Manager server and publish packages to it.

On the server it talks to the running process over the admin unix socket found
through the configuration file; elsewhere, given an address (``--address`` or
``PACKAGEMANAGER_ADDRESS``) and ``PACKAGEMANAGER_TOKEN``, it talks HTTP(S) with
that token.  The global options are Posit's rspm's, and as there they may be
given before or after the command, so scripts written for it run unchanged.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from cli import publish
from cli.client import ApiClient, ApiError, CliError, Target, connection_factory, segment
from pm import __version__
from pm.errors import ConfigError

DEFAULT_CONFIG = "/etc/rstudio-pm/rstudio-pm.gcfg"
TOKEN_NOTICE = (
    "Generated an access token. Be sure to record this token immediately since you "
    "will not be able to retrieve it later."
)
F = TypeVar("F", bound=Callable[..., Any])


class State:
    """The global options, wherever on the command line they were given, and the client."""

    def __init__(self) -> None:
        self.address: str | None = None
        self.config: str | None = None
        self.output_format = "human"
        self.insecure = False
        self.verbose = False
        self._api: ApiClient | None = None

    @property
    def json(self) -> bool:
        return self.output_format == "json"

    def target(self) -> Target:
        address = self.address or os.environ.get("PACKAGEMANAGER_ADDRESS")
        if address:
            token = os.environ.get("PACKAGEMANAGER_TOKEN")
            if not token:
                raise CliError("a server address is given (--address or PACKAGEMANAGER_ADDRESS) "
                               "but PACKAGEMANAGER_TOKEN is not set")
            return Target(address=address, token=token)
        # pm.config (dataclass slots and kw_only) needs Python 3.10: imported
        # only here, so that remote use works on the 3.9 the zipapp supports.
        if sys.version_info < (3, 10):
            raise CliError(
                "finding the admin socket through the server's configuration needs Python "
                f"3.10 or later (this is {sys.version.split()[0]}): give --address, with "
                "PACKAGEMANAGER_TOKEN set")
        from pm.config import load_config

        path = self.config or os.environ.get("PACKAGEMANAGER_CONFIG") or DEFAULT_CONFIG
        try:
            config = load_config(path)
        except ConfigError as e:
            raise CliError(
                f"{e.message} (the configuration file tells rspm where the server's admin "
                f"socket is: pass --config or set PACKAGEMANAGER_CONFIG, or give --address)"
            ) from None
        return Target(socket=config.socket_path)

    def api(self) -> ApiClient:
        """The command's client: made on first use, so commands that fail early connect to
        nothing."""
        if self._api is None:
            target = self.target()
            self._api = ApiClient(target, connection_factory(target, insecure=self.insecure),
                                  verbose=self.verbose)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None


pass_state = click.make_pass_decorator(State, ensure=True)


def _store(attribute: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    """A callback keeping a global option's value, if given, on the State."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is None or value is False:
            return
        if attribute == "output_format" and value == "text":
            value = "human"
        setattr(ctx.ensure_object(State), attribute, value)

    return callback


def global_options(f: F) -> F:
    """Posit's global options, accepted by the root group and by every command."""
    options = [
        click.option("-a", "--address", metavar="URL", expose_value=False,
                     callback=_store("address"),
                     help="The address of the remote server. If not specified, the "
                          "PACKAGEMANAGER_ADDRESS environment variable is used; the token "
                          "is PACKAGEMANAGER_TOKEN."),
        click.option("-c", "--config", metavar="PATH", expose_value=False,
                     callback=_store("config"),
                     help="Server configuration file, to find the admin socket when there "
                          "is no address (default: $PACKAGEMANAGER_CONFIG, else "
                          f"{DEFAULT_CONFIG})."),
        click.option("-o", "--output-format", type=click.Choice(["human", "json", "text"]),
                     expose_value=False, callback=_store("output_format"),
                     help="'human' (or 'text') for human-readable output, 'json' for "
                          "JSON-encoded output. [default: human]"),
        click.option("--insecure-ssl-skip-verify", is_flag=True, expose_value=False,
                     callback=_store("insecure"),
                     help="Skip TLS certificate verification. This reduces the security "
                          "that TLS normally provides."),
        click.option("-v", "--verbose", is_flag=True, expose_value=False,
                     callback=_store("verbose"),
                     help="Print each request and its status on stderr."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _when(value: float | None, none: str = "never") -> str:
    if value is None:
        return none
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return "(none)"
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(widths[i]) for i, h in enumerate(headers))]
    lines += ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _emit(state: State, value: Any, text: str) -> None:
    click.echo(json.dumps(value, indent=2) if state.json else text)


def _sources_table(sources: list[dict[str, Any]]) -> str:
    return _table(("name", "type", "guid", "created"),
                  [(s["name"], s["type"], s["guid"], _when(s["created"])) for s in sources])


def _yes_no(value: Any) -> str:
    # "-" when the server does not say (one older than authenticated repos).
    return "-" if value is None else "yes" if value else "no"


def _repos_table(repos: list[dict[str, Any]]) -> str:
    return _table(
        ("name", "type", "authenticated", "sources", "description"),
        [(r["name"], r["type"], _yes_no(r.get("authenticated")), ", ".join(r["sources"]) or "-",
          r["description"]) for r in repos],
    )


def _tokens_table(tokens: list[dict[str, Any]]) -> str:
    def targets(t: dict[str, Any]) -> str:
        return t["targets"] if isinstance(t["targets"], str) else ", ".join(t["targets"]) or "-"

    return _table(
        ("guid", "description", "scope", "targets", "created", "expires", "revoked", "last used"),
        [
            (t["guid"], t["description"], t["scope"], targets(t), _when(t["created"]),
             _when(t["expires"]) + (" (expired)" if t["expired"] else ""),
             _when(t["revoked"], "no"), _when(t["last_used"], "-"))
            for t in tokens
        ],
    )


def _packages_table(listing: dict[str, Any], *, with_source: bool, paginated: bool) -> str:
    packages = listing.get("packages") or []
    rows = []
    for p in packages:
        versions = ", ".join(p.get("versions") or []) or "-"
        if p.get("archived"):
            versions += f" (archived: {', '.join(p['archived'])})"
        row = [p["name"], p.get("version") or "-", versions]
        rows.append([*row, p.get("source") or "-"] if with_source else row)
    headers = ("name", "version", "versions", "source")
    text = _table(headers if with_source else headers[:3], rows)
    total = listing.get("total")
    if isinstance(total, int) and (paginated or total > len(packages)):
        count = listing.get("count")
        pages = max(1, math.ceil(total / count)) if isinstance(count, int) and count > 0 else 1
        text += f"\npage {listing.get('page', 1)} of {pages} ({total} packages)"
    return text


class _Group(click.Group):
    """Turns CliError into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="rspm",
                      message="%(prog)s %(version)s", help="Show the version and exit.")
@global_options
@click.pass_context
def main(ctx: click.Context) -> None:
    """Administer a Package Manager server, and publish packages to it."""
    ctx.call_on_close(ctx.ensure_object(State).close)


@main.command()
@global_options
@pass_state
def status(state: State) -> None:
    """Show the server's version, database and uptime."""
    value = state.api().get("/__api__/status")
    _emit(state, value, "\n".join(f"{k}: {v}" for k, v in value.items()))


@main.group()
@global_options
def create() -> None:
    """Create a source, a repo or an API token."""


def _create(state: State, kind: str, path: str, body: dict[str, Any],
            succeed_on_existing: bool) -> None:
    try:
        value = state.api().post(path, body)
    except ApiError as e:
        if not (succeed_on_existing and e.status == 409):
            raise
        _emit(state, {"name": body["name"], "already_exists": True, "message": e.message},
              f"{kind} '{body['name']}' already exists")
        return
    _emit(state, value, f"{kind} '{value['name']}' ({value['type']}) created: {value['guid']}")


@create.command("source")
@click.option("--name", required=True, help="Name of the new source.")
@click.option("--type", "type_", required=True, metavar="TYPE",
              help="local-python (Python packages) or local (R packages).")
@click.option("--succeed-on-existing", is_flag=True,
              help="Succeed, saying so, if a source of that name exists.")
@global_options
@pass_state
def create_source(state: State, name: str, type_: str, succeed_on_existing: bool) -> None:
    """Create a local source that packages are published to."""
    _create(state, "Source", "/__api__/sources", {"name": name, "type": type_},
            succeed_on_existing)


def authentication_options(f: F) -> F:
    """``--authenticated[=true|false]`` (Posit's spellings) and ``--no-authenticated``."""
    f = click.option("--no-authenticated", "unauthenticated", is_flag=True,
                     help="Anyone who can reach the server may read the repo.")(f)
    return click.option(
        "--authenticated", type=click.BOOL, is_flag=False, flag_value=True, default=None,
        metavar="[=true|false]",
        help="Only a repos:read token for the repo (or a global:admin one) may read its "
             "index and files, sent as the password of the user __token__.")(f)


def _authenticated(authenticated: bool | None, unauthenticated: bool) -> bool | None:
    if unauthenticated:
        if authenticated:
            raise CliError("give --authenticated or --no-authenticated, not both")
        return False
    return authenticated


@create.command("repo")
@click.option("--name", required=True, help="Name of the new repo.")
@click.option("--type", "type_", required=True, metavar="TYPE", help="python or r.")
@click.option("--description", default="", help="What the repo is for.")
@authentication_options
@click.option("--succeed-on-existing", is_flag=True,
              help="Succeed, saying so, if a repo of that name exists.")
@global_options
@pass_state
def create_repo(state: State, name: str, type_: str, description: str,
                authenticated: bool | None, unauthenticated: bool,
                succeed_on_existing: bool) -> None:
    """Create a repo that clients install from.

    Without --authenticated or --no-authenticated, the server's [Authentication]
    NewReposAuthByDefault decides.
    """
    body: dict[str, Any] = {"name": name, "type": type_, "description": description}
    wanted = _authenticated(authenticated, unauthenticated)
    if wanted is not None:
        body["authenticated"] = wanted
    _create(state, "Repo", "/__api__/repos", body, succeed_on_existing)


@main.group()
@global_options
def edit() -> None:
    """Change a repo."""


@edit.command("repo")
@click.option("--name", required=True, help="The repo to change.")
@click.option("--description", default=None, help="A new description.")
@authentication_options
@global_options
@pass_state
def edit_repo(state: State, name: str, description: str | None, authenticated: bool | None,
              unauthenticated: bool) -> None:
    """Change a repo: require a token to read it, or no longer, or its description.

    A change takes effect on the next request to every server sharing the database.
    """
    body: dict[str, Any] = {}
    wanted = _authenticated(authenticated, unauthenticated)
    if wanted is not None:
        body["authenticated"] = wanted
    if description is not None:
        body["description"] = description
    if not body:
        raise CliError("say what to change: --authenticated, --no-authenticated or "
                       "--description")
    value = state.api().post(f"/__api__/repos/{segment(name)}", body)
    access = "a repos:read token" if value.get("authenticated") else "no token"
    _emit(state, value, f"Repo '{value['name']}' changed: reading it needs {access}")


@create.command("token")
@click.option("--description", default="", help="What the token is for.")
@click.option("--sources", default="", help="Comma-separated source names, or '*'.")
@click.option("--repos", default="", help="Comma-separated repo names, or '*' (repos:read).")
@click.option("--expires", default="never", show_default=True,
              help="Lifetime: <n>s, <n>m, <n>h, <n>d, or never.")
@click.option("--scope", default="sources:write", show_default=True,
              help="sources:write, repos:read or global:admin.")
@click.option("--quiet", is_flag=True, help="Print only the token.")
@global_options
@pass_state
def create_token(state: State, description: str, sources: str, repos: str, expires: str,
                 scope: str, quiet: bool) -> None:
    """Create an API token for remote publishing or administration."""
    value = state.api().post("/__api__/tokens", {
        "description": description, "sources": sources, "repos": repos,
        "expires": expires, "scope": scope,
    })
    if state.json and not quiet:
        click.echo(json.dumps(value, indent=2))
        return
    if not quiet:
        click.echo(TOKEN_NOTICE, err=True)
    click.echo(value["token"])


@main.command()
@click.option("--repo", required=True, help="The repo that should serve the source.")
@click.option("--source", required=True, help="The source to add, after existing ones.")
@global_options
@pass_state
def subscribe(state: State, repo: str, source: str) -> None:
    """Subscribe a repo to a source (earlier subscriptions take precedence)."""
    value = state.api().post(f"/__api__/repos/{segment(repo)}/subscriptions",
                             {"source": source})
    _emit(state, value, f"Repo '{value['name']}' now serves: {', '.join(value['sources'])}")


@main.group("list", invoke_without_command=True)
@global_options
@click.pass_context
def list_(click_ctx: click.Context) -> None:
    """List repos (the default), sources, tokens or packages."""
    if click_ctx.invoked_subcommand is None:
        click_ctx.invoke(list_repos)


@list_.command("repos")
@global_options
@pass_state
def list_repos(state: State) -> None:
    """List repos and the sources each serves, in order."""
    value = state.api().get("/__api__/repos")
    _emit(state, value, _repos_table(value))


@list_.command("sources")
@global_options
@pass_state
def list_sources(state: State) -> None:
    """List sources."""
    value = state.api().get("/__api__/sources")
    _emit(state, value, _sources_table(value))


@list_.command("tokens")
@click.option("--expired", type=click.Choice(["yes", "no"]), help="Only expired, or unexpired.")
@click.option("--revoked", type=click.Choice(["yes", "no"]), help="Only revoked, or not revoked.")
@global_options
@pass_state
def list_tokens(state: State, expired: str | None, revoked: str | None) -> None:
    """List API tokens (never the tokens themselves)."""
    params = {k: v for k, v in (("expired", expired), ("revoked", revoked)) if v}
    value = state.api().get("/__api__/tokens", params)
    _emit(state, value, _tokens_table(value))


@list_.command("packages")
@click.option("--source", help="List the packages of this source...")
@click.option("--repo", help="...or those this repo serves.")
@click.option("--search", help="Only packages whose name contains this text.")
@click.option("--count", type=click.IntRange(min=1), help="Packages per page.")
@click.option("--page", type=click.IntRange(min=1), help="Which page (from 1).")
@global_options
@pass_state
def list_packages(state: State, source: str | None, repo: str | None, search: str | None,
                  count: int | None, page: int | None) -> None:
    """List the packages of a source or a repo: current version, every version."""
    if bool(source) == bool(repo):
        raise CliError("give exactly one of --source or --repo")
    path = (f"/__api__/sources/{segment(source)}/packages" if source
            else f"/__api__/repos/{segment(repo or '')}/packages")
    params = {k: str(v) for k, v in (("search", search), ("count", count), ("page", page))
              if v is not None}
    value = state.api().get(path, params)
    _emit(state, value, _packages_table(
        value, with_source=bool(repo), paginated=count is not None or page is not None))


@main.command()
@click.option("--source", required=True, help="The local or local-python source to add to.")
@click.option("--path", "paths", required=True, multiple=True, metavar="PATH[,PATH...]",
              help="Package files, or directories searched for them; comma-separated, "
                   "and the option may be repeated.")
@click.option("--replace", is_flag=True,
              help="Replace a package file already stored with different contents.")
@click.option("--dry-run", is_flag=True, help="List what would be sent, and send nothing.")
@global_options
@pass_state
def add(state: State, source: str, paths: tuple[str, ...], replace: bool,
        dry_run: bool) -> None:
    """Add package files to a source: wheels, sdists and R source packages.

    A file.asc beside a Python package is sent as its signature.
    """
    files = publish.split_paths(paths)
    api = state.api()
    info = api.get(f"/__api__/sources/{segment(source)}")
    kind = info.get("type") if isinstance(info, dict) else None
    if kind not in publish.PACKAGE_SUFFIXES:
        raise CliError(f"source '{source}' is of type {kind!r}: rspm add publishes to local "
                       "(R) and local-python sources")
    items = publish.find_packages(files, kind)
    reporter = publish.Reporter(sys.stdout, sys.stderr, json_mode=state.json,
                                progress=not dry_run and sys.stderr.isatty())
    results = publish.add_packages(api, source, items, replace=replace, dry_run=dry_run,
                                   reporter=reporter)
    counts = publish.summarize(results, dry_run=dry_run)
    if state.json:
        click.echo(json.dumps({"results": [r.to_json() for r in results], "summary": counts},
                              indent=2))
    else:
        click.echo(publish.summary_line(counts))
    if counts.get("failed"):
        click.get_current_context().exit(1)


@main.group()
@global_options
def remove() -> None:
    """Remove packages from a source."""


@remove.command("package")
@click.option("--source", required=True, help="The source to remove from.")
@click.option("--name", "spec", required=True, metavar="PKG@VERSION",
              help="PKG@all (every version), PKG@current (the current version) or "
                   "PKG@1.2.3 (that version).")
@click.option("--comment", default="", help="Why, for the record.")
@global_options
@pass_state
def remove_package(state: State, source: str, spec: str, comment: str) -> None:
    """Remove the files of some versions of a package."""
    name, at, version = spec.rpartition("@")
    if not (at and name and version):
        raise CliError(f"--name={spec} must say which versions to remove: "
                       "PKG@all, PKG@current or PKG@VERSION")
    value = state.api().post(f"/__api__/sources/{segment(source)}/packages/remove",
                             {"name": name, "version": version, "comment": comment})
    lines = [f"Removed package '{r['filename']}'" for r in value.get("removed") or []]
    _emit(state, value, "\n".join(lines) or f"Nothing removed: no file of {name}@{version}")


@main.command()
@click.option("--source", required=True, help="The source holding the package.")
@click.option("--name", required=True, help="The package whose files to archive.")
@global_options
@pass_state
def archive(state: State, source: str, name: str) -> None:
    """Archive the files of a package in a source."""
    value = state.api().post(f"/__api__/sources/{segment(source)}/packages/archive",
                             {"name": name})
    lines = [f"Archived package '{r['filename']}'" for r in value.get("archived") or []]
    _emit(state, value, "\n".join(lines) or f"Nothing archived: no file of {name}")


@main.group()
@global_options
def revoke() -> None:
    """Revoke an API token."""


@revoke.command("token")
@click.option("--guid", help="The token's GUID, as shown by 'rspm list tokens'.")
@click.option("--token", help="The token itself.")
@global_options
@pass_state
def revoke_token(state: State, guid: str | None, token: str | None) -> None:
    """Revoke a token at once, on every server sharing the database."""
    if bool(guid) == bool(token):
        raise CliError("give exactly one of --guid or --token")
    body = {"guid": guid} if guid else {"token": token}
    value = state.api().post("/__api__/tokens/revoke", body)
    _emit(state, value, f"Token {value['guid']} revoked at {_when(value['revoked'])}")


@main.group()
@global_options
def delete() -> None:
    """Delete a source."""


@delete.command("source")
@click.option("--name", required=True, help="The source to delete, with its packages.")
@global_options
@pass_state
def delete_source(state: State, name: str) -> None:
    """Delete a source, its packages and its subscriptions."""
    value = state.api().delete(f"/__api__/sources/{segment(name)}")
    _emit(state, value, f"Source '{value['name']}' deleted")
