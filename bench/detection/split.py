#!/usr/bin/env python3
"""Splits the SpamAssassin public corpus into a training half and a test half, the same way on
every machine and every run.

The split is stratified by group: within each group (easy-ham-1, easy-ham-2, hard-ham-1,
spam-1, spam-2) the files are sorted by the MD5 hex digest of their bytes (ties broken by file
name), and positions 0, 2, 4, ... go to the training half, 1, 3, 5, ... to the test half. Sorting
by content rather than by name keeps the corpus's own numbering (which follows arrival time and
sender) from putting whole runs of similar messages on one side.

Usage:
    split.py CORPUS_DIR OUTDIR      writes OUTDIR/train.txt and OUTDIR/test.txt
    split.py --check CORPUS_DIR     checks that the split is stratified and disjoint, exit 1 if not

Each output line is `<label>\t<group>\t<path>`, label `spam` or `ham`, path CORPUS_DIR/group/file
as given on the command line (absolute if CORPUS_DIR is). Python 3 standard library only.
"""

import hashlib
import os
import sys

# Which label each group of the corpus carries; a group not named here is an error, since a
# message with a guessed label would corrupt every figure computed from the split.
GROUP_LABELS = {
    "easy-ham-1": "ham",
    "easy-ham-2": "ham",
    "hard-ham-1": "ham",
    "spam-1": "spam",
    "spam-2": "spam",
}


def group_files(corpus_dir, group):
    """Regular files of one group, sorted by (MD5 hex digest of their bytes, file name)."""
    directory = os.path.join(corpus_dir, group)
    keyed = []
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if not os.path.isfile(path) or name.startswith("."):
            continue
        with open(path, "rb") as message:
            digest = hashlib.md5(message.read()).hexdigest()
        keyed.append((digest, name, path))
    keyed.sort()
    return keyed


def split(corpus_dir):
    """Returns (train, test): lists of (label, group, path, digest)."""
    groups = sorted(
        name for name in os.listdir(corpus_dir)
        if os.path.isdir(os.path.join(corpus_dir, name)) and not name.startswith(".")
    )
    unknown = [group for group in groups if group not in GROUP_LABELS]
    if unknown:
        sys.exit(f"split.py: unknown group(s) in {corpus_dir}: {', '.join(unknown)}; "
                 f"expected only {', '.join(GROUP_LABELS)}")
    missing = [group for group in GROUP_LABELS if group not in groups]
    if missing:
        sys.exit(f"split.py: group(s) missing from {corpus_dir}: {', '.join(missing)}; "
                 "run scripts/fetch-corpus")

    train, test = [], []
    for group in groups:
        label = GROUP_LABELS[group]
        for position, (digest, _name, path) in enumerate(group_files(corpus_dir, group)):
            half = train if position % 2 == 0 else test
            half.append((label, group, path, digest))
    return train, test


def write(half, path):
    with open(path + ".tmp", "w") as out:
        for label, group, message_path, _digest in half:
            out.write(f"{label}\t{group}\t{message_path}\n")
    os.replace(path + ".tmp", path)


def check(corpus_dir):
    """Verifies the split's properties; returns the list of failures (empty when sound)."""
    train, test = split(corpus_dir)
    failures = []

    # Disjoint, by path and by content: a message in both halves would be tested on what was
    # learned. Identical bytes under two names in one group are allowed to land on both sides
    # (the corpus has a few), so they are reported as a count, not a failure.
    train_paths = {path for _, _, path, _ in train}
    shared_paths = [path for _, _, path, _ in test if path in train_paths]
    if shared_paths:
        failures.append(f"{len(shared_paths)} paths in both halves, e.g. {shared_paths[0]}")

    # Complete: every message of the corpus is in exactly one half.
    total = sum(len(group_files(corpus_dir, group)) for group in GROUP_LABELS)
    if len(train) + len(test) != total:
        failures.append(f"halves hold {len(train) + len(test)} messages, corpus {total}")

    # Stratified: each group is halved, the training half taking the odd one out.
    for group in GROUP_LABELS:
        in_train = sum(1 for _, g, _, _ in train if g == group)
        in_test = sum(1 for _, g, _, _ in test if g == group)
        if in_train - in_test not in (0, 1):
            failures.append(f"group {group}: {in_train} training against {in_test} test")
        print(f"{group:11} {GROUP_LABELS[group]:4} train {in_train:5} test {in_test:5}")

    # Ordered by digest: the rule itself, checked again on the output.
    for half_name, half in (("train", train), ("test", test)):
        for group in GROUP_LABELS:
            keys = [(digest, os.path.basename(path))
                    for _, g, path, digest in half if g == group]
            if keys != sorted(keys):
                failures.append(f"{half_name} half of {group} is not in digest order")

    duplicates = len({d for *_, d in train} & {d for *_, d in test})
    print(f"total       train {len(train):5} test {len(test):5}; "
          f"identical contents on both sides: {duplicates}")
    return failures


def main(argv):
    if len(argv) == 3 and argv[1] == "--check":
        failures = check(argv[2])
        for failure in failures:
            print(f"split.py --check: {failure}", file=sys.stderr)
        print("split.py --check: " + ("FAILED" if failures else "stratified and disjoint"))
        return 1 if failures else 0
    if len(argv) != 3 or argv[1].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 64

    corpus_dir, outdir = argv[1], argv[2]
    if not os.path.isdir(corpus_dir):
        print(f"split.py: no corpus at {corpus_dir}: run scripts/fetch-corpus", file=sys.stderr)
        return 66
    train, test = split(corpus_dir)
    os.makedirs(outdir, exist_ok=True)
    write(train, os.path.join(outdir, "train.txt"))
    write(test, os.path.join(outdir, "test.txt"))
    print(f"split.py: {len(train)} training and {len(test)} test messages in {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
