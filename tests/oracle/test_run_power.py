"""A table whose runs imply a power no GPU draws is refused at once, naming the rows and the unit."""

import re
import time

import numpy as np
import pytest

from oracle.fit import fit_oracle
from oracle.run_power import ImplausiblePowerError, check_run_power, power_range_w
from tests.oracle.test_fit import _hot, physical_truth, synthetic_table


@pytest.fixture(scope="module")
def table():
    """A valid H100 table: 294 runs at 290-510 W (idle 75 W, limit 700 W)."""
    return synthetic_table(physical_truth(), noise=0.01, seed=2)


def test_a_kwh_table_is_refused_within_a_second_naming_the_unit(table):
    kwh = table.assign(energy_j=table["energy_j"] / 3.6e6)
    start = time.monotonic()
    with pytest.raises(ImplausiblePowerError) as e:
        fit_oracle(kwh)
    assert time.monotonic() - start < 1.0
    message = str(e.value)
    assert message.startswith("294 of 294 rows imply a mean power (energy_j / duration_s) outside 7.5–7000 W")
    assert "row 0 (8.33e-05 W)" in message and "and 289 more" in message
    assert message.endswith("Likely a unit mistake: energy_j looks like kWh: multiply it by 3.6e6.")


def test_half_kwh_half_joules_names_the_kwh_rows(table):
    mixed = table.assign(energy_j=np.where(table.index % 2 == 1, table["energy_j"] / 3.6e6, table["energy_j"]))
    with pytest.raises(ImplausiblePowerError, match=r"^147 of 294 rows .*: row 1 \([0-9.e-]+ W\), row 3 \(") as e:
        fit_oracle(mixed)
    assert "row 0 " not in str(e.value) and "and 142 more" in str(e.value)
    assert "energy_j looks like kWh" in str(e.value)


@pytest.mark.parametrize(
    "column, factor, mistake",
    [
        ("energy_j", 1 / 3600, "energy_j looks like Wh: multiply it by 3600"),
        ("energy_j", 1e-3, "energy_j looks like kJ (multiply it by 1000) or duration_s like ms"),
        ("duration_s", 1e3, "energy_j looks like kJ (multiply it by 1000) or duration_s like ms"),
        ("energy_j", 1e3, "energy_j looks like mJ: divide it by 1000"),
        ("duration_s", 1 / 60, "duration_s looks like minutes: multiply it by 60"),
    ],
)
def test_each_unit_mistake_is_named(table, column, factor, mistake):
    with pytest.raises(ImplausiblePowerError, match="Likely a unit mistake: " + re.escape(mistake)):
        check_run_power(table.assign(**{column: table[column] * factor}), 75.0, 700.0)


def test_valid_tables_pass_and_still_fit(table):
    check_run_power(table, 75.0, 700.0)
    check_run_power(_hot(physical_truth()), 75.0, 700.0)  # up to 2.2× the limit: the fit's constraint handles it
    oracle, report = fit_oracle(table)
    assert report.energy.mape_pct < 2.0 and oracle.power_violations() == []


def test_unknown_idle_power_and_limit_use_wide_physical_bounds(table):
    assert power_range_w(0.0, None) == (1.0, 20_000.0)
    check_run_power(table, 0.0, None)
    with pytest.raises(ImplausiblePowerError, match="outside 1–20000 W .*idle power 0 W and power limit unknown"):
        check_run_power(table.assign(energy_j=table["energy_j"] / 3.6e6), 0.0, None)


def test_a_power_no_unit_explains_asks_to_check_the_units(table):
    with pytest.raises(ImplausiblePowerError, match=r"Check that energy_j is in J and duration_s in s\.$"):
        check_run_power(table.assign(energy_j=table["energy_j"] * 1e9), 75.0, 700.0)
