"""``kdclaims plan``: what a run will cost before it starts.

Registered on the main command group by ``kdclaims/cli.py``; the work lives in ``kdclaims/plan.py``.
"""

from __future__ import annotations

import json
import sys

import click

from kdclaims.options import chosen_profile, click_options


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _hours(hours: float | None) -> str:
    return "?" if hours is None else f"{hours:,.2f}" if hours < 100 else f"{hours:,.0f}"


@click.command()
@click_options("plan")
@click.option("--per-member-seconds", type=float, default=None,
              help="use this time per member instead of the cached wall times or a measurement")
@click.option("--arch", "archs", multiple=True, help="only this architecture; repeatable (default: all)")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text",
              help="text (default) or json")
@click.option("--json", "as_json", is_flag=True, help="print the plan as JSON (the same as --format json)")
def plan(profile, seeds, precision, cache_dir, data_dir, device, concurrent_members, sequential, spending, looks,
         measure, device_tflops, per_member_seconds, archs, output_format, as_json):
    """Print what a run will cost before it starts: members to train and already cached, the estimated
    device-hours (from cached wall times, or a quick measurement with --measure), accelerator hours from
    the models' FLOPs at --device-tflops, and the cache's size on disk. Trains nothing unless --measure.
    With --sequential, also the group-sequential design (looks, efficacy boundaries, the futility rule)
    and its expected and maximum members and hours beside the fixed design's."""
    from rich.console import Console
    from rich.table import Table

    from kdclaims.architectures import get_architecture
    from kdclaims.plan import plan as make_plan

    prof = chosen_profile(profile, seeds, precision, looks, spending)
    for arch in archs:
        get_architecture(arch)  # a ConfigError naming the known ones
    result = make_plan(prof, cache_dir=cache_dir, data_dir=data_dir, archs=archs or None, device=device,
                       per_member_seconds=per_member_seconds, concurrent_members=concurrent_members,
                       measure=measure, device_tflops=device_tflops)
    if sequential:
        from kdclaims.plan import sequential_plan

        result.update(sequential=True, **sequential_plan(prof, result))
    if as_json or output_format == "json":
        click.echo(json.dumps(result, indent=2))
        return

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160, highlight=False)
    known = result["cached_known"]
    console.print(f"[bold]plan[/bold]: profile {result['profile']}, {result['seeds']} seeds per population, "
                  f"ten setups per architecture plus its teacher; cache {result['cache_dir']}")
    if result["data_note"]:
        console.print(f"[yellow]data missing[/yellow]: {result['data_note']}", soft_wrap=True)
        console.print("cached members are unknown until the data is there (counted as 0); times and sizes "
                      "below assume data of CIFAR-100's shape", soft_wrap=True)
    table = Table(show_lines=False)
    for name, justify in (("arch", "left"), ("members", "right"), ("cached", "right"), ("to train", "right"),
                          ("per member", "right"), ("device-hours", "right"), ("GPU per member", "right"),
                          ("GPU hours", "right"), ("new on disk", "right"),
                          ("time per member from", "left")):
        table.add_column(name, justify=justify)
    for row in result["rows"]:
        table.add_row(row["arch"], f"{row['total']:,}", f"{row['cached']:,}" if known else "unknown (0)",
                      f"{row['to_train']:,}", _duration(row["per_member_s"]), _hours(row["device_hours"]),
                      _duration(row["accelerator_per_member_s"]), _hours(row["accelerator_hours"]),
                      _size(row["new_bytes_estimate"]), row["per_member_source"])
    table.add_row("[bold]total[/bold]", f"{result['total']:,}", f"{result['cached']:,}" if known else "unknown (0)",
                  f"{result['to_train']:,}", "", _hours(result["device_hours"]),
                  "", _hours(result["accelerator_hours"]), _size(result["new_bytes_estimate"]), "", end_section=True)
    console.print(table)
    console.print(f"total: {result['to_train']:,} of {result['total']:,} members to train "
                  f"({result['cached']:,} cached{'' if known else ', unknown: no data'}), "
                  f"about {_hours(result['device_hours'])} device-hours on {result['device']}; "
                  f"cache on disk {_size(result['cache_bytes'])} now "
                  f"({result['cache_member_files']:,} member files, {_size(result['cache_member_bytes'])}), "
                  f"about {_size(result['cache_bytes_after_estimate'])} after the run", soft_wrap=True)
    console.print(f"GPU estimate: about {_hours(result['accelerator_hours'])} GPU-hours from the models' FLOPs "
                  f"(training = 3 x forward x images x epochs) at {result['device_tflops_assumption']}",
                  soft_wrap=True)
    if sequential:
        _print_sequential(console, result)


def _members(n) -> str:
    return "?" if n is None else f"{n:,.0f}"


def _print_sequential(console, result: dict) -> None:
    """The sequential design and its cost beside the fixed design's."""
    from rich.table import Table

    console.print(f"[bold]sequential design[/bold]: {result['spending_name']} error spending, one-sided alpha "
                  f"{result['alpha']:g}, {len(result['looks'])} looks", soft_wrap=True)
    looks = Table(show_lines=False)
    for name in ("look", "members per population", "information fraction", "efficacy boundary z"):
        looks.add_column(name, justify="right")
    for k, (n, t, z) in enumerate(zip(result["looks"], result["information_fractions"], result["efficacy_z"]), 1):
        looks.add_row(str(k), f"{n:,}", f"{t:.3f}", f"{z:.3f}")
    console.print(looks)
    console.print(f"futility / equivalence: {result['futility_rule']}", soft_wrap=True)
    cost = Table(show_lines=False)
    for name, justify in (("arch", "left"), ("expected members", "right"), ("max members", "right"),
                          ("fixed members", "right"), ("expected device-h", "right"), ("max device-h", "right"),
                          ("fixed device-h", "right"), ("expected GPU-h", "right"), ("max GPU-h", "right"),
                          ("fixed GPU-h", "right")):
        cost.add_column(name, justify=justify)
    rows = result["sequential_rows"] + [{"arch": "[bold]total[/bold]", **{
        k: result[k] for k in ("expected_members", "max_members", "fixed_members", "expected_device_hours",
                               "max_device_hours", "fixed_device_hours", "expected_accelerator_hours",
                               "max_accelerator_hours", "fixed_accelerator_hours")}}]
    for row in rows:
        cost.add_row(row["arch"], _members(row["expected_members"]), _members(row["max_members"]),
                     _members(row["fixed_members"]), _hours(row["expected_device_hours"]),
                     _hours(row["max_device_hours"]), _hours(row["fixed_device_hours"]),
                     _hours(row["expected_accelerator_hours"]), _hours(row["max_accelerator_hours"]),
                     _hours(row["fixed_accelerator_hours"]))
    console.print(cost)
    expected, fixed = result["expected_members"], result["fixed_members"]
    share = f" ({expected / fixed:.0%} of the fixed design)" if expected is not None and fixed else ""
    console.print(f"expected members: {_members(expected)}{share} ({result['expected_members_source']})",
                  soft_wrap=True)
