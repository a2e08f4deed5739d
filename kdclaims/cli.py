"""The ``kdclaims`` command line. Every subcommand has ``--help``.

Errors a user can fix are one line on stderr and exit code 2; ``kdclaims --debug ...`` shows the
traceback underneath.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import click

from kdclaims.errors import KdclaimsError
from kdclaims.options import chosen_profile, click_options, forwarded_to_pytest



class _Group(click.Group):
    """Turns a KdclaimsError into one line and a non-zero exit, unless --debug."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KdclaimsError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.echo(f"kdclaims: error: {exc}", err=True)
            if exc.__cause__ is not None and not (ctx.obj and ctx.obj.get("debug")):
                click.echo("  (run with --debug for the underlying cause)", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="show tracebacks for errors")
@click.pass_context
def main(ctx, debug):
    """Reproduce 'Knowledge Distillation: The Functional Perspective' as hypothesis tests."""
    ctx.ensure_object(dict)["debug"] = debug


# ---------------------------------------------------------------------------------------------
# run / train
# ---------------------------------------------------------------------------------------------


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click_options("run")
@click.option("-n", "workers", default=None, help="pytest-xdist workers (e.g. 2, or auto)")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def run(workers, pytest_args, **options):
    """Evaluate the shipped claims (runs pytest on them with these options; extra args go to pytest)."""
    import pytest

    from kdclaims.claims import CLAIMS_DIR

    args = [str(CLAIMS_DIR), *forwarded_to_pytest(options)]
    if workers:
        args += ["-n", str(workers)]
    sys.exit(pytest.main(args + list(pytest_args)))


@main.command()
@click.option("--arch", required=True, help="resnet18, vgg16_bn or vit")
@click.option("--setup", "setup_name", required=True, help="independent, kd, uniform_kd or gaussian_kd")
@click.option("--alpha", type=float, default=None, help="teacher weight of loss (1), in [0, 1]")
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click_options("train")
def train(arch, setup_name, alpha, temperature, profile, seeds, precision, cache_dir, data_dir, device, backend,
          address, gpus_per_member, concurrent_members, max_retries):
    """Train (or load from the cache) one population and print its accuracy."""
    import warnings

    from kdclaims.backends import get_backend
    from kdclaims.spec import PopulationSpec
    from kdclaims.population import PopulationIncomplete, Workbench

    prof = chosen_profile(profile, seeds, precision)
    spec = PopulationSpec(arch, setup_name, alpha, temperature)
    chosen = get_backend(backend, address=address, gpus_per_member=gpus_per_member, max_retries=max_retries)
    bench = Workbench(prof, cache_dir, data_dir, device, backend=chosen, concurrent_members=concurrent_members)
    bench.check_data()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PopulationIncomplete)  # said below, in the summary line
            pop = bench.population(spec)
    except KeyboardInterrupt:
        if chosen.name == "local":  # the ray backend has said what finished, what was cancelled and what was left
            click.echo(f"kdclaims: interrupted; finished members are in the cache {bench.cache.root}: run the same "
                       "command again to resume", err=True)
        sys.exit(130)
    acc = pop.test_accuracy
    spread = f" ± {acc.std():.4f}" if pop.n > 1 else " (one member: no std)"
    click.echo(f"{spec.name}: {pop.n} members ({pop.trained_now} trained now), test accuracy "
               f"{acc.mean():.4f}{spread}; cache {bench.cache.root}")
    if pop.failed_seeds:
        seed = pop.failed_seeds[0]
        click.echo(f"kdclaims: warning: {len(pop.failed_seeds)} member(s) failed after retries and were left out: "
                   f"seeds {', '.join(map(str, pop.failed_seeds))} (seed {seed}: {pop.failures[seed]}); run the "
                   "same command again to retry them", err=True)
        sys.exit(1)


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


REPORT_FORMATS = {"markdown": ".md", "html": ".html", "json": ".json", "table": None, "csv": ".csv"}


@main.command()
@click.option("--format", "fmt", type=click.Choice(list(REPORT_FORMATS)), default="markdown", show_default=True)
@click.option("--evaluation", type=click.Path(dir_okay=False), default=None,
              help="evaluation JSON (default: latest.json in the results dir)")
@click.option("--results-dir", default=None, help="default $KDCLAIMS_RESULTS_DIR or <cache>/evaluations")
@click.option("--cache-dir", default=None, help="cache whose evaluations to read")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="output file (default reports/<profile>-<evidence>.<ext>; '-' for stdout)")
@click.option("--run", "run_id", default=None, metavar="ID",
              help="report this saved run alone (its file name in the results dir, without .json); default: the "
                   "latest result of each claim across the runs of the latest run's profile, evidence and code version")
@click.option("--compare", nargs=2, type=click.Path(exists=True, dir_okay=False), default=None,
              metavar="A.json B.json", help="show which verdicts changed between two evaluations or JSON reports")
