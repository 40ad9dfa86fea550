-- PostgresStore schema, version 2. Run by the store on first use, in one transaction,
-- under an advisory lock (so that several processes starting at once do not collide).
-- Names in braces are replaced by quoted, optionally schema-qualified identifiers built from the
-- store's `table` and `schema` options; nothing else is substituted.
--
-- Layout (chosen by measurement, see bench/postgres_layout.md): one row per session, one
-- row per top-level key. A save rewrites the keys it changed and one session row, whatever
-- the size of the session; a key rotation updates one column of one row.

CREATE TABLE {sessions} (
    pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- SHA-256 of the session key: a leaked table cannot be replayed as cookies.
    id bytea NOT NULL UNIQUE,
    created_at float8 NOT NULL,      -- seconds since the epoch (the store's clock)
    updated_at float8 NOT NULL,
    expires_at float8 NOT NULL,      -- alive while now < expires_at
    -- expires_at floored to the hour. Only this column is indexed for the purge: every
    -- save moves expires_at, and an update that changes an indexed column cannot be HOT
    -- (PostgreSQL 15: any index; 16+: any but BRIN). This one changes once an hour.
    purge_after float8 NOT NULL,
    expiry text,                     -- the session's set_expiry() choice, opaque
    owner text
) WITH (fillfactor = 80);            -- room on each page for HOT updates

CREATE INDEX {purge_index} ON {sessions} (purge_after, pk);
CREATE INDEX {owner_index} ON {sessions} (owner, created_at) WHERE owner IS NOT NULL;

CREATE TABLE {data} (
    sid bigint NOT NULL REFERENCES {sessions} (pk) ON DELETE CASCADE,
    key text NOT NULL,
    value text NOT NULL,             -- the serializer's text for the value
    PRIMARY KEY (sid, key)
) WITH (fillfactor = 80);

CREATE TABLE {meta} (
    version integer NOT NULL
);
INSERT INTO {meta} (version) VALUES (2);

-- When a record written at `now` ends, from the expiry setting in force after the merge
-- (mirrors asgi_sessions.expiry.resolve_expires_at): a fixed moment "a:<ts>" is kept;
-- "s:<n>" (n seconds of inactivity, n <> 0) ends at now + n; anything else (no setting,
-- or "s:0", the browser-session cookie) at the middleware's default; never past `cap`.
CREATE FUNCTION {expires_at}(setting text, now float8, default_expires float8, cap float8)
RETURNS float8 LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT LEAST(
        CASE
            WHEN setting LIKE 'a:%' THEN substr(setting, 3)::float8
            WHEN setting LIKE 's:%' AND substr(setting, 3)::numeric <> 0
                THEN now + substr(setting, 3)::float8
            ELSE default_expires
        END,
        cap)  -- LEAST ignores NULL: no cap
$$;

-- The id a session is listed under for its owner: sha256("public:" + hex id)[:24].
CREATE FUNCTION {public_id}(id bytea) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT left(encode(sha256(convert_to('public:' || encode(id, 'hex'), 'UTF8')), 'hex'), 24)
$$;

-- Apply one save atomically (the hooks write() and move() of asgi_sessions.stores.base):
-- create a record, merge changes into one, or merge and move it to a new id (a key
-- rotation). One call is one statement: one round trip, and atomic.
--   p_create:  a new record under p_id (status 3 if a live one holds p_id already);
--   otherwise: merge into the live record p_id (status 2 if it is gone), then, when
--              p_new_id is given, move it there (status 3 if a live one holds p_new_id;
--              the old id is dead from that instant).
-- The merge: p_replace drops every stored key, else p_deleted are dropped; then p_keys
-- are written with p_values; owner and expiry only when *_changed; expires_at is
-- recomputed from the setting in force after the merge. p_live_at is the store's clock
-- (what "alive" means), p_now the request's time (updated_at, inactivity windows).
-- p_merge_keys/p_merge_ops: lists and counters applied to the value stored now (mirrors
-- asgi_sessions.stores.base.merge_value): an op is an integer delta, or a JSON array
-- [[seen items], [appended items]] whose items are the serializer's texts. Values are
-- split with the json type (not jsonb), whose elements are slices of the stored text, so
-- what is spliced back reads byte-identical to what the serializer would write.
-- Returns status 0 (saved) or 1 (the merge left no key: the record was deleted), with
-- the record's expires_at and expiry setting.
-- version 2: begin write
CREATE OR REPLACE FUNCTION {write}(
    p_id bytea, p_new_id bytea, p_create bool, p_replace bool,
    p_keys text[], p_values text[], p_deleted text[],
    p_live_at float8, p_now float8, p_default_expires float8, p_cap float8,
    p_created_at float8, p_owner text, p_owner_changed bool,
    p_expiry text, p_expiry_changed bool,
    p_merge_keys text[], p_merge_ops text[],
    OUT o_status int, OUT o_expires_at float8, OUT o_expiry text)
LANGUAGE plpgsql AS $$
DECLARE
    v_pk bigint;
    v_dropped bool := false;
    v_cur text;
    v_new text;
    v_items text[];
    v_seen text[];
    v_drop int;
BEGIN
    IF p_create OR p_new_id IS NOT NULL THEN
        -- A record that only the clock calls dead may still hold the id: replace it.
        DELETE FROM {sessions} AS s
        WHERE s.id = coalesce(p_new_id, p_id) AND s.expires_at <= p_live_at;
        IF EXISTS (SELECT FROM {sessions} AS s WHERE s.id = coalesce(p_new_id, p_id)) THEN
            o_status := 3;
            RETURN;
        END IF;
    END IF;
    IF p_create THEN
        o_expires_at := {expires_at}(p_expiry, p_now, p_default_expires, p_cap);
        o_expiry := p_expiry;
        -- ON CONFLICT: two creates racing for one id (never, with random keys) make one
        -- of them a collision rather than a unique-violation error.
        INSERT INTO {sessions} AS s
            (id, created_at, updated_at, expires_at, purge_after, expiry, owner)
        VALUES (p_id, p_created_at, p_now, o_expires_at, floor(o_expires_at / 3600) * 3600,
                p_expiry, p_owner)
        ON CONFLICT (id) DO NOTHING
        RETURNING s.pk INTO v_pk;
        IF v_pk IS NULL THEN
            o_status := 3;
            RETURN;
        END IF;
    ELSE
        -- Lock the session row first, always: concurrent saves of one session queue
        -- here, a session deleted meanwhile is found gone before any data row is
        -- touched (no orphan rows, no foreign-key error), and the purge, which locks
        -- session rows first too, cannot deadlock with a save.
        UPDATE {sessions} AS s SET
            id = coalesce(p_new_id, s.id),
            updated_at = p_now,
            owner = CASE WHEN p_owner_changed THEN p_owner ELSE s.owner END,
            expiry = CASE WHEN p_expiry_changed THEN p_expiry ELSE s.expiry END,
            -- The setting in force is the stored row's as this UPDATE sees it (the newest
            -- version, after any lock wait), unless this request changed it.
            expires_at = {expires_at}(
                CASE WHEN p_expiry_changed THEN p_expiry ELSE s.expiry END,
                p_now, p_default_expires, p_cap),
            purge_after = floor({expires_at}(
                CASE WHEN p_expiry_changed THEN p_expiry ELSE s.expiry END,
                p_now, p_default_expires, p_cap) / 3600) * 3600
        WHERE s.id = p_id AND s.expires_at > p_live_at
        RETURNING s.pk, s.expires_at, s.expiry INTO v_pk, o_expires_at, o_expiry;
        IF v_pk IS NULL THEN
            o_status := 2;
            RETURN;
        END IF;
        IF p_replace THEN
            DELETE FROM {data} AS d WHERE d.sid = v_pk AND d.key <> ALL (p_keys);
        ELSIF cardinality(p_deleted) > 0 THEN
            -- A key deleted and set again in one request is only upserted, never deleted
            -- and re-inserted (Spring Session #1070).
            DELETE FROM {data} AS d
            WHERE d.sid = v_pk AND d.key = ANY (p_deleted) AND d.key <> ALL (p_keys);
        END IF;
    END IF;
    FOR i IN 1 .. coalesce(cardinality(p_merge_keys), 0) LOOP
        -- Under the session row's lock (taken above): no other save runs in between.
        SELECT d.value INTO v_cur FROM {data} AS d WHERE d.sid = v_pk AND d.key = p_merge_keys[i];
        v_new := v_cur;
        IF left(p_merge_ops[i], 1) <> '[' THEN
            IF v_cur IS NULL THEN
                v_new := p_merge_ops[i];
            ELSIF v_cur ~ '^-?(0|[1-9][0-9]*)$' THEN
                v_new := (v_cur::numeric + p_merge_ops[i]::numeric)::text;
            END IF;
        ELSIF v_cur IS NULL OR left(v_cur, 1) = '[' THEN
            v_items := '{}';
            IF v_cur IS NOT NULL THEN
                SELECT coalesce(array_agg(e::text ORDER BY n), '{}') INTO v_items
                FROM json_array_elements(v_cur::json) WITH ORDINALITY AS t (e, n);
            END IF;
            SELECT coalesce(array_agg(e::text ORDER BY n), '{}') INTO v_seen
            FROM json_array_elements(p_merge_ops[i]::json -> 0) WITH ORDINALITY AS t (e, n);
            -- Drop the longest tail of what this request saw that still leads the list.
            v_drop := 0;
            FOR k IN REVERSE least(cardinality(v_seen), cardinality(v_items)) .. 1 LOOP
                IF v_seen[cardinality(v_seen) - k + 1 : cardinality(v_seen)] = v_items[1 : k] THEN
                    v_drop := k;
                    EXIT;
                END IF;
            END LOOP;
            SELECT v_items[v_drop + 1 : cardinality(v_items)]
                   || coalesce(array_agg(e::text ORDER BY n), '{}')
            INTO v_items
            FROM json_array_elements(p_merge_ops[i]::json -> 1) WITH ORDINALITY AS t (e, n);
            IF cardinality(v_items) = 0 THEN
                v_new := NULL;
            ELSE
                v_new := '[' || array_to_string(v_items, ',') || ']';
            END IF;
        END IF;
        IF v_new IS NULL THEN
            IF v_cur IS NOT NULL THEN
                DELETE FROM {data} AS d WHERE d.sid = v_pk AND d.key = p_merge_keys[i];
                v_dropped := true;
            END IF;
        ELSIF v_new IS DISTINCT FROM v_cur THEN
            INSERT INTO {data} AS d (sid, key, value) VALUES (v_pk, p_merge_keys[i], v_new)
            ON CONFLICT (sid, key) DO UPDATE SET value = excluded.value;
        END IF;
    END LOOP;
    IF cardinality(p_keys) > 0 THEN
        INSERT INTO {data} AS d (sid, key, value)
        SELECT v_pk, u.k, u.v FROM unnest(p_keys, p_values) AS u (k, v)
        ON CONFLICT (sid, key) DO UPDATE SET value = excluded.value;
    ELSIF (p_create OR p_replace OR cardinality(p_deleted) > 0 OR v_dropped)
          AND NOT EXISTS (SELECT FROM {data} AS d WHERE d.sid = v_pk) THEN
        -- Emptiness is decided here, after the merge and under the session row's lock:
        -- a request that popped the last key it saw deletes the record only if no
        -- other request added a key since.
        DELETE FROM {sessions} AS s WHERE s.pk = v_pk;
        o_status := 1;
        RETURN;
    END IF;
    o_status := 0;
END
$$;
-- version 2: end write
