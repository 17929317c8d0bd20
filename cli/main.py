"""``rspm``: administer a Package Manager server.

On the server it talks to the running process over the admin unix socket found
through the configuration file; elsewhere, with ``PACKAGEMANAGER_ADDRESS`` and
``PACKAGEMANAGER_TOKEN`` set, it talks HTTP with that token.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import click

from cli.client import ApiClient, CliError, Target, run
from pm import __version__
from pm.config import load_config
from pm.errors import ConfigError

DEFAULT_CONFIG = "/etc/rstudio-pm/rstudio-pm.gcfg"
TOKEN_NOTICE = (
    "Generated an access token. Be sure to record this token immediately since you "
    "will not be able to retrieve it later."
)


class Context:
    def __init__(self, config: str | None, output_format: str) -> None:
        self.config = config
        self.output_format = output_format

    def target(self) -> Target:
        address = os.environ.get("PACKAGEMANAGER_ADDRESS")
        if address:
            token = os.environ.get("PACKAGEMANAGER_TOKEN")
            if not token:
                raise CliError("PACKAGEMANAGER_ADDRESS is set but PACKAGEMANAGER_TOKEN is not")
            return Target(address=address, token=token)
        path = self.config or os.environ.get("PACKAGEMANAGER_CONFIG") or DEFAULT_CONFIG
        try:
            config = load_config(path)
        except ConfigError as e:
            raise CliError(
                f"{e.message} (the configuration file tells rspm where the server's admin "
                f"socket is: pass --config or set PACKAGEMANAGER_CONFIG)"
            ) from None
        return Target(socket=config.socket_path)

    def call(self, work: Callable[[ApiClient], Awaitable[Any]]) -> Any:
        target = self.target()
        return run(lambda reactor: work(ApiClient.for_target(reactor, target)))

    @property
    def json(self) -> bool:
        return self.output_format == "json"


pass_context = click.make_pass_decorator(Context)


def _when(value: float | None, none: str = "never") -> str:
    if value is None:
        return none
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return "(none)"
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _emit(ctx: Context, value: Any, text: str) -> None:
    click.echo(json.dumps(value, indent=2) if ctx.json else text)


def _sources_table(sources: list[dict[str, Any]]) -> str:
    return _table(("name", "type", "guid", "created"),
                  [(s["name"], s["type"], s["guid"], _when(s["created"])) for s in sources])


def _repos_table(repos: list[dict[str, Any]]) -> str:
    return _table(
        ("name", "type", "sources", "description"),
        [(r["name"], r["type"], ", ".join(r["sources"]) or "-", r["description"]) for r in repos],
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


class _Group(click.Group):
    """Turns CliError into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="rspm")
@click.option("--config", metavar="PATH",
              help="Server configuration file (default: $PACKAGEMANAGER_CONFIG, "
                   f"else {DEFAULT_CONFIG}).")
@click.option("--output-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Tables for people, JSON for scripts.")
@click.pass_context
def main(ctx: click.Context, config: str | None, output_format: str) -> None:
    """Administer a Package Manager server."""
    ctx.obj = Context(config, output_format)


@main.command()
@pass_context
def status(ctx: Context) -> None:
    """Show the server's version, database and uptime."""
    value = ctx.call(lambda api: api.get("/__api__/status"))
    _emit(ctx, value, "\n".join(f"{k}: {v}" for k, v in value.items()))


@main.group()
def create() -> None:
    """Create a source, a repo or an API token."""


@create.command("source")
@click.option("--name", required=True, help="Name of the new source.")
@click.option("--type", "type_", required=True, metavar="TYPE",
              help="local-python (Python packages) or local (R packages).")
@pass_context
def create_source(ctx: Context, name: str, type_: str) -> None:
    """Create a local source that packages are published to."""
    value = ctx.call(lambda api: api.post("/__api__/sources", {"name": name, "type": type_}))
    _emit(ctx, value, f"Source '{value['name']}' ({value['type']}) created: {value['guid']}")


@create.command("repo")
@click.option("--name", required=True, help="Name of the new repo.")
@click.option("--type", "type_", required=True, metavar="TYPE", help="python or r.")
@click.option("--description", default="", help="What the repo is for.")
@pass_context
def create_repo(ctx: Context, name: str, type_: str, description: str) -> None:
    """Create a repo that clients install from."""
    value = ctx.call(lambda api: api.post(
        "/__api__/repos", {"name": name, "type": type_, "description": description}))
    _emit(ctx, value, f"Repo '{value['name']}' ({value['type']}) created: {value['guid']}")


