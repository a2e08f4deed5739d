"""The run options table (kdclaims/options.py): every surface shows what the table declares, with one
help text per option; `kdclaims run` forwards its options to pytest from the table; the module is light."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from kdclaims.cli import main
from kdclaims.options import OPTIONS, PYTEST, RUN, forwarded_to_pytest, options_for

COMMANDS = ("run", "train", "plan")


def _help_of(output: str, name: str) -> str | None:
    """The help text printed for option ``name`` in a --help ``output`` (argparse's or click's layout), with
    its whitespace removed (the two wrap differently) and click's trailing [x>=1] / [default: ...] dropped."""
    lines = output.splitlines()
    for number, line in enumerate(lines):
        signature, *rest = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        if re.split(r"[ =,]", signature)[0] != name:
            continue
        indent = len(line) - len(line.lstrip())
        for follow in lines[number + 1:]:  # continuation lines are indented deeper than an option's line
            if not follow.strip() or len(follow) - len(follow.lstrip()) <= indent:
                break
            rest.append(follow.strip())
        text = re.sub(r"\s*\[(x>=|default:|required)[^\]]*\]$", "", " ".join(rest))
        return "".join(text.split())
    return None


@pytest.fixture(scope="module")
def help_outputs():
    outputs = {}
    for command in COMMANDS:
        done = CliRunner().invoke(main, [command, "--help"], terminal_width=70)
        assert done.exit_code == 0, done.output
        outputs[command] = done.output
    return outputs


def test_every_option_is_on_each_surface_it_claims_with_the_one_help_text(pytester, help_outputs):
    result = pytester.runpytest_subprocess("--help", "-p", "no:cacheprovider")
    assert result.ret == 0
    outputs = {PYTEST: result.stdout.str(), **help_outputs}
    for option in OPTIONS:
        assert option.surfaces and option.surfaces <= set(outputs), option.name
        expected = "".join(option.help.split())
        for surface, output in outputs.items():
            shown = _help_of(output, option.name)
            if surface in option.surfaces:
                assert shown == expected, (surface, option.name, shown)
            else:
                assert shown is None, (surface, option.name)  # each surface keeps its set of options
    # the case: one help text for --precision and --seeds on all four surfaces
    for name in ("--precision", "--seeds"):
        assert len({_help_of(output, name) for output in outputs.values()}) == 1, name


def test_the_help_extraction_reads_both_layouts():
    argparse_style = "group:\n  --seeds=SEEDS         five\n                        1-\n                        385\n  --x=X  y\n"
    click_style = "Options:\n  --concurrent-members K  one two\n                          three  [x>=1]\n  -h  help\n"
    assert _help_of(argparse_style, "--seeds") == "five1-385"
    assert _help_of(click_style, "--concurrent-members") == "onetwothree"
    assert _help_of(click_style, "--seeds") is None


def test_the_table_is_consistent():
    assert len({o.name for o in OPTIONS}) == len(OPTIONS)
    for option in OPTIONS:
        assert option.name.startswith("--") and option.help and "%" not in option.help  # argparse formats %
        assert option.default is None or option.choices is None or option.default in option.choices
        assert option.minimum is None or option.type is int
    assert all(PYTEST in o.surfaces for o in options_for(RUN))  # `kdclaims run` passes them on to pytest


def _sample(option) -> str:
    return option.choices[-1] if option.choices else {int: "3", float: "0.5"}.get(option.type, "value")


def test_kdclaims_run_forwards_every_run_option_from_the_table(monkeypatch):
    seen = []
    monkeypatch.setattr(pytest, "main", lambda args: seen.append(args) or 0)
    given = [arg for option in options_for(RUN)
             for arg in ((option.name,) if option.flag else (option.name, _sample(option)))]
    done = CliRunner().invoke(main, ["run", *given, "-n", "2", "-x"])
    assert done.exit_code == 0, done.output
    args = seen[0]
    assert args[0].endswith("catalogue") and args[-3:] == ["-n", "2", "-x"]
    for option in options_for(RUN):
        if option.flag:  # a switch is forwarded as itself, with no value
            assert option.name in args and args[args.index(option.name) + 1].startswith("-"), option.name
            continue
        assert args[args.index(option.name) + 1] == _sample(option), option.name
    # unset options reach pytest as the table's defaults, which are pytest's too
    CliRunner().invoke(main, ["run"])
    assert seen[1][1:] == forwarded_to_pytest({o.dest: o.default for o in OPTIONS})
    assert "--seeds" not in seen[1] and "--sequential" not in seen[1] and seen[1][seen[1].index("--profile") + 1] == "paper"


def test_run_refuses_an_option_below_its_minimum_before_pytest():
    done = CliRunner().invoke(main, ["run", "--concurrent-members", "0"])
    assert done.exit_code == 2 and "--concurrent-members" in done.output and "0" in done.output


def test_the_options_module_imports_nothing_heavy():
    heavy = ("torch", "pandas", "scipy", "matplotlib")
    code = ("import sys, kdclaims.options as o; o.click_options('train')(lambda **kw: None); "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