def report(fmt, evaluation, results_dir, cache_dir, output, run_id, compare):
    """Write the reproduction report from the last evaluation (trains nothing, reads no cache entry).

    markdown writes figures as PNG beside it; html embeds them in one file; json follows
    kdclaims/schemas/report-v1.schema.json; table prints to the terminal; csv writes one row per
    claim (and a -members.csv with one row per trained member; after --sequential, a -looks.csv with
    one row per look of each claim).
    """
    import json as jsonlib

    from kdclaims.render.document import build_document
    from kdclaims.paths import default_results_dir
    from kdclaims.results import jsonable, load_evaluation, load_run, merged_evaluation, single_run

    if compare:
        from kdclaims.render.markdown import compare_markdown

        runs = [jsonlib.loads(Path(p).read_text()) for p in compare]
        text = compare_markdown(runs[0], runs[1], compare[0], compare[1])
        _emit(text, None if output in (None, "-") else Path(output), None)
        return
    results_dir = results_dir or default_results_dir(cache_dir)
    if run_id and evaluation:
        raise KdclaimsError("give either --run or --evaluation, not both")
    if run_id:
        payload = single_run(load_run(run_id, results_dir))
    elif evaluation:  # a file named by the user: that run alone
        payload = single_run(load_evaluation(evaluation))
    else:
        payload = merged_evaluation(load_evaluation(None, results_dir), results_dir)
    document = build_document(payload)
    stem = f"{payload['profile']['name']}-{payload['evidence']}"
    path = None if output == "-" else Path(output) if output else (
        Path("reports") / f"{stem}{REPORT_FORMATS[fmt]}" if REPORT_FORMATS[fmt] else None)
    if fmt == "table":
        from kdclaims.render.terminal import print_table

        print_table(document)
        return
    if fmt == "json":
        text = jsonlib.dumps(jsonable(document), indent=1, allow_nan=False)
    elif fmt == "csv":
        from kdclaims.render.csvfile import claims_csv, looks_csv, members_csv

        text = claims_csv(document)
        if path is not None:
            members = path.with_name(path.stem + "-members.csv")
            members.parent.mkdir(parents=True, exist_ok=True)
            members.write_text(members_csv(document))
            looks = looks_csv(document)  # --sequential: one row per look of each claim
            if looks is not None:
                path.with_name(path.stem + "-looks.csv").write_text(looks)
    elif fmt == "html":
        from kdclaims.render.figures import archs_with_members, figure_png_bytes
        from kdclaims.render.html import render_html

        text = render_html(document, {arch: figure_png_bytes(document, arch) for arch in archs_with_members(document)})
    else:
        from kdclaims.render.figures import archs_with_members, make_figures
        from kdclaims.render.markdown import markdown_report

        figures = {}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            pngs = make_figures(document, path.parent, prefix=f"{path.stem}-figure")
            figures = {arch: png.name for arch, png in zip(archs_with_members(document), pngs)}
        text = markdown_report(document, figures)
    head = document["headline"]
    source = payload["_path"] if payload["selection"]["mode"] == "run" else \
        f"{len(payload['selection']['runs'])} run(s) in {results_dir}"
    _emit(text, None if output == "-" else path, f"{head['total']} of {head['catalogue']} claims evaluated, from {source}")


