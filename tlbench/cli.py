"""`tlbench`: up, worker, redis, datasets, submit, report."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tlbench.client import DEFAULT_URL, ApiClient, ApiError

# Who may start `tlbench up` on an address without a token: tlbench/stack.py:check_exposure enforces it, and
# docs/api.md and docs/security.md state it in these words.
EXPOSURE_RULE = ("A loopback address (127.0.0.0/8 or ::1) or the name localhost needs no token; any other address "
                 "or name (0.0.0.0, a LAN address, a host name) needs TLBENCH_TOKEN and TLBENCH_ALLOWED_HOSTS.")
SKIPPED_FILES_SHOWN = 10


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command; refusals and unusable services exit 1 with one line."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except (ApiError, ValueError, RuntimeError) as error:
        print(f"tlbench: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the supervisor took over (waiting for the broker, say)
        return 130


def build_parser() -> argparse.ArgumentParser:
    """All commands and their options."""
    parser = argparse.ArgumentParser(prog="tlbench", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="start Redis (embedded unless REDIS_URL), workers and the web app")
    up.add_argument("--host", default="127.0.0.1",
                    help=f"address to listen on (default 127.0.0.1). {EXPOSURE_RULE}")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--home", help="state folder (default $TLBENCH_HOME or ~/.tlbench)")
    _add_worker_options(up)
    up.set_defaults(run=run_up)

    worker = commands.add_parser("worker", help="start one worker per GPU (or CPU workers) on this host, "
                                                "against REDIS_URL and DATABASE_URL (or the home's own)")
    worker.add_argument("--home", help="state folder (default $TLBENCH_HOME or ~/.tlbench)")
    _add_worker_options(worker)
    worker.set_defaults(run=run_worker)

    embedded = commands.add_parser("redis", help="run only the embedded Redis server (for the Procfile)")
    embedded.add_argument("--home", help="state folder (default $TLBENCH_HOME or ~/.tlbench)")
    embedded.set_defaults(run=run_redis)

    datasets = commands.add_parser("datasets", help="register and list datasets").add_subparsers(
        required=True, metavar="ACTION")
    add = datasets.add_parser("add", help="upload a zip or a folder (zipped on the fly)")
    add.add_argument("source", type=Path, help="a zip, or a folder of class sub-folders")
    add.add_argument("--name")
    add.add_argument("--by-path", action="store_true",
                     help="register the folder in place (it must be under TLBENCH_DATA_ROOTS on the server)")
    add.set_defaults(run=run_datasets_add)
    listing = datasets.add_parser("list", help="list datasets")
    listing.set_defaults(run=run_datasets_list)
    for sub in (add, listing):
        _add_url_option(sub)

    submit = commands.add_parser("submit", help="submit a benchmark: one job per backbone")
    submit.add_argument("--dataset", type=int, required=True)
    submit.add_argument("--backbones", required=True, help="comma-separated, e.g. VGG16,ResNet50")
    submit.add_argument("--name")
    submit.add_argument("--epochs", type=int)
    submit.add_argument("--batch-size", type=int)
    submit.add_argument("--image-size", type=int)
    submit.add_argument("--learning-rate", type=learning_rates, metavar="RATE[,RATE]",
                        help="one rate, or up to 5 comma-separated (e.g. 1e-3,3e-4): each backbone keeps the best "
                             "by validation accuracy (default 1e-3)")
    submit.add_argument("--repeats", type=int,
                        help="trainings per learning rate, each from its own seed (1 to 10, default 1)")
    submit.add_argument("--patience", type=int)
    submit.add_argument("--weights", help="imagenet, none, or a weights file path")
    submit.add_argument("--augment", action="store_true", default=None)
    submit.add_argument("--fine-tune-layers", type=int)
    submit.add_argument("--seed", type=int)
    submit.add_argument("--validation-split", type=float)
    submit.add_argument("--test-split", type=float, help="images held out for the final test (default 0.15)")
    submit.add_argument("--pool", help="the worker pool to run on (default: default, which every worker serves)")
    submit.add_argument("--wait", action="store_true", help="show live progress, then the final comparison")
    _add_url_option(submit)
    submit.set_defaults(run=run_submit)

    report = commands.add_parser("report", help="save a benchmark's report: one HTML file that opens offline, "
                                                "a CSV row per trial, or a markdown summary")
    report.add_argument("benchmark", type=int, help="the benchmark's id")
    report.add_argument("-o", "--output", help="the file to write (default tlbench-benchmark-ID.FORMAT; - for "
                                                "standard output); its extension picks the format")
    report.add_argument("--format", choices=REPORT_FORMATS, help="html, csv or md (default: from --output, else html)")
    _add_url_option(report)
    report.set_defaults(run=run_report)
    return parser


REPORT_FORMATS = ("html", "csv", "md")
REPORT_EXTENSIONS = {".html": "html", ".htm": "html", ".csv": "csv", ".md": "md", ".markdown": "md"}


def run_report(args) -> int:
    """Fetch one of the benchmark's reports and write it where asked."""
    kind = args.format or REPORT_EXTENSIONS.get(Path(args.output or "").suffix.lower(), "html")
    content = ApiClient(args.url).report(args.benchmark, kind)
    if args.output == "-":
        sys.stdout.buffer.write(content)
        return 0
    path = Path(args.output or f"tlbench-benchmark-{args.benchmark}.{kind}")
    path.write_bytes(content)
    print(f"wrote {path} ({len(content):,} bytes)")
    return 0


