# syntax=docker/dockerfile:1
# kinesis-posthog worker: Java 17 + Python 3.11 + this package and its KCL jars.
#
#   docker build -t kinesis-posthog .
#
# Built by the same set-up CI runs (`./run.sh setup`), in its production profile:
# no dev tools, Node.js or emulators. Nothing secret is baked in: POSTHOG_API_KEY comes
# from the environment (an ECS secret), AWS credentials from the task role.
FROM python:3.11-slim-bookworm

# production: run.sh sets up (here, and checks again at every start) only what a
# worker runs. No .pyc files: the code belongs to root and the worker cannot write them.
ENV RUN_SH_SETUP=production \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
# What the package build and a worker need; .dockerignore keeps everything else out.
# (README.md: pyproject.toml names it as the package's readme.)
COPY pyproject.toml setup.py README.md run.sh ./
COPY consumer/ consumer/
COPY properties/aws.properties properties/

# Debian's slim images drop /usr/share/man, where the JRE's postinst links its man pages.
# The pip cache keeps amazon-kclpy's wheel (jars included) between builds: its sdist
# downloads ~60 jars from Maven Central when built. gcc compiles the hot path
# (consumer/hot_path.py; README, "The compiled hot path") and is removed again: the
# compiled modules need only the C library the image has.
RUN --mount=type=cache,target=/root/.cache/pip \
    mkdir -p /usr/share/man/man1 \
    && apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev \
    && ./run.sh setup \
    && .venv/bin/python consumer/hot_path.py --require-compiled \
    && apt-get purge -y -qq --auto-remove gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* build .mypy_cache

RUN groupadd --system --gid 10001 worker \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/worker worker
USER 10001:10001

# run.sh checks the install, then execs `python -m consumer run`, which validates the
# settings and execs java: the KCL daemon is the process ECS's SIGTERM reaches.
ENTRYPOINT ["./run.sh"]
CMD ["properties/aws.properties"]
