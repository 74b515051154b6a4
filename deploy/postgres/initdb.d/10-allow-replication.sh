#!/bin/sh
# Lets userpipe's pg_basebackup in (docker-compose.yml, `postgres` service). The postgres image's entrypoint
# runs this once, as postgres, when it initialises an empty data volume; it has already appended
# `host all all all scram-sha-256`, which does not cover replication connections. Password auth from any
# address of the compose network, for the `userpipe` role only (20-roles.sh gives it REPLICATION).
# An existing pgdata volume is not initialised again: add the line to its pg_hba.conf by hand, then
# `docker compose exec postgres psql -U postgres -c 'select pg_reload_conf()'`.
set -eu
echo "host replication userpipe all scram-sha-256" >>"$PGDATA/pg_hba.conf"
