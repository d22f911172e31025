"""Replaces one benchmark script's section of bench/RESULTS.md, or appends it.

Usage: python3 bench/write_section.py RESULTS SECTION_FILE BEGIN_MARK END_MARK
SECTION_FILE holds the whole section, its two marks included; the rest of RESULTS is left
as it is, so each script owns only the lines between its marks.
"""

import sys


def main():
    path, section_path, begin, end = sys.argv[1:5]
    with open(path) as file:
        text = file.read()
    with open(section_path) as file:
        section = file.read().rstrip("\n")

    start = text.find(begin)
    stop = text.find(end)
    if start != -1 and stop != -1:
        text = text[:start] + section + text[stop + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"

    with open(path, "w") as file:
        file.write(text)


if __name__ == "__main__":
    main()
