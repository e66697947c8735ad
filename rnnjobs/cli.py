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
from rnnjobs.spec import JOB_SCHEMA, JobError, collect_jobs, load_jobs

logger = logging.getLogger("rnnjobs")

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2

_JOB_FILES = click.argument("job_files", nargs=-1, required=True, type=click.Path(dir_okay=False))
_PARALLEL = click.option(
    "-j", "--jobs", "n_jobs", default=1, show_default=True, type=click.IntRange(min=1),
    help="Number of jobs to run at once, each in its own worker process (1 runs them in this process).",
)


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


def _check_or_exit(jobs):
    # Data checks need h5py and NumPy but not TensorFlow, so they run before
    # any worker starts and a bad input stops the whole run with status 2.
    from rnnjobs.validation import DataCheckError, check_jobs

    try:
        check_jobs(jobs)
    except DataCheckError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_INVALID)


def _print_summary(results):
    width = max(len(result["name"]) for result in results)
    click.echo(f"{'job':<{width}}  {'status':<6}  {'seconds':>8}  output")
    for result in results:
        detail = result["output"] if result["status"] == "ok" else result["error"]
        click.echo(f"{result['name']:<{width}}  {result['status']:<6}  {result['seconds']:>8.1f}  {detail}")


def _run_and_exit(jobs, n_jobs):
    from rnnjobs.parallel import run_jobs

    results = run_jobs(jobs, n_jobs=n_jobs)
    _print_summary(results)
    failed = [result for result in results if result["status"] != "ok"]
    if failed:
        click.echo(f"{len(failed)} of {len(results)} job(s) failed: {', '.join(r['name'] for r in failed)}", err=True)
        sys.exit(EXIT_FAILED)
    sys.exit(EXIT_OK)


@main.command()
@_JOB_FILES
@_PARALLEL
def train(job_files, n_jobs):
    """Train the models that train JOB_FILES describe and write their model files."""
    jobs = _load_or_exit(job_files, ("train",))
    _check_or_exit(jobs)
    _run_and_exit(jobs, n_jobs)


@main.command()
@_JOB_FILES
@_PARALLEL
def forecast(job_files, n_jobs):
    """Run the forecast JOB_FILES and write their forecast files."""
    jobs = _load_or_exit(job_files, ("forecast",))
    _check_or_exit(jobs)
    _run_and_exit(jobs, n_jobs)


@main.command()
@_JOB_FILES
@_PARALLEL
def run(job_files, n_jobs):
    """Run train and forecast JOB_FILES, each forecast after the training it needs."""
    jobs = _load_or_exit(job_files)
    _check_or_exit(jobs)
    _run_and_exit(jobs, n_jobs)


@main.command()
@_JOB_FILES
def validate(job_files):
    """Check JOB_FILES, their data and model files without training; exit 0 if all are valid, else 2."""
    from rnnjobs.validation import check_each_job

    jobs, errors = collect_jobs(job_files)
    for err in errors:
        click.echo(f"error: {err}", err=True)

    checks = check_each_job(jobs)
    for job in jobs:
        check = checks[job["source"]]
        if check.problems:
            problems = "\n".join(f"  {problem}" for problem in check.problems)
            click.echo(f"error: {job['source']}: data check failed:\n{problems}", err=True)
            continue
        click.echo(f"{job['source']}: valid {job['kind']} job {job['name']!r}")
        for note in check.notes:
            click.echo(f"  {note}")

    invalid = len(errors) + sum(1 for check in checks.values() if check.problems)
    if invalid:
        click.echo(f"{invalid} of {len(job_files)} job file(s) invalid", err=True)
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
