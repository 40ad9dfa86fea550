-- The statements PostgresStore runs, one per `-- name:` section (loaded by postgres.py).
-- Names in braces are the store's tables and functions (see postgres_schema.sql). Each
-- statement is one round trip.

-- name: load
-- An expired record still answers, as one row without data: the same lookup tells
-- "expired" from "missing" (for the expired event) and reads no data of a dead session.
-- OFFSET 0 keeps the subquery apart, so that its test of the session row is a one-time
-- filter that skips the data scan; in an ON clause it would be a join filter, applied
-- to data rows already read. A live load reads what it read before (EXPLAIN: same
-- index scans, same buffers). The device is left out (StoredSession.device stays None):
-- no request needs it, only list does, and here it would repeat on every data row.
SELECT s.created_at, s.updated_at, s.expires_at, s.expiry, s.owner, d.key, d.value
FROM {sessions} AS s LEFT JOIN LATERAL (
    SELECT key, value FROM {data} WHERE sid = s.pk AND s.expires_at > $2 OFFSET 0
) AS d ON true
WHERE s.id = $1

-- name: write
SELECT * FROM {write}($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                      $17, $18, $19)

-- name: remove
DELETE FROM {sessions} WHERE id = $1

-- name: purge
-- One batch of the purge: lock up to $4 expired sessions past the cursor ($2, $3 = the
-- last (purge_after, pk) deleted), skipping rows a save holds, and delete their data rows
-- and them. The cursor means no batch rescans what an earlier one passed over (sessions
-- still alive in the current hour's bucket). Returns how many, the new cursor, and the
-- seconds the statement has run so far: the time its locks have been held, measured by
-- the server (the client's view adds network and scheduling delays).
WITH doomed AS (
    SELECT pk, purge_after FROM {sessions}
    WHERE purge_after <= $1 AND expires_at <= $1 AND (purge_after, pk) > ($2, $3)
    ORDER BY purge_after, pk
    LIMIT $4
    FOR UPDATE SKIP LOCKED
), gone_data AS (
    DELETE FROM {data} AS d USING doomed WHERE d.sid = doomed.pk
), gone AS (
    DELETE FROM {sessions} AS s USING doomed WHERE s.pk = doomed.pk
    RETURNING doomed.purge_after, doomed.pk
), last AS (
    SELECT purge_after, pk FROM gone ORDER BY purge_after DESC, pk DESC LIMIT 1
)
SELECT (SELECT count(*) FROM gone), last.purge_after, last.pk,
       extract(epoch FROM clock_timestamp() - statement_timestamp())::float8
FROM (SELECT 1) AS one LEFT JOIN last ON true

-- name: list
SELECT encode(id, 'hex'), created_at, updated_at, expires_at, device FROM {sessions}
WHERE owner = $1 AND expires_at > $2 ORDER BY created_at, pk

-- name: revoke
DELETE FROM {sessions}
WHERE owner = $1 AND expires_at > $2 AND {public_id}(id) = $3

-- name: revoke_all
DELETE FROM {sessions}
WHERE owner = $1 AND expires_at > $2 AND ($3::text IS NULL OR {public_id}(id) <> $3)

-- name: stats
-- For operators (python -m asgi_sessions stats URL): scans both tables. Live sessions,
-- expired ones, distinct owners of live sessions, bytes, and live import markers: records
-- whose only data key is $2 ("_imported", written by asgi_sessions.importers), counted
-- apart from the sessions.
WITH marker AS (
    SELECT sid FROM {data} GROUP BY sid HAVING count(*) = 1 AND bool_and(key = $2)
)
SELECT count(*) FILTER (WHERE s.expires_at > $1 AND marker.sid IS NULL),
       count(*) FILTER (WHERE s.expires_at <= $1),
       count(DISTINCT s.owner) FILTER (WHERE s.expires_at > $1 AND marker.sid IS NULL),
       pg_total_relation_size('{sessions}') + pg_total_relation_size('{data}'),
       count(*) FILTER (WHERE s.expires_at > $1 AND marker.sid IS NOT NULL)
FROM {sessions} AS s LEFT JOIN marker ON marker.sid = s.pk
