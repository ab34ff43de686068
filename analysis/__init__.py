"""Reads result folders: LR sensitivity, the paper's figures, instability prediction.

Modules: `results` (runs and metrics as pandas tables), `sensitivity`
(docs/paper_notes.md#lr-sensitivity), `figures` (matplotlib), `prediction` (Fig 9), `report`
(the command line). None of them imports `stability`; numpy, pandas and matplotlib are enough.
"""