def _add_worker_options(parser: argparse.ArgumentParser) -> None:
    """Which workers to start on this host, and the pools they serve."""
    parser.add_argument("--gpus", default="all",
                        help="all (every GPU without a tlbench worker yet, or the CPU when there is no GPU), "
                             "none, or GPU indexes like 0,2: one worker each, pinned to its GPU")
    parser.add_argument("--workers", type=int, default=1,
                        help="CPU workers when there is no GPU (default 1; 0 with --gpus none: no training worker "
                             "on this host, only the prediction worker)")
    parser.add_argument("--pool", "--pools", dest="pools", action="append", default=[], metavar="NAME[,NAME]",
                        help="serve these pools too (each a queue; every worker serves the pool default)")


def _add_url_option(parser: argparse.ArgumentParser) -> None:
    """The server to talk to."""
    parser.add_argument("--url", default=os.environ.get("TLBENCH_URL", DEFAULT_URL),
                        help=f"tlbench server (default $TLBENCH_URL or {DEFAULT_URL})")


def _use_home(home: str | None) -> None:
    """Make --home the state folder of this process and of every child it starts."""
    if home:
        os.environ["TLBENCH_HOME"] = str(Path(home).expanduser().resolve())


def run_up(args) -> int:
    """Run the whole stack in the foreground."""
    from config.settings import load_settings
    from tlbench.stack import check_exposure, run_stack

    check_exposure(args.host)  # before anything is created or started
    pools = _worker_pools(args)
    _use_home(args.home)
    return run_stack(load_settings(), args.host, args.port, workers=args.workers, gpus=args.gpus, pools=tuple(pools))


def run_worker(args) -> int:
    """Run this host's workers in the foreground, once the database and the broker answer."""
    from db.models import DEFAULT_POOL
    from config.settings import load_settings
    from tlbench.stack import check_storage, prepare_state, wait_for_broker
    from tlbench.supervisor import Supervisor
    from worker.launch import worker_processes

    pools = _worker_pools(args)
    _use_home(args.home)
    settings = load_settings()
    # The workers register themselves at start: their table must exist, even before any web app runs.
    prepare_state(settings).dispose()
    check_storage(settings)  # a worker that can't write its artifacts fails now, not mid-job
    # Without a broker they would register, then only retry it; better one line now than that.
    wait_for_broker(settings)
    supervisor = Supervisor()
    specs = worker_processes(settings, args.gpus, cpu_workers=args.workers, pools=pools)
    for spec in specs:
        supervisor.start(spec)
    served = ", ".join(dict.fromkeys([DEFAULT_POOL, *pools]))
    print(f"tlbench: started {', '.join(spec.name for spec in specs)}; pools {served} (Ctrl-C stops them)", flush=True)
    return supervisor.run_until_stopped()


