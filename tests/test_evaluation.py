"""Evaluation scores and plots on small hand-made forecast and observation files."""

import csv
import math
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import forecast_job_dict, train_job_dict
from rnnjobs.cli import main
from rnnjobs.data import DataError
from rnnjobs.evaluation import compare_with_observations, evaluate, evaluate_forecast
from rnnjobs.evaluation_report import write_evaluation
from rnnjobs.output import ForecastWriter
from rnnjobs.timeaxis import decode_times

HOURS = "hours since 1970-01-01 00:00:00"
FIRST_HOUR = 473352  # 2024-01-01 00:00 UTC

# Forecast of 4 stations x 6 hourly steps; the forecast starts at index 3.
FORECAST = {
    "A": [11, 12, 13, 15, 15, 20],
    "B": [20, 21, 22, 23, 25, 25],
    "C": [5, 5, 5, 5, 5, 5],
    "D": [7, 7, 7, 7, 7, 7],
}
# Observations start one hour earlier and end one hour later than the forecast,
# and list the stations in another order with one more (E). B has 99 at index 3,
# outside the valid range (0, 60). C has no observation in the forecast period and
# D none before it.
OBSERVED = {
    "D": [np.nan, np.nan, np.nan, np.nan, 7, 8, 9, 0],
    "C": [5, 5, 5, 5, np.nan, np.nan, np.nan, 0],
    "B": [np.nan, 20, 20, 22, 99, 24, 26, 0],
    "A": [8, 10, 12, np.nan, 14, 16, 18, 0],
    "E": [1, 1, 1, 1, 1, 1, 1, 1],
}
VALID_RANGE = (0.0, 60.0)
FORECAST_START = 3

# Errors (prediction - observation) at the scored points: A at indices 3, 4, 5 and B at 4, 5.
# Persistence is the last valid observation before index 3: A 12, B 22.
# Climatology is the mean of the valid ones: A (8 + 10 + 12) / 3 = 10, B (20 + 20 + 22) / 3.
FORECAST_ERRORS = [15 - 14, 15 - 16, 20 - 18, 25 - 24, 25 - 26]
PERSISTENCE_ERRORS = [12 - 14, 12 - 16, 12 - 18, 22 - 24, 22 - 26]
CLIMATOLOGY_ERRORS = [10 - 14, 10 - 16, 10 - 18, 62 / 3 - 24, 62 / 3 - 26]


def rmse(errors):
    return math.sqrt(sum(e * e for e in errors) / len(errors))


def mae(errors):
    return sum(abs(e) for e in errors) / len(errors)


def bias(errors):
    return sum(errors) / len(errors)


def write_observations(path, observed=OBSERVED, units=HOURS):
    ids = list(observed)
    with h5py.File(path, "w") as h5file:
        station = h5file.create_dataset("station", data=np.array(ids, dtype=h5py.string_dtype()))
        time = h5file.create_dataset("time", data=np.arange(8, dtype=np.int64) + FIRST_HOUR - 1)
        time.attrs["units"] = units
        station.make_scale("station")
        time.make_scale("time")
        fm = h5file.create_dataset("fm", data=np.array([observed[i] for i in ids], dtype=np.float32))
        fm.attrs["units"] = "percent"
        fm.dims[0].attach_scale(station)
        fm.dims[1].attach_scale(time)
    return str(path)


def write_forecast(path, forecast=FORECAST, attributes=None):
    values = np.array(list(forecast.values()), dtype=np.float32)[..., None]
    with ForecastWriter(
        str(path), "station", np.array(list(forecast), dtype=object), np.arange(6, dtype=np.int64) + FIRST_HOUR,
        {"units": HOURS, "calendar": "standard"}, ["fm"], {"fm": "percent"}, attributes or {"model_weights_sha256": "0" * 64},
    ) as writer:
        writer.write(slice(0, len(forecast)), slice(0, 6), values)
    return str(path)


@pytest.fixture
def files(tmp_path):
    return write_forecast(tmp_path / "forecast.nc"), write_observations(tmp_path / "observed.h5")


@pytest.fixture
def evaluation(files):
    return evaluate_forecast(*files, "fm", valid_range=VALID_RANGE, forecast_start=FORECAST_START)


