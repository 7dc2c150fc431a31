"""Statistics over records, shared by the study, the report and the regression gate: the two-level
bootstrap and library tests (stats), the learning-rate choosing rule (selection)."""
