"""``kdclaims profiles list|show``: the shipped profiles, and what any profile file sets."""

from __future__ import annotations

import click


@click.group()
def profiles():
    """List the shipped profiles or show one (a name or a profile file)."""


@profiles.command("list")
def list_profiles():
    """The shipped profiles: name, kind (reproduction or machinery check), seeds, dataset."""
    from kdclaims.profiles import PROFILES

    for name, profile in PROFILES.items():
        click.echo(f"{name:<10} {profile.kind:<16} {len(profile.seeds):>4} seeds  {profile.dataset.kind:<10} "
                   f"{profile.description}")


@profiles.command("show")
@click.argument("name_or_path")
def show_profile(name_or_path):
    """Everything a profile sets, and where it departs from the paper's experiment."""
    import json

    from kdclaims.options import chosen_profile

    profile = chosen_profile(name_or_path)
    settings = profile.as_dict()
    differences = settings.pop("differences_from_paper")
    for key, value in settings.items():
        click.echo(f"{key}: {json.dumps(value, default=str) if isinstance(value, (dict, list)) else value}")
    if differences:
        click.echo("differs from the paper:")
        for row in differences:
            click.echo(f"  {row['setting']}: {row['value']} (paper: {row['paper']})")