@create.command("token")
@click.option("--description", default="", help="What the token is for.")
@click.option("--sources", default="", help="Comma-separated source names, or '*'.")
@click.option("--repos", default="", help="Comma-separated repo names, or '*' (repos:read).")
@click.option("--expires", default="never", show_default=True,
              help="Lifetime: <n>s, <n>m, <n>h, <n>d, or never.")
@click.option("--scope", default="sources:write", show_default=True,
              help="sources:write, repos:read or global:admin.")
@click.option("--quiet", is_flag=True, help="Print only the token.")
@pass_context
def create_token(ctx: Context, description: str, sources: str, repos: str, expires: str,
                 scope: str, quiet: bool) -> None:
    """Create an API token for remote publishing or administration."""
    value = ctx.call(lambda api: api.post("/__api__/tokens", {
        "description": description, "sources": sources, "repos": repos,
        "expires": expires, "scope": scope,
    }))
    if ctx.json and not quiet:
        click.echo(json.dumps(value, indent=2))
        return
    if not quiet:
        click.echo(TOKEN_NOTICE, err=True)
    click.echo(value["token"])


@main.command()
@click.option("--repo", required=True, help="The repo that should serve the source.")
@click.option("--source", required=True, help="The source to add, after existing ones.")
@pass_context
def subscribe(ctx: Context, repo: str, source: str) -> None:
    """Subscribe a repo to a source (earlier subscriptions take precedence)."""
    value = ctx.call(lambda api: api.post(f"/__api__/repos/{repo}/subscriptions",
                                          {"source": source}))
    _emit(ctx, value, f"Repo '{value['name']}' now serves: {', '.join(value['sources'])}")


@main.group("list", invoke_without_command=True)
@click.pass_context
def list_(click_ctx: click.Context) -> None:
    """List repos (the default), sources or tokens."""
    if click_ctx.invoked_subcommand is None:
        click_ctx.invoke(list_repos)


@list_.command("repos")
@pass_context
def list_repos(ctx: Context) -> None:
    """List repos and the sources each serves, in order."""
    value = ctx.call(lambda api: api.get("/__api__/repos"))
    _emit(ctx, value, _repos_table(value))


@list_.command("sources")
@pass_context
def list_sources(ctx: Context) -> None:
    """List sources."""
    value = ctx.call(lambda api: api.get("/__api__/sources"))
    _emit(ctx, value, _sources_table(value))


@list_.command("tokens")
@click.option("--expired", type=click.Choice(["yes", "no"]), help="Only expired, or unexpired.")
@click.option("--revoked", type=click.Choice(["yes", "no"]), help="Only revoked, or not revoked.")
@pass_context
def list_tokens(ctx: Context, expired: str | None, revoked: str | None) -> None:
    """List API tokens (never the tokens themselves)."""
    params = {k: v for k, v in (("expired", expired), ("revoked", revoked)) if v}
    value = ctx.call(lambda api: api.get("/__api__/tokens", params))
    _emit(ctx, value, _tokens_table(value))


@main.group()
def revoke() -> None:
    """Revoke an API token."""


@revoke.command("token")
@click.option("--guid", help="The token's GUID, as shown by 'rspm list tokens'.")
@click.option("--token", help="The token itself.")
@pass_context
def revoke_token(ctx: Context, guid: str | None, token: str | None) -> None:
    """Revoke a token at once, on every server sharing the database."""
    if bool(guid) == bool(token):
        raise CliError("give exactly one of --guid or --token")
    body = {"guid": guid} if guid else {"token": token}
    value = ctx.call(lambda api: api.post("/__api__/tokens/revoke", body))
    _emit(ctx, value, f"Token {value['guid']} revoked at {_when(value['revoked'])}")


@main.group()
def delete() -> None:
    """Delete a source."""


@delete.command("source")
@click.option("--name", required=True, help="The source to delete, with its packages.")
@pass_context
def delete_source(ctx: Context, name: str) -> None:
    """Delete a source, its packages and its subscriptions."""
    value = ctx.call(lambda api: api.delete(f"/__api__/sources/{name}"))
    _emit(ctx, value, f"Source '{value['name']}' deleted")
