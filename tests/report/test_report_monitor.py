"""The watchdog table: first, last, change and worst of every monitored quantity, in its direction."""

from __future__ import annotations

import pandas as pd

from dermino.report.monitor import monitor_section, monitor_table


def test_monitor_table_takes_worst_in_each_direction(tmp_path):
    df = pd.DataFrame({"step": [0, 10, 20], "knn_macro_auroc": [0.70, 0.60, 0.68], "rankme": [30.0, 31.0, 29.0],
                       "dense_dice": [float("nan"), 0.5, 0.55], "gram_distance": [0.0, 0.9, 0.4]})
    table = monitor_table({"arm": df}).set_index("quantity")
    auroc = table.loc["kNN macro AUROC"]
    assert (auroc["first"], auroc["last"], auroc["change"], auroc["worst"]) == ("0.7", "0.68", "-0.02", "0.6")
    gram = table.loc["Gram distance to the start"]
    assert gram["worst"] == "0.9"  # larger is worse for a distance
    dice = table.loc["dense probe lesion Dice (patch features)"]
    assert dice["first step"] == 10 and dice["first"] == "0.5"  # NaN rows (no masks yet) are skipped
    assert "kNN accuracy" not in table.index  # a column the run did not log
    (tmp_path / "a").mkdir()
    df.to_csv(tmp_path / "a" / "monitor.csv", index=False)
    section = monitor_section({"a": tmp_path / "a", "b": tmp_path / "missing"})
    assert section is not None and len(section.tables[0][1]) == 4
    assert monitor_section({"b": tmp_path / "missing"}) is None
