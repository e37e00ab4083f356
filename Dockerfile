# The cdp pipeline service, for docker-compose.yml (machines with a Docker engine).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cdp cdp
COPY ingest ingest
COPY processing processing
COPY storage storage
COPY config config
RUN pip install --no-cache-dir .
VOLUME /data
ENTRYPOINT ["cdp"]
CMD ["ingest", "--db", "/data/cdp.duckdb"]
