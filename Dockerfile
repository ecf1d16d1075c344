# One image for the worker, producer and flower services of docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY uuid_migrate ./uuid_migrate
COPY worker ./worker
COPY producer ./producer
COPY config ./config
COPY devtools ./devtools
RUN pip install --no-cache-dir . && useradd --create-home migrate
USER migrate
CMD ["celery", "-A", "worker", "worker", "--loglevel", "INFO"]
