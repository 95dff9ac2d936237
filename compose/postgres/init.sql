-- The role the gateway connects as: it may use the shop database and create its own tables
-- there, nothing more. Not a superuser, so a handler cannot read the server's files
-- (pg_read_file), run programs (COPY ... PROGRAM) or touch other databases' roles.
-- Run once by the postgres image on an empty data directory (/docker-entrypoint-initdb.d);
-- tests/test_compose_topology.py runs it against the local server too. Idempotent.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'shop_app') THEN
        CREATE ROLE shop_app LOGIN PASSWORD 'shop_app'
            NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO shop_app', current_database());
END
$$;
GRANT USAGE, CREATE ON SCHEMA public TO shop_app;
