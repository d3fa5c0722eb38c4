"""report.md: the document assembled from its sections, one section set per source (Setup, Leaderboard, Every
seed, Pivot tables, paired comparisons, Main effects, Plots, Notes), with a side-by-side table when there are several
sources. Pure text from the analyses; deterministic for the same cell files."""

from __future__ import annotations

from pathlib import Path

from lossbench.report.aggregate import SourceAnalysis
from lossbench.report.comparisons import main_effects, paired_comparisons, pivot_tables
from lossbench.report.leaderboard import leaderboard_section, summary_line
from lossbench.report.markdown_table import cell_text, mean_ci, missing, table
from lossbench.report.per_seed import every_seed_table
from lossbench.report.figure import Plot
from lossbench.report.results import Results
from lossbench.report.setup_section import distinct_values, setup_table


def render(analyses: list[SourceAnalysis], results: Results, plots: dict[str, list[Plot]], out_dir: Path,
           tuning_plots: dict[str, list[Plot]] | None = None,
           shift_plots: dict[str, list[Plot]] | None = None) -> str:
    """The whole report.md; `plots` maps a source name to its figures (paths relative to out_dir), and
    `tuning_plots` and `shift_plots` to those of its Tuning and Under shift sections."""
    suites = list(dict.fromkeys(a.source.suite for a in analyses))
    m = analyses[0].metric
    lines = [f"# lossbench report: {', '.join(suites)}", ""]
    multi = len(analyses) > 1
    if multi:
        lines += [f"{len(analyses)} sources side by side: " + ", ".join(f"**{a.source.name}**" for a in analyses)
                  + ". Each is analysed on its own below (its own baseline, its own Holm family).", ""]
        lines += ["## Side by side", ""] + _side_by_side(analyses) + [""]
    h = "###" if multi else "##"
    for a in analyses:
        if multi:
            lines += [f"## {a.source.name}", ""]
        lines += [summary_line(a), ""]
        sections = [
            ("Setup", setup_table(a, results, out_dir)),
            ("Leaderboard", leaderboard_section(a, results)),
            (f"Every seed ({m.title})", every_seed_table(a)),
            ("Pivot tables", pivot_tables(a)),
            (f"Paired comparison with the baseline ({m.title})", paired_comparisons(a)),
            ("Main effects", main_effects(a)),
            ("Plots", _plots(plots.get(a.source.name, []))),
        ]
        from lossbench.report.seeding import adaptive_rule, section

        rule = adaptive_rule(a.source.suite_file)
        if rule is not None:
            sections.insert(4, ("Adaptive seeding", section(a, rule)))
        from lossbench.report import tuning
        from lossbench.report.tuning_files import load_study

        study = load_study(a, results)
        if study is not None:
            figures = (tuning_plots or {}).get(a.source.name, [])
            sections.insert(2, ("Tuning", tuning.section(study, analyses, figures)))
            caveat = tuning.caveat(study)
            if caveat:
                lines += [caveat, ""]
        from lossbench.report import shift

        at = next(i for i, (title, _) in enumerate(sections) if title == "Plots")
        sections[at:at] = shift.sections(a, results.records, (shift_plots or {}).get(a.source.name, []))
        notes = _notes(a, results)
        if notes:
            sections.append(("Notes", notes))
        for title, body in sections:
            lines += [f"{h} {title}", "", *body, ""]
    if results.warnings:
        lines += ["## Files left out", "", *[f"- {w}" for w in results.warnings], ""]
    return "\n".join(lines).rstrip() + "\n"


def _side_by_side(analyses: list[SourceAnalysis]) -> list[str]:
    m = analyses[0].metric
    labels: list[str] = []
    for a in analyses:
        labels += [x for x in a.summary["label"] if x not in labels]
    per_source = [a.summary.set_index("label") for a in analyses]
    rows = []
    for label in labels:
        row = [cell_text(label)]
        for s in per_source:
            row.append(mean_ci(m, s.loc[label]) + f" (#{int(s.loc[label, 'rank'])})"
                       if label in s.index and not missing(s.loc[label, "rank"]) else "—")
        rows.append(row)
    return [f"{m.heading}, mean [95% CI] (rank within the source):", "",
            *table(["cell", *[a.source.name for a in analyses]], rows)]


def _plots(plots: list[Plot]) -> list[str]:
    if not plots:
        return ["No plots: no cell finished."]
    lines = []
    for p in plots:
        lines += [f"![{p.title}]({p.path})", "", f"*{p.caption}*", ""]
    return lines[:-1]


def _notes(a: SourceAnalysis, results: Results) -> list[str]:
    notes: list[str] = []
    partial = a.summary[(a.summary["n_done"] > 0) & (a.summary["n_done"] < a.summary["n_seeds"])]
    if len(partial):
        notes.append(f"{len(partial)} cell(s) are ranked on fewer seeds than they ran, because the other seeds "
                     "diverged or failed; their means describe only the seeds that finished.")
    recs = [results.records[i] for i in a.rows["id"]]
    for key, what in (("git_commit", "lossbench commits"), ("lossbench", "lossbench versions"),
                      ("torch", "torch versions"), ("device_name", "devices")):
        found = distinct_values(getattr(r.env, key) for r in recs)
        if len(found) > 1:
            notes.append(f"The cells ran on {len(found)} different {what} (see Setup): where what a cell does "
                         "changed in between, their numbers are not comparable.")
    by_note: dict[str, list[str]] = {}
    for rid in a.rows.sort_values("order")["id"]:
        rec = results.records[rid]
        for note in rec.notes:
            labels = by_note.setdefault(str(note), [])
            if rec.label not in labels:
                labels.append(rec.label)
    for note, labels in by_note.items():
        notes.append(f"{note} (cells: {', '.join(f'`{x}`' for x in labels)})")
    return [f"- {n}" for n in notes]
