"""gunicorn settings that every start of the web app uses (`tlbench up`, the Procfile, the container image):
`gunicorn --config python:tlbench.gunicorn_conf --bind HOST:PORT ... dashboard.wsgi:app`.

gunicorn reads the lower-case names below that are its settings and ignores the rest.
"""
import sys

# How long an idle kept-alive connection stays open: far longer than any client waits between polls
# (the CLI's `--wait` every 2 s, the pages every 1 to 3 s). gunicorn's default, 2 s, equals the CLI's
# interval, so a poll often arrived just as the server closed the connection and was reset.
KEEPALIVE_SECONDS = 75

keepalive = KEEPALIVE_SECONDS
# gunicorn >= 25 opens a control socket at one path per user (~/.gunicorn/gunicorn.ctl), which every
# stack of that user would share; tlbench never uses it. (Older gunicorn ignores this name.)
control_socket_disable = True


def on_starting(server) -> None:
    """In gunicorn's master, before any worker: stop with one line if the database can't be used; else
    migrate it and write the sample dataset, so the dashboard's sample button works however it started."""
    from db.session import DatabaseUnusable
    from config.settings import load_settings
    from tlbench.stack import prepare_web_state

    try:
        prepare_web_state(load_settings())
    except DatabaseUnusable as error:
        print(f"tlbench: {error}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
