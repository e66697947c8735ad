"""Command-line interface: a thin click layer over the rnnjobs library.

Exit status: 0 when every job succeeded or was skipped as up to date, 1 when
a job failed while running, 2 for invalid usage, job files or data. Jobs
whose data fails the checks before the run are rejected and the others still
run. When a signal stopped the run before every job finished, it is 128 plus
the signal number (143 for SIGTERM, 130 for SIGINT). TensorFlow is imported
only by commands that build models, so ``--help``, ``validate`` and
``schema`` return quickly.
"""

import contextlib
import json
import logging
import sys

import click

from rnnjobs import __version__, interruption, logs
from rnnjobs.locking import ON_CONFLICT
from rnnjobs.parallel import BACKENDS
from rnnjobs.spec import JOB_SCHEMA, JobError, collect_jobs, load_jobs, output_path

logger = logging.getLogger("rnnjobs")

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2

_JOB_FILES = click.argument("job_files", nargs=-1, required=True, type=click.Path(dir_okay=False))


def _parallel_options(command):
    """Add the options that set how many jobs run at once and where."""
    options = [
        click.option(
            "-j", "--jobs", "n_jobs", default=1, show_default=True, type=click.IntRange(min=1),
            help="Jobs to run at once, each in its own worker process, at most one per core. "
            "1 runs them in this process. Unused with --backend dask.",
        ),
        click.option(
            "--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
            help="Stop a job still running after this many seconds and report it as failed "
            "(counted from its dispatch to a worker, worker start-up included).",
        ),
        click.option(
            "--backend", type=click.Choice(BACKENDS), default="loky", show_default=True,
            help="loky: worker processes on this machine; dask: workers of a Dask cluster.",
        ),
        click.option("--scheduler", metavar="ADDRESS", help="Dask scheduler address, such as tcp://10.0.0.5:8786."),
        click.option(
            "--scheduler-file", type=click.Path(dir_okay=False), help="Scheduler file that 'dask scheduler --scheduler-file' wrote.",
        ),
        click.option(
            "--force", is_flag=True,
            help="Run jobs whose outputs are up to date (written from the same job spec and inputs), "
            "and train from the first epoch even where a checkpoint exists.",
        ),
        click.option(
            "--on-conflict", type=click.Choice(ON_CONFLICT), default="wait", show_default=True,
            help="When another rnnjobs run is writing a job's output: wait for it to finish, or fail the job at once.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _configure_logging(verbosity, log_format):
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    logs.configure_logging(level, log_format, stream=sys.stderr)
    # TensorFlow's C++ start-up notices are not about the user's jobs.
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnnjobs")
@click.option("-v", "--verbose", count=True, help="Log more (debug details of failures).")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")
@click.option(
    "--log-format", type=click.Choice(logs.LOG_FORMATS), default="text", show_default=True, envvar="RNNJOBS_LOG_FORMAT",
    help="Log lines on stderr as text, or as one JSON object per line for log collectors; "
    "json also prints the summary as JSON lines. Also set by RNNJOBS_LOG_FORMAT.",
)
def main(verbose, quiet, log_format):
    """Train and forecast RNN time-series models from JSON job files."""
    _configure_logging(-1 if quiet else verbose, log_format)


def _error(message):
    """Report an error on stderr: an ``error:`` line, or a JSON log line with --log-format json."""
    if logs.current_format() == "json":
        logger.error("%s", message)
    else:
        click.echo(f"error: {message}", err=True)


def _load_or_exit(job_files, kinds=None):
    try:
        jobs = load_jobs(job_files)
    except JobError as err:
        _error(str(err))
        sys.exit(EXIT_INVALID)
    if kinds:
        wrong = [job for job in jobs if job["kind"] not in kinds]
        if wrong:
            _error(
                f"{wrong[0]['source']}: kind: got {wrong[0]['kind']!r}, this command runs "
                f"{' and '.join(kinds)} jobs; use 'rnnjobs run' for mixed kinds"
            )
            sys.exit(EXIT_INVALID)
    return jobs


def _reject_invalid(jobs):
    # Data checks need h5py and NumPy but not TensorFlow, so they run before
    # any worker starts. A job with invalid data is reported and the others run.
    from rnnjobs.validation import reject_invalid

    runnable, rejected = reject_invalid(jobs)
    for result in rejected:
        _error(f"{result['name']}: {result['error']}")
    return runnable, rejected


def _print_summary(results):
    """Print one line per job on stdout: a table, or JSON objects with --log-format json."""
    if logs.current_format() == "json":
        for result in results:
            entry = {"job": result["name"], "kind": result["kind"], "status": result["status"], "seconds": round(result["seconds"], 3)}
            entry.update({key: result[key] for key in ("output", "error", "signal") if result.get(key) is not None})
            click.echo(json.dumps(entry))
        return
    width = max(len(result["name"]) for result in results)
    click.echo(f"{'job':<{width}}  {'status':<9}  {'seconds':>8}  output")
    for result in results:
        detail = result["output"] if result["status"] in ("ok", "skipped") else result["error"]
        click.echo(f"{result['name']:<{width}}  {result['status']:<9}  {result['seconds']:>8.1f}  {detail}")


def _check_backend(backend, scheduler, scheduler_file, timeout=None):
    from rnnjobs.parallel import DASK_TIMEOUT_MESSAGE

    if backend == "dask" and timeout is not None:
        raise click.UsageError(f"--timeout with --backend dask: {DASK_TIMEOUT_MESSAGE}")
    if backend == "dask" and (scheduler is None) == (scheduler_file is None):
        raise click.UsageError("--backend dask needs either --scheduler or --scheduler-file")
    if backend != "dask" and (scheduler or scheduler_file):
        raise click.UsageError("--scheduler and --scheduler-file need --backend dask")


def _run_and_exit(jobs, n_jobs, timeout, backend, scheduler, scheduler_file, force, on_conflict):
    from rnnjobs.parallel import run_jobs

    _check_backend(backend, scheduler, scheduler_file, timeout)
    runnable, rejected = _reject_invalid(jobs)
    if not runnable:
        _error(f"{len(rejected)} of {len(jobs)} job(s) invalid; nothing was run")
        sys.exit(EXIT_INVALID)
    jobs = runnable
    options = {
        "timeout": timeout, "backend": backend, "scheduler": scheduler, "scheduler_file": scheduler_file,
        "force": force, "on_conflict": on_conflict,
    }
    try:
        if sys.stderr.isatty() and logs.current_format() == "text":
            with click.progressbar(length=len(jobs), label="jobs", file=sys.stderr) as bar:
                results = run_jobs(jobs, n_jobs, on_result=lambda result: bar.update(1), **options)
        else:
            results = run_jobs(jobs, n_jobs, **options)
    except OSError as err:  # The Dask scheduler or its scheduler file could not be reached.
        _error(str(err))
        sys.exit(EXIT_FAILED)
    results = results + rejected
    _print_summary(results)
    unfinished = [result for result in results if result["status"] not in ("ok", "skipped")]
    if unfinished:
        _error(f"{len(unfinished)} of {len(results)} job(s) failed, invalid or cancelled: {', '.join(r['name'] for r in unfinished)}")
    signals = [result["signal"] for result in results if result["status"] == "cancelled"]
    # A signal decides the status, as it would for a process it killed. Invalid
    # jobs need a fix before a rerun, so they come next, even when others ran.
    if signals:
        sys.exit(interruption.exit_status(signals[0]))
    if rejected:
        sys.exit(EXIT_INVALID)
    sys.exit(EXIT_FAILED if unfinished else EXIT_OK)


@main.command()
@_JOB_FILES
@_parallel_options
def train(job_files, **options):
    """Train the models that train JOB_FILES describe and write their model files."""
    _run_and_exit(_load_or_exit(job_files, ("train",)), **options)


@main.command()
@_JOB_FILES
@_parallel_options
def forecast(job_files, **options):
    """Run the forecast JOB_FILES and write their forecast files."""
    _run_and_exit(_load_or_exit(job_files, ("forecast",)), **options)


@main.command()
@_JOB_FILES
@_parallel_options
def run(job_files, **options):
    """Run train and forecast JOB_FILES, each forecast after the training it needs."""
    _run_and_exit(_load_or_exit(job_files), **options)


@main.command()
@_JOB_FILES
def validate(job_files):
    """Check JOB_FILES, their data and model files without training; exit 0 if all are valid, else 2.

    Lists every job with its output, one line each, sweeps expanded.
    """
    from rnnjobs.validation import check_each_job

    jobs, errors = collect_jobs(job_files)
    for err in errors:
        click.echo(f"error: {err}", err=True)

    checks = check_each_job(jobs)
    for job, check in zip(jobs, checks):
        if check.problems:
            problems = "\n".join(f"  {problem}" for problem in check.problems)
            click.echo(f"error: {job['source']}: job {job['name']!r}: data check failed:\n{problems}", err=True)
            continue
        click.echo(f"{job['source']}: valid {job['kind']} job {job['name']!r} -> {output_path(job)}")
        for note in check.notes:
            click.echo(f"  {note}")

    invalid = len(errors) + sum(1 for check in checks if check.problems)
    if invalid:
        click.echo(f"{invalid} invalid job(s) in {len(job_files)} job file(s)", err=True)
        sys.exit(EXIT_INVALID)


@main.command()
def schema():
    """Print the JSON Schema of job files."""
    click.echo(json.dumps(JOB_SCHEMA, indent=2))


@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
def describe(job_file):
    """Print the training and prediction models of JOB_FILE and their parameter counts."""
    from rnnjobs.inspection import describe_job
    from rnnjobs.data import DataError

    job = _load_or_exit([job_file])[0]
    try:
        click.echo(describe_job(job))
    except DataError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_INVALID)


def _split_ids(context, parameter, values):
    """Turn repeated and comma-separated ids into one list, or None if none were given."""
    ids = [part.strip() for value in values for part in value.split(",") if part.strip()]
    return ids or None


def _comparison_options(command):
    """Add the options shared by ``evaluate`` and ``plot``: files, variables, period and valid range."""
    options = [
        click.argument("forecast_file", type=click.Path(exists=True, dir_okay=False)),
        click.option(
            "--observed", "observed_file", required=True, type=click.Path(exists=True, dir_okay=False),
            help="HDF5 file with the observed variable on (location, time) and the forecast's location ids and time units.",
        ),
        click.option("--variable", help="Forecast variable; by default the forecast file's only variable."),
        click.option("--observed-variable", help="Observed variable; by default the same name as --variable."),
        click.option(
            "--forecast-start", type=click.IntRange(min=0),
            help="Time index in the forecast file of the first forecast step. The steps before it give the "
            "persistence and climatology baselines, and lead time 1 is this step. Without it, no baselines are scored.",
        ),
        click.option("--start", type=click.IntRange(min=0), help="First time index to score; by default --forecast-start, or 0."),
        click.option("--stop", type=click.IntRange(min=1), help="Time index after the last one to score; by default the end of the forecast."),
        click.option(
            "--valid-range", nargs=2, type=float, metavar="MIN MAX", default=None,
            help="Exclude observations outside [MIN, MAX] from scores and baselines, and count them.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@contextlib.contextmanager
def _exit_invalid_on_data_error(*extra_errors):
    """Print a :class:`DataError`, an ``OSError`` or one of ``extra_errors`` raised in the block and exit with status 2."""
    from rnnjobs.data import DataError

    try:
        yield
    except (DataError, *extra_errors) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_INVALID)
    except OSError as err:
        # Such as an output in a read-only folder.
        click.echo(f"error: {err.filename}: {err.strerror or err}; check the path and its permissions", err=True)
        sys.exit(EXIT_INVALID)


def _check_output_suffix(context, parameter, value):
    from rnnjobs.evaluation_report import NETCDF_SUFFIXES

    if value is not None and not value.lower().endswith((".csv", *NETCDF_SUFFIXES)):
        raise click.BadParameter(f"{value!r} must end in .csv, or in {', '.join(NETCDF_SUFFIXES)} for netCDF4-compatible HDF5")
    return value


@main.command()
@_comparison_options
@click.option("--stations", "locations", multiple=True, callback=_split_ids, metavar="ID[,ID...]", help="Score only these location ids; repeat the option or separate ids with commas.")
@click.option("--held-out", is_flag=True, help="Score only the locations that the model never saw in training or validation, as recorded in its model file.")
@click.option("--by", "breakdowns", multiple=True, type=click.Choice(["location", "lead-time"]), help="Also print each prediction's RMSE per location or per lead time.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), callback=_check_output_suffix, help="Write every score to this file: .csv, or .nc/.h5 for netCDF4-compatible HDF5.")
def evaluate(forecast_file, observed_file, locations, held_out, breakdowns, output, **options):
    """Score FORECAST_FILE against observations: RMSE, MAE and bias, with persistence and climatology baselines."""
    from rnnjobs.evaluation import compare_with_observations, evaluate as score, held_out_locations
    from rnnjobs.evaluation_report import format_evaluation, write_evaluation

    if locations and held_out:
        raise click.UsageError("give either --stations or --held-out, not both")
    with _exit_invalid_on_data_error():
        if held_out:
            locations = held_out_locations(forecast_file)
        evaluation = score(compare_with_observations(forecast_file, observed_file, locations=locations, **options))
    click.echo(format_evaluation(evaluation, by=[name.replace("-", "_") for name in breakdowns]), nl=False)
    if output:
        with _exit_invalid_on_data_error():
            write_evaluation(evaluation, output)


@main.command()
@_comparison_options
@click.option("--stations", "locations", multiple=True, required=True, callback=_split_ids, metavar="ID[,ID...]", help="Location ids to plot; repeat the option or separate ids with commas.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="PNG of forecast and observations; by default FORECAST_FILE with the suffix .png.")
@click.option("--hourly-output", type=click.Path(dir_okay=False), help="PNG of the errors by hour of day; by default FORECAST_FILE with the suffix _error_by_hour.png.")
def plot(forecast_file, observed_file, locations, output, hourly_output, **options):
    """Plot FORECAST_FILE against observations at some locations, and its errors by hour of day.

    The second figure shows the chosen locations and all locations of the
    forecast. Both figures cover the scored period. Needs matplotlib
    (pip install 'rnnjobs[plot]').
    """
    import os

    from rnnjobs.evaluation import compare_with_observations
    from rnnjobs.plotting import MissingDependencyError, plot_error_by_hour, plot_forecast

    if locations is None:
        raise click.BadParameter("no location ids given", param_hint="--stations")
    stem = os.path.splitext(forecast_file)[0]
    output = output or f"{stem}.png"
    hourly_output = hourly_output or f"{stem}_error_by_hour.png"
    with _exit_invalid_on_data_error(MissingDependencyError):
        comparison = compare_with_observations(forecast_file, observed_file, **options)
        plot_forecast(comparison, locations, output)
        plot_error_by_hour(comparison, locations, hourly_output)
    click.echo(f"wrote {output}\nwrote {hourly_output}")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text; a model file's metadata appears exactly as stored.")
def inspect(file, as_json):
    """Print what a model file or forecast file contains, without loading TensorFlow."""
    from rnnjobs.inspection import format_inspection, inspect_file

    with _exit_invalid_on_data_error():
        info = inspect_file(file)
    click.echo(json.dumps(info, indent=2) if as_json else format_inspection(info), nl=as_json)
