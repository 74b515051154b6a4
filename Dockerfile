# The userpipe image: a Rust build stage, then a Debian 12 runtime holding the binary and the PostgreSQL 15
# programs that base backups and restore drills run. docker-compose.yml builds it;
# tests/static_checks/deploy.rs checks this file against the compose file, the code and the README (no Docker
# needed for that); scripts/image builds it and scripts/container-test runs it. No `# syntax=` line: Docker's
# built-in Dockerfile frontend (dockerd 20.10 and later) has everything used here, `RUN --mount=type=cache`
# included, and a syntax line makes BuildKit fetch the frontend image from a registry before it builds
# anything.

# ---- build -------------------------------------------------------------------------------------------------
FROM rust:1-bookworm AS build

# rdkafka-sys builds librdkafka from its bundled source with librdkafka's own ./configure (bash) and make, so
# it needs a C and C++ toolchain; zlib is its one default codec (libz-sys finds zlib1g-dev through
# pkg-config); no cmake, python or SASL. reqwest's native-tls links OpenSSL (libssl-dev, found by
# pkg-config). The rust image ships most of these already: naming them keeps the build honest if it changes.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# Dependencies first: this layer is rebuilt only when Cargo.toml or Cargo.lock change. `cargo fetch` needs a
# target to read the manifest, hence the empty stand-in library (the real sources replace it below).
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && touch src/lib.rs && cargo fetch --locked && rm -rf src

# The sources, and the migrations that `sqlx::migrate!` embeds at compile time. target/ is a BuildKit cache
# mount, so compiled dependencies survive between builds on one builder; the binary is copied out of it.
COPY src ./src
COPY migrations ./migrations
RUN --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin userpipe \
 && install -D -m 0755 target/release/userpipe /out/userpipe

# ---- runtime -----------------------------------------------------------------------------------------------
FROM debian:bookworm-slim

# The user userpipe runs as. 999:999 is the uid and gid of `postgres` in the official postgres image (the
# `postgres` service in docker-compose.yml): its archive_command writes WAL segments into the shared
# `wal-archive` volume as 999 with mode 0600, and userpipe must read them for restore drills (and remove old
# ones, should retention prune the archive). Same ids, same owner: no world-readable archive, no root.
# Base backups need no shared ids: pg_basebackup streams over the replication protocol and userpipe writes
# them itself. For a PostgreSQL running under other ids:
#   docker build --build-arg USERPIPE_UID=... --build-arg USERPIPE_GID=... .
ARG USERPIPE_UID=999
ARG USERPIPE_GID=999
# Created before the PostgreSQL packages so that 999 is still free; Debian's own `postgres` user, which
# those packages add, takes another system id.
RUN groupadd --system --gid "${USERPIPE_GID}" userpipe \
 && useradd --system --uid "${USERPIPE_UID}" --gid userpipe --no-create-home \
      --home-dir /var/lib/userpipe --shell /usr/sbin/nologin userpipe

# ca-certificates for https://randomuser.me; libssl3 for native-tls (zlib, libgcc and libc are in the base).
# postgresql-15 brings pg_basebackup, pg_verifybackup (client package) and pg_ctl, postgres (server) under
# /usr/lib/postgresql/15/bin, for base backups and restore drills. postgresql-common goes in first so it can
# be told not to create the Debian default cluster: this image never runs a database of its own.
# en_US.UTF-8 is the locale the official postgres image initialises clusters with; a restore drill starts
# PostgreSQL on a copy of that cluster, which refuses connections where the locale does not exist. The slim
# base tells dpkg to leave out /usr/share/locale, where `locales` keeps locale.alias: that exclusion goes
# first, as in the official postgres image. The drill's server uses its own scratch folder for its socket,
# so userpipe needs no membership in Debian's `postgres` group (USER below, a uid:gid pair, would drop
# supplementary groups anyway). `apt-get clean` drops the downloaded packages from the layer.
RUN if [ -f /etc/dpkg/dpkg.cfg.d/docker ]; then \
      sed -i '/\/usr\/share\/locale/d' /etc/dpkg/dpkg.cfg.d/docker; \
    fi \
 && apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 locales postgresql-common \
 && sed -ri 's/^#?[[:space:]]*create_main_cluster[[:space:]]*=.*$/create_main_cluster = false/' \
      /etc/postgresql-common/createcluster.conf \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && localedef -i en_US -c -f UTF-8 -A /usr/share/locale/locale.alias en_US.UTF-8 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*

COPY --from=build /out/userpipe /usr/local/bin/userpipe

# Shipped schedules and the desired WAL-archiving settings. docker-compose.yml mounts ./schedules and
# ./pgconf over these, so operators edit them in the checkout and userpipe reloads them.
COPY schedules/ /etc/userpipe/schedules/
COPY pgconf/ /etc/userpipe/pgconf/

# Working folder, backups, and the WAL archive's mount point, owned by userpipe: an empty named volume
# mounted here starts out with this owner.
RUN install -d -o userpipe -g userpipe -m 0750 \
      /var/lib/userpipe /var/lib/userpipe/backups /var/lib/postgresql/wal-archive

# Configuration comes from the environment (README.md, "Configuration"); no userpipe.toml in the image.
ENV USERPIPE_SCHEDULES=/etc/userpipe/schedules \
    USERPIPE_PGCONF=/etc/userpipe/pgconf/archiving.conf \
    USERPIPE_HTTP_ADDR=0.0.0.0:8080 \
    USERPIPE_BACKUP_DIR=/var/lib/userpipe/backups \
    USERPIPE_WAL_ARCHIVE=/var/lib/postgresql/wal-archive \
    USERPIPE_PG_BIN=/usr/lib/postgresql/15/bin \
    USERPIPE_LOG_FORMAT=json \
    LANG=C.UTF-8

USER ${USERPIPE_UID}:${USERPIPE_GID}
WORKDIR /var/lib/userpipe

# /healthz, /readyz, /metrics and /api/jobs.
EXPOSE 8080

# `userpipe health` exits 0 when /readyz answers ready.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["userpipe", "health"]

ENTRYPOINT ["userpipe"]
CMD ["run"]