def _worker_pools(args) -> list[str]:
    """The pools of --pool/--pools, checked; and --workers, which must not be negative."""
    from worker.queues import parse_pools

    if args.workers < 0:
        raise ValueError(f"--workers must be 0 or more, not {args.workers}")
    return parse_pools(args.pools)


def run_redis(args) -> int:
    """Run the embedded Redis server in the foreground, on this home's Unix socket."""
    from config.settings import ensure_folders, load_settings
    from tlbench.stack import embedded_redis_process
    from tlbench.supervisor import Supervisor

    _use_home(args.home)
    settings = load_settings()
    ensure_folders(settings)
    supervisor = Supervisor()
    supervisor.start(embedded_redis_process(settings), essential=True)
    return supervisor.run_until_stopped()


def run_datasets_add(args) -> int:
    """Register one dataset and print its id (what `submit --dataset` takes) and what the scan found."""
    dataset = ApiClient(args.url).add_dataset(args.source, name=args.name, by_path=args.by_path)
    print(dataset_line(dataset))
    for skipped in dataset["skipped"][:SKIPPED_FILES_SHOWN]:
        print(f"  skipped {skipped['file']}: {skipped['reason']}")
    if len(dataset["skipped"]) > SKIPPED_FILES_SHOWN:
        print(f"  … and {len(dataset['skipped']) - SKIPPED_FILES_SHOWN} more (GET /api/v1/datasets/{dataset['id']})")
    return 0


def dataset_line(dataset: dict) -> str:
    """One dataset as the CLI names it: "dataset 2: faces (3 classes, 120 images; 1 file skipped)"."""
    skipped = len(dataset["skipped"])
    note = f"; {skipped} file{'s' if skipped != 1 else ''} skipped" if skipped else ""
    counts = f"{len(dataset['classes'])} classes, {dataset['images']} images{note}"
    return f"dataset {dataset['id']}: {dataset['name']} ({counts})"


def run_datasets_list(args) -> int:
    """Print the registered datasets."""
    for dataset in ApiClient(args.url).list_datasets():
        print(f"{dataset['id']:>4}  {dataset['name']}  {len(dataset['classes'])} classes, {dataset['images']} images")
    return 0


def learning_rates(text: str) -> float | list[float]:
    """--learning-rate: "1e-3" is one rate (sent as a number, as before grids existed), "1e-3,3e-4" a grid (a list).

    Only what is not a number is refused here; the server checks ranges, duplicates and how many."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("give one learning rate or several separated by commas, e.g. 1e-3,3e-4")
    try:
        rates = [float(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or a comma-separated list of numbers: {text!r}") from None
    return rates[0] if len(rates) == 1 else rates


SUBMIT_OPTIONS = ("name", "epochs", "batch_size", "image_size", "learning_rate", "repeats", "patience", "weights",
                  "augment", "fine_tune_layers", "seed", "validation_split", "test_split", "pool")


def run_submit(args) -> int:
    """Submit a benchmark; with --wait, follow it to the end, then print the comparison (exit 1 if a job failed)."""
    from tlbench.progress import watch

    request = {"dataset": args.dataset, "backbones": [b.strip() for b in args.backbones.split(",") if b.strip()]}
    request.update({key: getattr(args, key) for key in SUBMIT_OPTIONS if getattr(args, key) is not None})
    client = ApiClient(args.url)
    created = client.submit(request)
    print(f"benchmark {created['id']}: " + ", ".join(f"job {j['id']} {j['backbone']}" for j in created["jobs"]))
    if not args.wait:
        return 0
    # sys.stdout as it is now, not as it was when progress was first imported (tests capture it per test).
    final = watch(client, created["id"], stream=sys.stdout)
    return 0 if all(job["status"] == "succeeded" for job in final["jobs"]) else 1
