"""``kdclaims cache``: verify, describe, clean, export and import the member cache.

Registered on the main command group by ``kdclaims/cli.py``; errors are ``KdclaimsError`` lines like
every other command's. The work itself lives in ``kdclaims/cache.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

CACHE_DIR_HELP = "member cache directory (default $KDCLAIMS_CACHE_DIR, else ~/.cache/kdclaims)"


def _cache(cache_dir: str | None):
    from kdclaims.cache import Cache
    from kdclaims.paths import default_cache_dir

    return Cache(Path(cache_dir).expanduser() if cache_dir else default_cache_dir())


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


@click.group()
def cache():
    """Verify, describe, clean, export or import the member cache."""


@cache.command()
@click.option("--cache-dir", default=None, help=CACHE_DIR_HELP)
def verify(cache_dir):
    """Read every entry and checkpoint in full and check its checksums and key; exit 1 if any is bad."""
    from kdclaims.cache import verify_cache

    c = _cache(cache_dir)
    report = verify_cache(c)
    click.echo(f"{c.root}: {len(report.good)} entries good, {len(report.bad)} bad; "
               f"{len(report.checkpoints_good)} checkpoints good, {len(report.checkpoints_bad)} bad")
    for path, reason in report.bad + report.checkpoints_bad:
        click.echo(f"BAD {path}: {reason}")
    if report.good:
        click.echo(f"note: {report.unchecked}")
    if report.bad or report.checkpoints_bad:
        click.echo("a run never uses a bad entry: it moves it to quarantine/ and retrains that member", err=True)
        sys.exit(1)


@cache.command()
@click.option("--cache-dir", default=None, help=CACHE_DIR_HELP)
def info(cache_dir):
    """How many entries, how big, and of which profiles, architectures, setups and populations."""
    from kdclaims.cache import cache_info

    c = _cache(cache_dir)
    data = cache_info(c)
    click.echo(f"cache {data['root']}")
    click.echo(f"entries: {data['entries']} ({_size(data['bytes'])})")
    for field in ("profile", "arch", "setup", "population"):
        counts = data["by"][field]
        if counts:
            click.echo(f"  by {field}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    stale = {k: v for k, v in data["by"]["schema"].items() if k != data["current_schema"]}
    if stale:
        click.echo("  of an old schema (gc removes them): " + ", ".join(f"{k} {v}" for k, v in stale.items()))
    if data["unreadable_metadata"]:
        click.echo(f"  unreadable: {data['unreadable_metadata']} (run `kdclaims cache verify`)")
    for field, label in (("checkpoints", "checkpoints (members in flight)"), ("quarantine", "quarantine"),
                         ("tmp_leftovers", "temporary leftovers"),
                         ("dataset_summaries", "dataset summaries (rewritten by a full load when deleted)")):
        click.echo(f"{label}: {data[field]['count']} ({_size(data[field]['bytes'])})")


@cache.command()
@click.option("--cache-dir", default=None, help=CACHE_DIR_HELP)
@click.option("--dry-run", is_flag=True, help="list what would be removed, remove nothing")
def gc(cache_dir, dry_run):
    """Remove temporary leftovers, checkpoints of stored members, quarantined files and entries of an old
    cache schema (no current config uses them). Files a live process is using are kept."""
    from kdclaims.cache import gc_plan, gc_remove

    c = _cache(cache_dir)
    remove, busy = gc_plan(c)
    verb = "would remove" if dry_run else "removing"
    for item in remove:
        click.echo(f"{verb} {item.path} ({item.reason})")
    for item in busy:
        click.echo(f"keeping {item.path} ({item.reason}, but a live process holds its lock)")
    freed = sum(i.size for i in remove) if dry_run else gc_remove(remove)
    click.echo(f"{'would free' if dry_run else 'freed'} {_size(freed)} in {len(remove)} item(s)")


@cache.command("export")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--population", "populations", multiple=True,
              help="only this population (e.g. vit/kd-a0.9), with its teacher; repeatable (default: everything)")
@click.option("--cache-dir", default=None, help=CACHE_DIR_HELP)
@click.option("--sign", "sign_keyfile", default=None, type=click.Path(dir_okay=False), metavar="KEYFILE",
              help="sign the manifest with an HMAC-SHA-256 under the raw bytes of KEYFILE (16 or more random "
                   "bytes), for `cache import --require-signature KEYFILE`")
def export_command(out, populations, cache_dir, sign_keyfile):
    """Write cache entries and a manifest of their SHA-256s into one .tar.gz, to share a population."""
    from kdclaims.cache import export_cache, read_signing_key

    key = read_signing_key(sign_keyfile) if sign_keyfile else None
    done = export_cache(_cache(cache_dir), out, tuple(populations), sign_with=key)
    click.echo(f"wrote {done['path']}: {done['entries']} entries, {_size(done['bytes'])}"
               + (f", signed with {sign_keyfile}" if done["signed"] else ""))


@cache.command("import")
@click.argument("archive", type=click.Path(dir_okay=False))
@click.option("--cache-dir", default=None, help=CACHE_DIR_HELP)
@click.option("--require-signature", "keyfile", default=None, type=click.Path(dir_okay=False), metavar="KEYFILE",
              help="refuse the archive unless `cache export --sign KEYFILE` signed it with this key")
def import_command(archive, cache_dir, keyfile):
    """Verify an exported archive completely and add its entries to the cache (all or nothing)."""
    from kdclaims.cache import import_archive, read_signing_key

    c = _cache(cache_dir)
    key = read_signing_key(keyfile) if keyfile else None
    counts = import_archive(c, archive, require_signature=key)
    click.echo(f"imported {counts['imported']} entries into {c.root} ({counts['already_present']} already there"
               + (f", {counts['replaced_corrupt']} corrupt ones replaced" if counts["replaced_corrupt"] else "") + ")")
