"""The report as data: tables, sections, the whole report and its plots, as values that
every section builder returns and the template renders (``report.md.j2``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Table:
    """A table of the report: a DataFrame rendered with ``to_markdown`` (index included when
    ``index``), with an optional heading and a note under it."""

    frame: pd.DataFrame
    title: str = ""
    note: str = ""
    index: bool = False

    def markdown(self) -> str:
        if self.frame.empty:
            return "_(no rows)_"
        frame = self.frame.reset_index() if self.index else self.frame
        return frame.to_markdown(index=False)


@dataclass
class Section:
    """A section: a heading, paragraphs, bullet points, tables, images and subsections."""

    title: str
    level: int = 2
    paragraphs: list[str] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)  # (title, file name)
    subsections: list[Section] = field(default_factory=list)
    details: str = ""  # text shown collapsed (<details>), e.g. the config


@dataclass
class Report:
    """The whole report as values: a title, a description and its sections in order."""

    title: str
    description: str
    sections: list[Section]

    def section(self, title: str) -> Section:
        """The first section (at any depth) whose title starts with ``title``."""
        stack = list(self.sections)
        while stack:
            s = stack.pop(0)
            if s.title.startswith(title):
                return s
            stack = s.subsections + stack
        raise KeyError(title)


@dataclass(frozen=True)
class Plot:
    """A written plot: its title for the report and its file name beside ``report.md``."""

    title: str
    filename: str
    kind: str
