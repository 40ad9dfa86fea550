-- The two layouts for PostgresStore that `python -m bench postgres-layout` compares
-- (bench/pg_layouts.py runs them; bench/postgres_layout.md holds the decision).
-- `r_`: one row per key, a save is one call of r_save();
-- `j_`: one jsonb document per session, a save is one UPDATE.

CREATE TABLE r_sessions (
    pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id bytea NOT NULL UNIQUE,
    created_at float8 NOT NULL, updated_at float8 NOT NULL, expires_at float8 NOT NULL,
    purge_after float8 NOT NULL, expiry text, owner text
) WITH (fillfactor = 80);
CREATE INDEX r_sessions_purge ON r_sessions (purge_after);
CREATE TABLE r_data (
    sid bigint NOT NULL REFERENCES r_sessions (pk) ON DELETE CASCADE,
    key text NOT NULL, value text NOT NULL,
    PRIMARY KEY (sid, key)
) WITH (fillfactor = 80);

CREATE FUNCTION r_save(p_id bytea, p_keys text[], p_values text[], p_deleted text[],
                       p_replace bool, p_now float8, p_expires float8)
RETURNS bool LANGUAGE plpgsql AS $$
DECLARE v_pk bigint;
BEGIN
    UPDATE r_sessions SET updated_at = p_now, expires_at = p_expires,
        purge_after = floor(p_expires / 3600) * 3600
    WHERE id = p_id AND expires_at > p_now RETURNING pk INTO v_pk;
    IF NOT FOUND THEN RETURN NULL; END IF;
    IF p_replace THEN
        DELETE FROM r_data WHERE sid = v_pk AND key <> ALL (p_keys);
    ELSIF cardinality(p_deleted) > 0 THEN
        DELETE FROM r_data WHERE sid = v_pk AND key = ANY (p_deleted);
    END IF;
    INSERT INTO r_data (sid, key, value) SELECT v_pk, k, v FROM unnest(p_keys, p_values) AS u(k, v)
    ON CONFLICT (sid, key) DO UPDATE SET value = excluded.value;
    IF NOT EXISTS (SELECT FROM r_data WHERE sid = v_pk) THEN
        DELETE FROM r_sessions WHERE pk = v_pk;
        RETURN false;
    END IF;
    RETURN true;
END $$;

CREATE FUNCTION r_create(p_id bytea, p_keys text[], p_values text[], p_now float8,
                         p_expires float8) RETURNS void LANGUAGE plpgsql AS $$
DECLARE v_pk bigint;
BEGIN
    INSERT INTO r_sessions (id, created_at, updated_at, expires_at, purge_after)
    VALUES (p_id, p_now, p_now, p_expires, floor(p_expires / 3600) * 3600) RETURNING pk INTO v_pk;
    INSERT INTO r_data SELECT v_pk, k, v FROM unnest(p_keys, p_values) AS u(k, v);
END $$;

CREATE TABLE j_sessions (
    id bytea PRIMARY KEY, data jsonb NOT NULL,
    created_at float8 NOT NULL, updated_at float8 NOT NULL, expires_at float8 NOT NULL,
    purge_after float8 NOT NULL, expiry text, owner text
) WITH (fillfactor = 80);
CREATE INDEX j_sessions_purge ON j_sessions (purge_after);
