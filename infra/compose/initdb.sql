-- Databases of the team's stack, created on the first start of the Postgres container
-- (docker-entrypoint-initdb.d). The owner is POSTGRES_USER; no password appears here.
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
CREATE DATABASE prefect;
CREATE DATABASE mlra_audit;
