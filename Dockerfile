# One image for the web app and the workers; the command picks the role.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TLBENCH_HOME=/var/lib/tlbench \
    KERAS_HOME=/var/lib/tlbench/keras \
    TLBENCH_DATA_ROOTS=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY db ./db
COPY jobs ./jobs
COPY worker ./worker
COPY dashboard ./dashboard
COPY tlbench ./tlbench
RUN pip install --no-cache-dir .

EXPOSE 8000
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "2", "--worker-class", "gthread", "--threads", "8", "dashboard.wsgi:app"]