@pytest.mark.parametrize(
    "prediction,errors",
    [("forecast", FORECAST_ERRORS), ("persistence", PERSISTENCE_ERRORS), ("climatology", CLIMATOLOGY_ERRORS)],
)
def test_overall_scores_match_hand_values(evaluation, prediction, errors):
    k = evaluation.predictions.index(prediction)

    assert evaluation.overall["rmse"][k] == pytest.approx(rmse(errors))
    assert evaluation.overall["mae"][k] == pytest.approx(mae(errors))
    assert evaluation.overall["bias"][k] == pytest.approx(bias(errors))
    assert evaluation.overall["count"] == 5


def test_station_scores_match_hand_values(evaluation):
    rows = {value: i for i, value in enumerate(evaluation.location_ids)}

    assert list(evaluation.location_ids) == ["A", "B", "C", "D"]
    assert evaluation.by_location["rmse"][0, rows["A"]] == pytest.approx(rmse(FORECAST_ERRORS[:3]))
    assert evaluation.by_location["bias"][1, rows["B"]] == pytest.approx(bias(PERSISTENCE_ERRORS[3:]))
    assert evaluation.by_location["mae"][2, rows["B"]] == pytest.approx(mae(CLIMATOLOGY_ERRORS[3:]))
    assert list(evaluation.by_location["count"]) == [3, 2, 0, 0]
    assert np.isnan(evaluation.by_location["rmse"][:, rows["C"]]).all()


def test_lead_time_scores_match_hand_values(evaluation):
    assert list(evaluation.lead_times) == [1, 2, 3]
    assert list(evaluation.by_lead_time["count"]) == [1, 2, 2]
    assert evaluation.by_lead_time["bias"][0] == pytest.approx([1.0, 0.0, 0.5])
    assert evaluation.by_lead_time["rmse"][0] == pytest.approx([1.0, 1.0, math.sqrt(2.5)])
    assert evaluation.by_lead_time["rmse"][1] == pytest.approx([2.0, rmse([-4, -2]), rmse([-6, -4])])


def test_excluded_observations_are_counted(evaluation):
    # Period indices 3-5: C's three observations are NaN, B's 99 is outside
    # (0, 60), and D's three valid observations have no baseline.
    assert evaluation.excluded == {"missing": 3, "out_of_range": 1, "no_forecast": 0, "no_baseline": 3}
    assert list(evaluation.by_location["missing"]) == [0, 0, 3, 0]
    assert list(evaluation.by_location["out_of_range"]) == [0, 1, 0, 0]


def test_without_forecast_start_scores_all_steps(files):
    result = evaluate_forecast(*files, valid_range=VALID_RANGE)
    errors = [
        11 - 10, 12 - 12, *FORECAST_ERRORS[:3],  # A; index 2 is NaN
        20 - 20, 21 - 20, 22 - 22, *FORECAST_ERRORS[3:],  # B; index 3 is 99
        5 - 5, 5 - 5, 5 - 5,  # C; indices 3 to 5 are NaN
        7 - 7, 7 - 8, 7 - 9,  # D; indices 0 to 2 are NaN
    ]

    assert result.predictions == ("forecast",)
    assert result.lead_times is None
    assert result.overall["rmse"][0] == pytest.approx(rmse(errors))
    assert result.overall["count"] == len(errors)
    assert result.excluded == {"missing": 7, "out_of_range": 1, "no_forecast": 0, "no_baseline": 0}


def test_period_and_station_selection(files):
    result = evaluate_forecast(*files, valid_range=VALID_RANGE, forecast_start=3, start=4, stop=5, locations=["B", "A"])

    assert list(result.location_ids) == ["B", "A"]
    assert list(result.lead_times) == [2]
    assert result.overall["bias"][0] == pytest.approx(bias([25 - 24, 15 - 16]))


def test_without_valid_range_scores_outliers(files):
    result = evaluate_forecast(*files, forecast_start=FORECAST_START)

    assert result.excluded["out_of_range"] == 0
    assert result.overall["count"] == 6


