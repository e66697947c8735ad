"""Command-line interface: a thin click layer over the rnnjobs library.

Exit status: 0 when every job succeeded, 1 when a job failed while running,
2 for invalid usage, job files or data found before any job ran. TensorFlow
is imported only by commands that build models, so ``--help``, ``validate``
and ``schema`` answer quickly.
"""

import json
import logging
import sys

import click

from rnnjobs import __version__
from rnnjobs.parallel import BACKENDS
from rnnjobs.spec import JOB_SCHEMA, JobError, load_jobs, output_path

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
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _configure_logging(verbosity):
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr, force=True)
    # TensorFlow's C++ start-up notices are not about the user's jobs.
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnnjobs")
@click.option("-v", "--verbose", count=True, help="Log more (debug details of failures).")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")
def main(verbose, quiet):
    """Train and forecast RNN time-series models from JSON job files."""
    _configure_logging(-1 if quiet else verbose)


def _load_or_exit(job_files, kinds=None):
    try:
        jobs = load_jobs(job_files)
    except JobError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_INVALID)
    if kinds:
        wrong = [job for job in jobs if job["kind"] not in kinds]
        if wrong:
            click.echo(
                f"error: {wrong[0]['source']}: kind: got {wrong[0]['kind']!r}, this command runs "
                f"{' and '.join(kinds)} jobs; use 'rnnjobs run' for mixed kinds",
                err=True,
            )
            sys.exit(EXIT_INVALID)
    return jobs


def _print_summary(results):
    width = max(len(result["name"]) for result in results)
    click.echo(f"{'job':<{width}}  {'status':<6}  {'seconds':>8}  output")
    for result in results:
        detail = result["output"] if result["status"] == "ok" else result["error"]
        click.echo(f"{result['name']:<{width}}  {result['status']:<6}  {result['seconds']:>8.1f}  {detail}")


def _check_backend(backend, scheduler, scheduler_file):
    if backend == "dask" and (scheduler is None) == (scheduler_file is None):
        raise click.UsageError("--backend dask needs either --scheduler or --scheduler-file")
    if backend != "dask" and (scheduler or scheduler_file):
        raise click.UsageError("--scheduler and --scheduler-file need --backend dask")


def _run_and_exit(jobs, n_jobs, timeout, backend, scheduler, scheduler_file):
    from rnnjobs.parallel import run_jobs

    _check_backend(backend, scheduler, scheduler_file)
    options = {"timeout": timeout, "backend": backend, "scheduler": scheduler, "scheduler_file": scheduler_file}
    try:
        if sys.stderr.isatty():
            with click.progressbar(length=len(jobs), label="jobs", file=sys.stderr) as bar:
                results = run_jobs(jobs, n_jobs, on_result=lambda result: bar.update(1), **options)
        else:
            results = run_jobs(jobs, n_jobs, **options)
    except OSError as err:  # The Dask scheduler or its scheduler file could not be reached.
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_FAILED)
    _print_summary(results)
    failed = [result for result in results if result["status"] != "ok"]
    if failed:
        click.echo(f"{len(failed)} of {len(results)} job(s) failed: {', '.join(r['name'] for r in failed)}", err=True)
        sys.exit(EXIT_FAILED)
    sys.exit(EXIT_OK)


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
    """Check JOB_FILES against the schema and their data without training; exit 0 or 2.

    Lists every job with its output, one line each, sweeps expanded.
    """
    jobs = _load_or_exit(job_files)
    for job in jobs:
        click.echo(f"{job['source']}: valid {job['kind']} job {job['name']!r} -> {output_path(job)}")


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
