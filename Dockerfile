# One image for the web app and the workers; the command picks the role (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TLBENCH_HOME=/var/lib/tlbench \
    KERAS_HOME=/var/lib/tlbench/keras \
    TLBENCH_DATA_ROOTS=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY db ./db
COPY jobs ./jobs
COPY worker ./worker
COPY dashboard ./dashboard
COPY tlbench ./tlbench
# GPU workers need TensorFlow's CUDA libraries, which come as pip wheels (no CUDA base image needed; the
# host's NVIDIA driver comes in through the NVIDIA Container Toolkit). `--build-arg GPU=0` leaves them out.
ARG GPU=1
RUN pip install --no-cache-dir . \
    && if [ "$GPU" = 1 ]; then pip install --no-cache-dir "tensorflow[and-cuda]==2.21.*"; fi

EXPOSE 8000
# The web app: reachable from other containers and the published port (docker-compose.yml publishes it on
# 127.0.0.1 only; set TLBENCH_TOKEN before publishing it further: docs/security.md).
# The config (tlbench/gunicorn_conf.py) keeps idle connections open 75 s, longer than any client polls, turns off
# gunicorn's control socket, and migrates the database and writes the sample dataset before the workers start.
CMD ["gunicorn", "--config", "python:tlbench.gunicorn_conf", "--bind", "0.0.0.0:8000", "--workers", "2", "--worker-class", "gthread", "--threads", "8", "dashboard.wsgi:app"]
