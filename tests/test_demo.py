"""The results table the CLI prints (dfml demo, train, eval, compare)."""

from dfml.demo import results_table


def _run(scores):
    return {"scores": {"5way_1shot": {"mean": sum(scores) / len(scores), "ci95": 1.0, "per_episode": scores}}}


def test_the_table_has_paired_columns_against_the_baseline_when_it_is_among_the_runs():
    table = results_table({"average": _run([40.0, 60.0]), "maml": _run([50.0, 70.0])})
    assert table.splitlines()[0] == "| recipe | 5way 1shot acc % | vs average (1shot) |"
    assert table.splitlines()[2] == "| average | 50.00 ± 1.00 | - |"
    assert table.splitlines()[3].startswith("| maml | 60.00 ± 1.00 | +10.00 ± ")


def test_a_single_run_or_a_missing_baseline_gets_no_empty_difference_columns():
    for runs in ({"maml": _run([50.0, 70.0])}, {"maml": _run([50.0, 70.0]), "free": _run([1.0, 2.0])}):
        lines = results_table(runs).splitlines()
        assert lines[0] == "| recipe | 5way 1shot acc % |" and lines[1] == "|---|---|"
        assert all(line.count("|") == 3 for line in lines)
