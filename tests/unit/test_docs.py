"""The README is a front door that stays true: short, undated, and every link it has leads somewhere."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_the_readme_reads_in_ten_minutes_and_holds_no_dated_notes():
    assert len(README.splitlines()) <= 400
    assert not re.search(r"this morning|this round|yesterday|today's run", README, re.I)
    assert not re.search(r"\b[0-9a-f]{7,40}\b", README), "a commit hash goes stale with the next commit"


def test_every_link_of_the_readme_leads_to_a_file_or_a_heading():
    headings = {
        re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-") for title in re.findall(r"(?m)^#+ (.*)$", README)
    }
    for target in re.findall(r"\]\(([^)\s]+)\)", README):
        if target.startswith("#"):
            assert target[1:] in headings, target
        elif not target.startswith("http"):
            assert (ROOT / target).exists(), target
