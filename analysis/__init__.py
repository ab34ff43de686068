"""Reads result folders: LR sensitivity, the paper's figures, instability prediction.

Modules: `results` (runs and metrics as pandas tables), `sensitivity` (PAPER.md §3),
`figures` (matplotlib), `prediction` (Fig 9), `report` (the command line). None of them
imports `stability`; numpy, pandas and matplotlib are enough.
"""
