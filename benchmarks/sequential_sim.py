"""Group-sequential design (issue #19) on a generic simulated comparison, against the fixed design.

Each trial draws two populations of normal members (baseline sd 1, treatment sd ``--sd-ratio``),
``--n`` members each (385 in the paper), looked at after ``--looks`` members per population. The
treatment's true improvement in the H_a direction is the standardised ``effect`` (in baseline sds).
At each look the statistic is Welch's t on the z scale (``--statistic welch``, the default) or the
paper's z (``--statistic z``). For every effect and spending function it prints:

* reject-expected claims: the sequential rejection rate, the fixed 385-member test's rejection rate
  (same data, the final look's members), how often the two verdicts agree, and the expected
  members per population as a fraction of the fixed design (both populations stop together);
* retain-expected claims (equivalence stop at ``--margin``): how often the claim is reproduced
  (H0 retained and the upper bound below the margin) sequentially and by the fixed design (97.5%
  bound), their agreement and the expected members;
* at effect 0 the sequential type-I error with its Monte-Carlo standard error; at effect = margin
  the rate of falsely shown equivalence.

    python benchmarks/sequential_sim.py                          # 20,000 trials per effect (~20 s)
    python benchmarks/sequential_sim.py --statistic z --sd-ratio 3

This simulates the design on one generic comparison; the shipped catalogue's claims, through the
engine `--sequential` runs, are simulated by benchmarks/sequential_catalogue_sim.py.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from kdclaims.sequential import (  # noqa: E402
    ALPHA,
    PAPER_LOOKS,
    sequential_decisions,
    simulate_looks,
    z_from_t,
)


def _fixed_verdicts(favour, se, df, margin):
    """The fixed design on the final look's members: rejection, and the reproduced retained H0."""
    from scipy.special import ndtri, stdtrit

    z_crit = -ndtri(ALPHA)
    if df is None:
        z, q = favour / se, z_crit
    else:
        z, q = z_from_t(favour / se, df), stdtrit(df, 1.0 - ALPHA)
    reject = z > z_crit
    return reject, ~reject & (favour + q * se < margin)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=2019)
    parser.add_argument("--looks", default=",".join(map(str, PAPER_LOOKS)), help="members per population at each look")
    parser.add_argument("--effects", default="0,0.1,0.2,0.3,0.5", help="standardised true improvements")
    parser.add_argument("--margin", type=float, default=0.3, help="equivalence margin of retain claims (baseline sds)")
    parser.add_argument("--sd-ratio", type=float, default=1.0, help="treatment sd / baseline sd")
    parser.add_argument("--statistic", choices=("welch", "z"), default="welch")
    args = parser.parse_args(argv)

    looks = np.array([int(x) for x in args.looks.split(",")])
    fractions = looks / looks[-1]
    effects = [float(x) for x in args.effects.split(",")]
    if args.margin not in effects:
        effects.append(args.margin)
    import scipy

    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; numpy {np.__version__}, scipy {scipy.__version__}")
    print(f"# python benchmarks/sequential_sim.py {shlex.join(argv if argv is not None else sys.argv[1:])}")
    print(f"# looks {looks.tolist()} per population, {args.trials} trials per effect, sd ratio {args.sd_ratio:g}, "
          f"statistic {args.statistic}, alpha {ALPHA} one-sided, retain margin {args.margin:g}")
    header = (f"{'effect':>6} {'spending':>8} | {'P(rej) seq':>10} {'fixed':>6} {'agree':>6} {'members':>7} | "
              f"{'P(repr) seq':>11} {'fixed':>6} {'agree':>6} {'members':>7}")
    print(header)
    print("-" * len(header))
    notes = []
    for i, effect in enumerate(effects):
        rng = np.random.default_rng([args.seed, i])
        favour, se, df = simulate_looks(rng, args.trials, looks, effect=effect, sd_treatment=args.sd_ratio)
        if args.statistic == "z":
            df = None
        fixed_reject, fixed_reproduced = _fixed_verdicts(favour[:, -1], se[:, -1], None if df is None else df[:, -1],
                                                         args.margin)
        for spending in ("obf", "pocock"):
            rej = sequential_decisions(favour, se, fractions, df=df, spending=spending)
            ret = sequential_decisions(favour, se, fractions, df=df, spending=spending, expected="retain",
                                       margin=args.margin)
            reproduced = ~ret.reject & ret.equivalence_shown
            members_rej = looks[rej.stop_look].mean() / looks[-1]
            members_ret = looks[ret.stop_look].mean() / looks[-1]
            print(f"{effect:>6g} {spending:>8} | {rej.reject.mean():>10.4f} {fixed_reject.mean():>6.4f} "
                  f"{(rej.reject == fixed_reject).mean():>6.4f} {members_rej:>7.3f} | "
                  f"{reproduced.mean():>11.4f} {fixed_reproduced.mean():>6.4f} "
                  f"{(reproduced == fixed_reproduced).mean():>6.4f} {members_ret:>7.3f}")
            mc = lambda p: np.sqrt(p * (1 - p) / args.trials)  # noqa: E731
            if effect == 0:
                p = rej.reject.mean()
                notes.append(f"type-I error, {spending}: {p:.4f} +- {mc(p):.4f} (MC se); fixed test {fixed_reject.mean():.4f}")
            if effect == args.margin:
                p = ret.equivalence_shown.mean()
                notes.append(f"equivalence falsely shown at effect = margin, {spending}: {p:.4f} +- {mc(p):.4f}; "
                             f"fixed design {fixed_reproduced.mean():.4f}")
    print()
    for line in notes:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
