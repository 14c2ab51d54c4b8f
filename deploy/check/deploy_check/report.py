"""Collects problems per area, so one run reports all of them at once."""

from __future__ import annotations

import sys


class Report:
    """Problems found so far, grouped by the area (file or topic) they concern."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []
        self.passed: list[str] = []

    def problem(self, area: str, message: str) -> None:
        self.problems.append((area, message))

    def check(self, ok: bool, area: str, message: str) -> bool:
        """Records `message` as a problem unless `ok`; returns `ok`."""
        if not ok:
            self.problem(area, message)
        return ok

    def done(self, area: str) -> None:
        """Marks an area as checked (printed as such when it had no problem)."""
        self.passed.append(area)

    def print(self) -> int:
        failed_areas = {area for area, _ in self.problems}
        for area in self.passed:
            if area not in failed_areas:
                print(f"  ok    {area}")
        for area, message in self.problems:
            print(f"  FAIL  {area}: {message}", file=sys.stderr)
        return 1 if self.problems else 0
