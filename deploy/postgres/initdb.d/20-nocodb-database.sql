-- The database NocoDB keeps its own metadata in (docker-compose.yml, profile `nocodb`), apart from the
-- pipeline's. Run once by the postgres image's entrypoint when it initialises an empty data volume.
CREATE DATABASE nocodb;
