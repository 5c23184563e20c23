#!/bin/sh
# The MLflow tracking server of a team: Postgres store, artifacts proxied to an S3 store (MinIO),
# MLflow's basic-auth app with its users in Postgres too. Everything secret comes from the
# environment; the auth app's config file is written at start, outside the image.
#   MLFLOW_BACKEND_STORE_URI   postgresql+psycopg2://USER:PASSWORD@HOST:5432/mlflow
#   MLFLOW_AUTH_DATABASE_URI   postgresql+psycopg2://USER:PASSWORD@HOST:5432/mlflow_auth
#   MLFLOW_ARTIFACTS_DESTINATION  s3://mlflow   (with MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
#                                               AWS_SECRET_ACCESS_KEY)
#   MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD   the first admin (read by MLflow)
#   MLFLOW_WORKERS (default 2), MLFLOW_ALLOWED_HOSTS (default: localhost and private addresses)
set -eu
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI}"
: "${MLFLOW_AUTH_DATABASE_URI:?set MLFLOW_AUTH_DATABASE_URI}"
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?set MLFLOW_AUTH_ADMIN_PASSWORD}"
config="${TMPDIR:-/tmp}/mlflow-basic-auth.ini"
umask 077
cat > "$config" <<INI
[mlflow]
default_permission = READ
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH="$config"
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
set -- --app-name basic-auth \
    --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
    --serve-artifacts --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-s3://mlflow}" \
    --host 0.0.0.0 --port "${MLFLOW_PORT:-5000}" --workers "${MLFLOW_WORKERS:-2}" "$@"
if [ -n "${MLFLOW_ALLOWED_HOSTS:-}" ]; then
    set -- "$@" --allowed-hosts "$MLFLOW_ALLOWED_HOSTS"
fi
exec mlflow server "$@"