def _emit(text: str, path: Path | None, what: str | None) -> None:
    if path is None:
        click.echo(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    click.echo(f"wrote {path}" + (f" ({what})" if what else ""))


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


@main.group()
def data():
    """Get, verify or generate CIFAR-100 archives."""


@data.command()
@click.option("--data-dir", default=None, help="default $KDCLAIMS_DATA_DIR or <cache>/data")
def fetch(data_dir):
    """Download CIFAR-100 (python version) from its official address and verify its MD5."""
    from kdclaims import data as datamod
    from kdclaims.paths import default_data_dir

    target = Path(data_dir).expanduser() if data_dir else default_data_dir()
    target.mkdir(parents=True, exist_ok=True)
    path = datamod.fetch(target)
    click.echo(f"CIFAR-100 ready at {path}")


@data.command()
@click.argument("path", type=click.Path())
@click.option("--md5", default=None, help="expected archive MD5 (default: a .md5 file beside it, else the official one)")
def verify(path, md5):
    """Load an archive or extracted folder through the reader and print what it holds."""
    from kdclaims import data as datamod

    summary = datamod.verify(path, expected_md5=md5)
    for key, value in summary.items():
        click.echo(f"{key}: {value}")
    for split in ("train", "test"):
        empty = summary[split]["empty_classes"]
        click.echo(f"{split}: {summary['num_classes'] - len(empty)} of {summary['num_classes']} classes have images"
                   + (f"; EMPTY classes ({len(empty)}): {', '.join(map(str, empty[:20]))}"
                      + (" ..." if len(empty) > 20 else "") if empty else ""))


@data.command()
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--num-classes", default=10, show_default=True)
@click.option("--train-per-class", default=160, show_default=True)
@click.option("--test-per-class", default=40, show_default=True)
@click.option("--seed", default=0, show_default=True)
def synth(dest, num_classes, train_per_class, test_per_class, seed):
    """Write a synthetic dataset in CIFAR-100's exact on-disk format (as the smoke profile uses)."""
    from kdclaims import data as datamod

    path = datamod.write_synthetic_cifar100(dest, num_classes=num_classes, train_per_class=train_per_class,
                                            test_per_class=test_per_class, seed=seed)
    click.echo(f"wrote {path}")


# ---------------------------------------------------------------------------------------------
# claims
# ---------------------------------------------------------------------------------------------


@main.group()
def claims():
    """List or validate the declarative claims."""


@claims.command("list")
@click.option("--arch", default=None, help="only this architecture")
@click.option("--kind", default=None, help="only this claim kind")
@click.option("--group", default=None, help="only this group")
@click.option("--long", "long_", is_flag=True, help="every field of each claim (default: one line per claim)")
def list_claims(arch, kind, group, long_):
    """Show the claims (filtered by architecture, kind or group): one line each, the id never cut.

    Select a group under pytest with its marker, as the group is written: `pytest claims/ -m
    group_vit-kd-vs-uniform` (the underscored form, group_vit_kd_vs_uniform, works too)."""
    import difflib

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from kdclaims.claims import load_claims

    catalogue = load_claims()
    for flag, value, field in (("--arch", arch, "arch"), ("--kind", kind, "kind"), ("--group", group, "group")):
        known = sorted({getattr(c, field) for c in catalogue})
        if value is not None and value not in known:
            close = difflib.get_close_matches(value, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise KdclaimsError(f"kdclaims claims list {flag} {value!r}: no such {field}{hint}; "
                                f"choose one of {', '.join(known)}")
    selected = [c for c in catalogue
                if (arch is None or c.arch == arch) and (kind is None or c.kind == kind)
                and (group is None or c.group == group)]
    console = Console()
    if long_:
        for c in selected:
            console.print(Text(c.id, style="bold"))
            for label, value in (("arch", c.arch), ("kind", c.kind), ("group", c.group),
                                 ("marker", f"-m group_{c.group}"), ("source", c.source),
                                 ("paper", c.paper.outcome), ("sentence", c.sentence)):
                console.print(Text(f"  {label + ':':<9} {value}"))
        console.print(f"{len(selected)} claims")
        return
    # One line per claim: the id is what users paste into -k, so it is never wrapped nor cut; the
    # sentence is what gives way (`--long` prints it whole).
    columns = [("id", [c.id for c in selected])]
    if console.width >= 120:  # narrower: the sentence needs the room more than kind and source
        columns += [("kind", [c.kind for c in selected]), ("source", [c.source[:14] for c in selected])]
    widths = [max([len(name)] + [len(v) for v in values]) for name, values in columns]
    table = Table(title=f"{len(selected)} claims", box=None, pad_edge=False, show_edge=False)
    for (name, _), width in zip(columns, widths):
        table.add_column(name, width=width, min_width=width, no_wrap=True, overflow="ellipsis")
    table.add_column("sentence", width=max(10, console.width - sum(widths) - 2 * len(widths) - 1),
                     no_wrap=True, overflow="ellipsis")
    for i, c in enumerate(selected):
        table.add_row(*(Text(values[i]) for _, values in columns), Text(c.sentence))
    console.print(table)


@claims.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
def validate_claims(paths):
    """Parse and check every claim without training anything."""
    from kdclaims.claims import load_claims

    errors: list[str] = []
    loaded = load_claims(list(paths) or None, errors)
    if len(errors) == 1:  # one error: the usual one line
        raise KdclaimsError(errors[0])
    if errors:  # every error, not only the first: a user fixes them in one pass
        for error in errors:
            click.echo(f"kdclaims: error: {error}", err=True)
        click.echo(f"kdclaims claims validate: {len(errors)} error(s); {len(loaded)} claims are valid", err=True)
        sys.exit(2)
    groups = sorted({c.group for c in loaded})
    click.echo(f"{len(loaded)} claims in {len(groups)} groups are valid")


# ---------------------------------------------------------------------------------------------
# audit-paper
# ---------------------------------------------------------------------------------------------


@main.command("audit-paper")
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="write the audit to this file (default: stdout)")
def audit_paper(fmt, output):
    """Audit the paper against its own numbers (trains nothing): every p-value of Tables 4-8
    recomputed from Tables 1-3 beside the printed one, and every claim checked against the tables."""
    import json

    if fmt == "json":
        from kdclaims.audit import audit_json

        text = json.dumps(audit_json(), indent=2, ensure_ascii=False, allow_nan=False)
    else:
        from kdclaims.render.markdown import audit_markdown

        text = audit_markdown()
    if output is None or output == "-":
        click.echo(text)
        return
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    click.echo(f"wrote {path} ({fmt})")


from kdclaims.cli_cache import cache as _cache_group  # noqa: E402
from kdclaims.cli_plan import plan as _plan_command  # noqa: E402
from kdclaims.cli_profiles import profiles as _profiles_group  # noqa: E402

main.add_command(_cache_group)
main.add_command(_plan_command)
main.add_command(_profiles_group)

if __name__ == "__main__":
    main()
