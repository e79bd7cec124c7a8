# The ledger's processes (API, usage consumers, projection runner) share this image;
# compose.yaml picks the command. Dependencies install from uv.lock exactly.
FROM python:3.11-slim

COPY --from=ghcr.io/astral-sh/uv:0.5 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/ledger-venv \
    PATH=/opt/ledger-venv/bin:$PATH PYTHONUNBUFFERED=1

WORKDIR /app
# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY domain ./domain
COPY services ./services
COPY projections ./projections
COPY adapters ./adapters
RUN uv sync --frozen --no-dev

# Never run as root in the container.
RUN useradd --system --create-home ledger && mkdir -p /run/ledger && chown ledger /run/ledger
USER ledger
ENTRYPOINT ["ledger"]
CMD ["--help"]
