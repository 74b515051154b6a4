#!/bin/sh
# The roles of the compose deployment (docker-compose.yml, `postgres` service). The postgres image's
# entrypoint runs this once, when it initialises an empty data volume, as its superuser POSTGRES_USER
# against the database POSTGRES_DB; scripts/container-test runs the same file against its own cluster.
#
#   userpipe  not a superuser: owns POSTGRES_DB (its migrations create random_users and the job journal
#             there), REPLICATION for pg_basebackup, and for `userpipe pgconf`: ALTER SYSTEM on exactly
#             the settings pgconf/archiving.conf names, pg_reload_conf(), pg_file_settings, and
#             pg_ls_archive_statusdir() (WAL waiting to be archived); for `pgconf check --archive`:
#             pg_create_restore_point() and pg_switch_wal(); no membership in any other role
#   nocodb    owns the `nocodb` database (NocoDB's own metadata); in POSTGRES_DB it may connect and read
#             random_users, nothing else
#
# Passwords come from the environment (USERPIPE_DB_PASSWORD, NOCODB_DB_PASSWORD) or from the files named
# by USERPIPE_DB_PASSWORD_FILE and NOCODB_DB_PASSWORD_FILE (Docker secrets). They reach psql through its
# environment (\getenv), never through its arguments. The settings come from PGCONF_FILE (default: where
# the compose file mounts pgconf/archiving.conf).
#
# An existing pgdata volume is not initialised again: run this by hand in the postgres container, e.g.
#   docker compose exec postgres sh /docker-entrypoint-initdb.d/20-roles.sh
set -eu

# VAR from VAR or from the file VAR_FILE names (the official image's convention).
from_env_or_file() {
    name=$1
    eval "value=\${$name:-}"
    eval "file=\${${name}_FILE:-}"
    if [ -n "$value" ] && [ -n "$file" ]; then
        echo "20-roles.sh: both $name and ${name}_FILE are set" >&2
        exit 1
    fi
    if [ -n "$file" ]; then
        value=$(cat -- "$file")
    fi
    if [ -z "$value" ]; then
        echo "20-roles.sh: set $name or ${name}_FILE" >&2
        exit 1
    fi
    export "$name=$value"
}
from_env_or_file USERPIPE_DB_PASSWORD
from_env_or_file NOCODB_DB_PASSWORD

pgconf=${PGCONF_FILE:-/etc/userpipe/pgconf/archiving.conf}
# The names the file sets (`name = value` lines), comma separated: what ALTER SYSTEM may change.
USERPIPE_ALTER_SYSTEM=$(sed -n 's/^[[:space:]]*\([A-Za-z_][A-Za-z0-9_.]*\)[[:space:]]*=.*/\1/p' "$pgconf" |
    tr 'A-Z' 'a-z' | sort -u | paste -sd, -)
if [ -z "$USERPIPE_ALTER_SYSTEM" ]; then
    echo "20-roles.sh: $pgconf sets no setting" >&2
    exit 1
fi
export USERPIPE_ALTER_SYSTEM
export USERPIPE_DATABASE="${POSTGRES_DB:-userpipe}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "${POSTGRES_USER:-postgres}" --dbname "$USERPIPE_DATABASE" <<'SQL'
\getenv userpipe_password USERPIPE_DB_PASSWORD
\getenv nocodb_password NOCODB_DB_PASSWORD
\getenv settings USERPIPE_ALTER_SYSTEM
\getenv database USERPIPE_DATABASE

CREATE ROLE userpipe LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE REPLICATION PASSWORD :'userpipe_password';
CREATE ROLE nocodb LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'nocodb_password';

-- The pipeline's database: userpipe owns it, and so the `public` schema (owned by pg_database_owner) where
-- its migrations create tables. Only userpipe and nocodb may connect.
ALTER DATABASE :"database" OWNER TO userpipe;
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"database" TO nocodb;

-- pgconf: ALTER SYSTEM on the archiving settings, and nothing else.
SELECT format('GRANT ALTER SYSTEM ON PARAMETER %I TO userpipe', name)
  FROM unnest(string_to_array(:'settings', ',')) AS name \gexec
GRANT EXECUTE ON FUNCTION pg_catalog.pg_reload_conf() TO userpipe;
GRANT SELECT ON pg_catalog.pg_file_settings TO userpipe;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_show_all_file_settings() TO userpipe;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_archive_statusdir() TO userpipe;
-- The archive check (`pgconf check --archive`, pgconf-enforce's archive_check): a restore point, a WAL switch.
GRANT EXECUTE ON FUNCTION pg_catalog.pg_create_restore_point(text) TO userpipe;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_switch_wal() TO userpipe;

-- NocoDB reads random_users, which userpipe's first migration creates after this script has run: an event
-- trigger grants SELECT on it whenever a table of that name is created (and only that table). It runs as
-- this superuser, in a schema userpipe cannot change.
CREATE SCHEMA deploy;
REVOKE ALL ON SCHEMA deploy FROM PUBLIC;
CREATE FUNCTION deploy.nocodb_reads_random_users() RETURNS event_trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
DECLARE
  created record;
BEGIN
  FOR created IN SELECT * FROM pg_event_trigger_ddl_commands()
                 WHERE command_tag = 'CREATE TABLE' AND object_type = 'table' LOOP
    IF created.objid = to_regclass('public.random_users') THEN
      GRANT SELECT ON TABLE public.random_users TO nocodb;
    END IF;
  END LOOP;
END
$fn$;
REVOKE ALL ON FUNCTION deploy.nocodb_reads_random_users() FROM PUBLIC;
CREATE EVENT TRIGGER nocodb_reads_random_users ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
  EXECUTE FUNCTION deploy.nocodb_reads_random_users();
-- A database initialised after random_users exists (a restore, say) gets the grant here.
DO $do$ BEGIN
  IF to_regclass('public.random_users') IS NOT NULL THEN
    GRANT SELECT ON TABLE public.random_users TO nocodb;
  END IF;
END $do$;

CREATE DATABASE nocodb OWNER nocodb;
SQL
