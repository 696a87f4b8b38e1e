#!/usr/bin/env python3
"""Where a subtype's detection AUC is lost, on shift-suite cohorts (synthetic truth needed).

    python3 scripts/subtype_strata.py SUITE_DIR SUBTYPE COHORT [COHORT ...]

SUITE_DIR is a `hemorrhagenet shift-suite --out` folder. The named cohorts are pooled (their
studies are different patients). The script reads each cohort's `report/predictions.csv`
and its `cohort/labels_study.csv` and `cohort/facts.csv` (bleed volumes). For SUBTYPE
(epidural, subdural, subarachnoid, intraparenchymal, intraventricular) it prints the AUC
against three sets of negatives: every study without that subtype, non-bleeding studies
only, and studies that bleed elsewhere; then against the negatives that carry each other
subtype, by the subtype's volume, and for the subtype alone against the subtype with other
bleeds. All rows of predictions.csv (both halves of the suite's split) are used.
"""
import csv
import sys

OTHER = ["epidural", "subdural", "subarachnoid", "intraparenchymal", "intraventricular"]


def auc(pos, neg):
    """Mann-Whitney AUC, ties counted half."""
    if not pos or not neg:
        return float("nan")
    neg = sorted(neg)
    import bisect

    s = 0.0
    for p in pos:
        lo = bisect.bisect_left(neg, p)
        hi = bisect.bisect_right(neg, p)
        s += lo + 0.5 * (hi - lo)
    return s / (len(pos) * len(neg))


def rows(suite, cohort, subtype):
    base = f"{suite}/{cohort}"
    pred = {r["study_key"]: r for r in csv.DictReader(open(f"{base}/report/predictions.csv"))}
    facts = {r["study_id"]: r for r in csv.DictReader(open(f"{base}/cohort/facts.csv"))}
    labels = {r["study_id"]: r for r in csv.DictReader(open(f"{base}/cohort/labels_study.csv"))}
    for key, p in pred.items():
        l = labels[key]
        yield (
            float(p[subtype]),
            int(l[subtype]),
            float(facts[key][f"{subtype}_ml"]),
            int(l["any"]),
            sum(int(l[o]) for o in OTHER if o != subtype),
            [o for o in OTHER if o != subtype and l[o] == "1"],
        )


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    suite, subtype, cohorts = sys.argv[1], sys.argv[2], sys.argv[3:]
    if subtype not in OTHER:
        sys.exit(f"subtype {subtype!r}: one of {', '.join(OTHER)}")
    r = [x for c in cohorts for x in rows(suite, c, subtype)]
    pos = [x for x in r if x[1] == 1]
    neg = [x[0] for x in r if x[1] == 0]
    neg_clean = [x[0] for x in r if x[3] == 0]
    neg_other = [x[0] for x in r if x[3] == 1 and x[1] == 0]
    score = lambda xs: [x[0] for x in xs]
    print(f"{subtype} on {', '.join(cohorts)}: {len(pos)} positive, {len(neg)} negative studies")
    print(f"  AUC against every negative      {auc(score(pos), neg):.3f}")
    print(f"  against non-bleeding studies    {auc(score(pos), neg_clean):.3f} ({len(neg_clean)})")
    print(f"  against other bleeds only       {auc(score(pos), neg_other):.3f} ({len(neg_other)})")
    for o in OTHER:
        if o == subtype:
            continue
        n = [x[0] for x in r if x[1] == 0 and o in x[5]]
        print(f"  against studies with {o:<17} {auc(score(pos), n):.3f} ({len(n)})")
    for lo, hi in [(0, 2), (2, 5), (5, 15), (15, None)]:
        s = [x for x in pos if x[2] >= lo and (hi is None or x[2] < hi)]
        span = f"{lo}–{hi} mL" if hi else f"≥ {lo} mL"
        print(f"  {span:<10} n = {len(s):>3}  AUC {auc(score(s), neg):.3f}")
    alone = [x for x in pos if x[4] == 0]
    mixed = [x for x in pos if x[4] > 0]
    print(f"  alone       n = {len(alone):>3}  AUC {auc(score(alone), neg):.3f}")
    print(f"  with others n = {len(mixed):>3}  AUC {auc(score(mixed), neg):.3f}")


if __name__ == "__main__":
    main()
