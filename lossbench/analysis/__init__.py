"""What the numbers of a run mean, as pure functions on records and plain values: statistics over seeds
(`stats`), what each metric is and how it reads (`measures`), which cell each cell is compared with
(`baseline`) and the adaptive-seeding rule (`adaptive_seeds`). Adaptive seeding's rounds and the report both
read them; this package reads neither, nor the configuration or the grid.

Nothing is imported here, so that reading the metric names (`analysis.measures`) costs no pandas or scipy.
"""