def test_csv_and_netcdf_outputs(evaluation, tmp_path):
    import xarray

    csv_path, nc_path = tmp_path / "scores.csv", tmp_path / "scores.nc"
    write_evaluation(evaluation, str(csv_path))
    write_evaluation(evaluation, str(nc_path))

    with open(csv_path, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    overall = {row["prediction"]: row for row in rows if row["scope"] == "overall"}
    assert float(overall["persistence"]["rmse"]) == pytest.approx(rmse(PERSISTENCE_ERRORS))
    assert int(overall["forecast"]["count"]) == 5
    assert len([row for row in rows if row["scope"] == "location"]) == 4 * 3
    assert len([row for row in rows if row["scope"] == "lead_time"]) == 3 * 3
    with xarray.open_dataset(nc_path, engine="h5netcdf") as dataset:
        assert float(dataset["rmse"].sel(prediction="climatology")) == pytest.approx(rmse(CLIMATOLOGY_ERRORS))
        assert float(dataset["bias_by_station"].sel(prediction="forecast", station="A")) == pytest.approx(bias(FORECAST_ERRORS[:3]))
        assert list(dataset["count_by_lead_time"].values) == [1, 2, 2]
        assert dataset.attrs["excluded_out_of_range"] == 1


def test_unknown_output_suffix_rejected(evaluation, tmp_path):
    with pytest.raises(ValueError, match="unknown output format '.txt'"):
        write_evaluation(evaluation, str(tmp_path / "scores.txt"))


MISMATCHES = [
    ("unknown station", {"locations": ["A", "Z"]}, "1 station id.s. not found among the 4 in the file, first Z"),
    ("forecast start too late", {"forecast_start": 6}, "forecast start 6 is outside"),
    ("period before forecast start", {"forecast_start": 3, "start": 2}, "precedes the forecast start"),
    ("empty period", {"start": 4, "stop": 4}, r"period \[4, 4\) is empty"),
    ("unknown variable", {"variable": "nope"}, "dataset 'nope' not found"),
]


@pytest.mark.parametrize("label,options,message", MISMATCHES, ids=[case[0] for case in MISMATCHES])
def test_mismatch_raises_data_error(files, label, options, message):
    with pytest.raises(DataError, match=message):
        compare_with_observations(*files, **options)


def test_station_missing_from_observations(tmp_path):
    observed = write_observations(tmp_path / "observed.h5", {key: OBSERVED[key] for key in ("A", "B")})
    forecast = write_forecast(tmp_path / "forecast.nc")

    with pytest.raises(DataError, match="observed.h5: 2 station id.s. not found among the 2 in the file, first C, D; these forecast locations have no observations of 'fm'"):
        compare_with_observations(forecast, observed)


def test_other_time_units_rejected(tmp_path):
    observed = write_observations(tmp_path / "observed.h5", units="days since 2024-01-01")
    forecast = write_forecast(tmp_path / "forecast.nc")

    with pytest.raises(DataError, match="time units 'days since 2024-01-01' differ"):
        compare_with_observations(forecast, observed)


def test_no_valid_observation_raises(tmp_path):
    observed = write_observations(tmp_path / "observed.h5", {key: [np.nan] * 8 for key in FORECAST})
    forecast = write_forecast(tmp_path / "forecast.nc")

    with pytest.raises(DataError, match="no valid observation of 'fm' in the period .0, 6.; excluded: 24 missing"):
        evaluate(compare_with_observations(forecast, observed))


@pytest.mark.parametrize(
    "units,expected",
    [
        ("hours since 1970-01-01 00:00:00", "1970-01-02T01:00:00"),
        ("hours since 1970-1-1", "1970-01-02T01:00:00"),
        ("days since 2000-01-01T00:00:00Z", "2000-01-26T00:00:00"),
        ("minutes since 1970-01-01 06:00 UTC", "1970-01-01T06:25:00"),
        ("hours since 1970-01-01T00:00+05:00", None),
        ("fortnights since 1970-01-01", None),
        ("hours since the start", None),
    ],
)
def test_decode_times(units, expected):
    decoded = decode_times(np.array([25]), units)

    if expected is None:
        assert decoded is None
    else:
        assert str(decoded[0]) == expected


def test_evaluate_command_prints_table(files, tmp_path):
    output = tmp_path / "scores.csv"
    args = ["evaluate", files[0], "--observed", files[1], "--variable", "fm", "--forecast-start", "3", "--valid-range", "0", "60"]

    result = CliRunner().invoke(main, [*args, "--by", "lead-time", "--output", str(output)])

    assert result.exit_code == 0, result.output
    assert f"persistence  {rmse(PERSISTENCE_ERRORS):.3f}" in result.output
    assert "3 missing, 1 outside [0, 60], 0 without forecast, 3 without baseline" in result.output
    assert "lead_time  count" in result.output
    assert output.exists()


def test_evaluate_command_rejects_unknown_station(files):
    result = CliRunner().invoke(main, ["evaluate", files[0], "--observed", files[1], "--stations", "A,Q"])

    assert result.exit_code == 2
    assert "1 station id(s) not found among the 4 in the file, first Q" in result.output


def test_evaluate_held_out_stations(tmp_path, series_file):
    """Held-out stations are those of the forecast that the model file lists for neither training nor validation."""
    from rnnjobs.evaluation import held_out_locations
    from rnnjobs.forecasting import forecast_job
    from rnnjobs.spec import normalize_job
    from rnnjobs.training import train_job

    model_file, forecast_file = tmp_path / "m.weights.h5", tmp_path / "f.nc"
    train = train_job_dict(series_file, model_file, training={"epochs": 1, "seed": 1})
    train["data"]["exclude_locations"] = ["S001", "S006"]
    train_job(normalize_job(train, str(tmp_path / "train.json")))
    forecast_job(normalize_job(forecast_job_dict(series_file, model_file, forecast_file), str(tmp_path / "forecast.json")))

    result = CliRunner().invoke(main, ["evaluate", str(forecast_file), "--observed", series_file, "--variable", "y", "--forecast-start", "40", "--held-out", "--by", "location"])

    assert held_out_locations(str(forecast_file)) == ["S001", "S006"]
    assert result.exit_code == 0, result.output
    assert "at 2 station(s)" in result.output


def test_plot_writes_png_files(files, tmp_path):
    from matplotlib.image import imread

    series, hourly = tmp_path / "series.png", tmp_path / "hourly.png"
    args = ["plot", files[0], "--observed", files[1], "--forecast-start", "3", "--valid-range", "0", "60", "--stations", "A,B"]

    result = CliRunner().invoke(main, [*args, "-o", str(series), "--hourly-output", str(hourly)])

    assert result.exit_code == 0, result.output
    for path in (series, hourly):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = imread(path)
        assert image.ndim == 3
        assert image.shape[0] > 300
        assert image[..., :3].std() > 0


def test_hourly_scores_match_hand_values(files):
    from rnnjobs.plotting import hourly_scores

    comparison = compare_with_observations(*files, valid_range=VALID_RANGE, forecast_start=FORECAST_START)
    scores = hourly_scores(comparison, ["A"])

    # The forecast times are 00:00 to 05:00 UTC, so the period is hours 3, 4 and 5.
    assert scores["all"]["bias"][0, 3:6] == pytest.approx([1.0, 0.0, 0.5])
    assert np.isnan(scores["all"]["bias"][0, 6:]).all()
    assert scores["locations"]["rmse"][0, 0, 3:6] == pytest.approx([1.0, 1.0, 2.0])


def test_plot_without_matplotlib_says_what_to_install(files, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)

    result = CliRunner().invoke(main, ["plot", files[0], "--observed", files[1], "--stations", "A", "-o", str(tmp_path / "x.png")])

    assert result.exit_code == 2
    assert "rnnjobs[plot]" in result.output
    assert not (tmp_path / "x.png").exists()


def test_held_out_needs_unseen_station(tmp_path, series_file):
    from rnnjobs.evaluation import held_out_locations
    from rnnjobs.forecasting import forecast_job
    from rnnjobs.spec import normalize_job
    from rnnjobs.training import train_job

    model_file, forecast_file = tmp_path / "m.weights.h5", tmp_path / "f.nc"
    train_job(normalize_job(train_job_dict(series_file, model_file, training={"epochs": 1, "seed": 1}), str(tmp_path / "train.json")))
    forecast_job(normalize_job(forecast_job_dict(series_file, model_file, forecast_file), str(tmp_path / "forecast.json")))

    with pytest.raises(DataError, match="lists every station of the forecast for training or validation"):
        held_out_locations(str(forecast_file))


def test_unwritable_output_exits_2(files, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder is expected")
    output = blocker / "scores.csv"
    args = ["evaluate", files[0], "--observed", files[1], "--variable", "fm", "--forecast-start", "3"]

    result = CliRunner().invoke(main, [*args, "--output", str(output)])

    assert result.exit_code == 2
    assert "scores.csv" in result.output
    assert "cannot create a file in" in result.output
    assert not output.exists()
