-- 010_registry.sql: the model registry: every model version fmserve may
-- serve, the role each one has (at most one stable, at most one canary),
-- and the history of role changes. Role changes go through the functions
-- below, each in the caller's transaction, and end with NOTIFY on the
-- channel fm_registry, which the servers LISTEN on (docs/lifecycle.md).

CREATE TYPE fm_registry_role AS ENUM ('stable', 'canary', 'archived', 'none');

-- One row per model version. `version` is the id the server serves and
-- routes by (the sidecar's "version"), so it is unique across the registry.
CREATE TABLE model_versions (
    version          text             NOT NULL,
    name             text             NOT NULL,
    arch             text             NOT NULL,
    artifact_uri     text             NOT NULL,
    weights_sha256   text             NOT NULL,
    metrics          jsonb            NOT NULL DEFAULT '{}',
    mlflow_run_id    text,
    mlflow_model     text,
    mlflow_version   text,
    role             fm_registry_role NOT NULL DEFAULT 'none',
    trained_at       timestamptz,
    created_at       timestamptz      NOT NULL DEFAULT now(),
    registered_by    text             NOT NULL,
    CONSTRAINT model_versions_pk PRIMARY KEY (version),
    -- What the server can hold (64-byte fields) and route by.
    CONSTRAINT model_versions_version_ck CHECK (version ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
    CONSTRAINT model_versions_name_ck CHECK (length(name) BETWEEN 1 AND 63),
    CONSTRAINT model_versions_arch_ck CHECK (arch IN ('mlp', 'cnn')),
    CONSTRAINT model_versions_artifact_ck CHECK (length(artifact_uri) BETWEEN 1 AND 1000),
    CONSTRAINT model_versions_sha256_ck CHECK (weights_sha256 ~ '^[0-9a-f]{64}$'),
    CONSTRAINT model_versions_metrics_ck CHECK (jsonb_typeof(metrics) = 'object')
);
-- At most one stable and at most one canary, whatever writes the table.
CREATE UNIQUE INDEX model_versions_one_stable ON model_versions (role) WHERE role = 'stable';
CREATE UNIQUE INDEX model_versions_one_canary ON model_versions (role) WHERE role = 'canary';

-- One row per version whose role changed; the rows of one command share an
-- operation id. For a change to 'stable', previous_stable is the version it
-- replaced in the line of stable versions: rollback restores it.
CREATE SEQUENCE model_role_operation_seq;
CREATE TABLE model_role_changes (
    id              bigserial        NOT NULL,
    operation_id    bigint           NOT NULL,
    operation       text             NOT NULL,
    version         text             NOT NULL,
    from_role       fm_registry_role NOT NULL,
    to_role         fm_registry_role NOT NULL,
    previous_stable text,
    changed_at      timestamptz      NOT NULL DEFAULT now(),
    changed_by      text             NOT NULL,
    db_user         text             NOT NULL DEFAULT current_user,
    reason          text             NOT NULL DEFAULT '',
    CONSTRAINT model_role_changes_pk PRIMARY KEY (id),
    CONSTRAINT model_role_changes_version_fk FOREIGN KEY (version) REFERENCES model_versions (version),
    CONSTRAINT model_role_changes_previous_fk FOREIGN KEY (previous_stable) REFERENCES model_versions (version),
    CONSTRAINT model_role_changes_operation_ck
        CHECK (operation IN ('register', 'promote', 'set-canary', 'rollback', 'archive'))
);
CREATE INDEX model_role_changes_version_ix ON model_role_changes (version, id);

-- The roles now, as one JSON object: what NOTIFY carries and what a server
-- compares with what it serves.
CREATE FUNCTION fm_registry_roles_json(p_operation text, p_operation_id bigint)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'operation', p_operation,
        'operation_id', p_operation_id,
        'stable', (SELECT version FROM model_versions WHERE role = 'stable'),
        'canary', (SELECT version FROM model_versions WHERE role = 'canary'))::text;
$$;

-- Serializes role changes: the check-then-update below must not interleave
-- with another command's (the unique indexes would catch it, with a less
-- helpful message).
CREATE FUNCTION fm_registry_lock() RETURNS void LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(7380660287854572133);  -- "fm_regis" + 1
$$;

-- Moves one version to a role and records the change (no checks, no NOTIFY).
CREATE FUNCTION fm_registry_move(p_op bigint, p_operation text, p_version text, p_to fm_registry_role,
                                 p_previous_stable text, p_by text, p_reason text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_from fm_registry_role;
BEGIN
    SELECT role INTO v_from FROM model_versions WHERE version = p_version FOR UPDATE;
    UPDATE model_versions SET role = p_to WHERE version = p_version;
    INSERT INTO model_role_changes (operation_id, operation, version, from_role, to_role, previous_stable,
                                    changed_by, reason)
    VALUES (p_op, p_operation, p_version, v_from, p_to, p_previous_stable, p_by, coalesce(p_reason, ''));
END;
$$;

-- Gives `p_version` the role `p_role` ('stable' or 'canary'):
--  stable: the current stable is archived (and remembered, for rollback);
--          a version that was the canary leaves that role.
--  canary: the current canary is archived; the stable cannot be the canary.
-- p_version NULL with 'stable' promotes the current canary. Returns the
-- operation id. Errors (SQLSTATE P0002 for an unknown version, P0001
-- otherwise) say what is wrong in words an operator can act on.
CREATE FUNCTION fm_registry_promote(p_version text, p_role fm_registry_role, p_by text, p_reason text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_op bigint;
    v_role fm_registry_role;
    v_stable text;
    v_canary text;
BEGIN
    PERFORM fm_registry_lock();
    SELECT version INTO v_stable FROM model_versions WHERE role = 'stable';
    SELECT version INTO v_canary FROM model_versions WHERE role = 'canary';
    IF p_version IS NULL THEN
        IF p_role <> 'stable' THEN
            RAISE EXCEPTION 'name the version to make the %', p_role;
        END IF;
        IF v_canary IS NULL THEN
            RAISE EXCEPTION 'there is no canary to promote'
                USING HINT = 'name a version (fmctl models promote VERSION) or set a canary first (--role canary)';
        END IF;
        p_version := v_canary;
    END IF;
    SELECT role INTO v_role FROM model_versions WHERE version = p_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown model version "%"', p_version
            USING ERRCODE = 'P0002', HINT = 'fmctl models list shows the registered versions';
    END IF;
    IF p_role NOT IN ('stable', 'canary') THEN
        RAISE EXCEPTION 'a version can be promoted to stable or canary, not %', p_role;
    END IF;
    IF v_role = p_role THEN
        RAISE EXCEPTION 'version % is already the %', p_version, p_role;
    END IF;
    IF p_role = 'canary' AND v_role = 'stable' THEN
        RAISE EXCEPTION 'version % is the stable version and cannot also be the canary', p_version;
    END IF;
    v_op := nextval('model_role_operation_seq');
    IF p_role = 'stable' THEN
        IF v_stable IS NOT NULL THEN
            PERFORM fm_registry_move(v_op, 'promote', v_stable, 'archived', NULL, p_by, p_reason);
        END IF;
        PERFORM fm_registry_move(v_op, 'promote', p_version, 'stable', v_stable, p_by, p_reason);
    ELSE
        IF v_canary IS NOT NULL THEN
            PERFORM fm_registry_move(v_op, 'set-canary', v_canary, 'archived', NULL, p_by, p_reason);
        END IF;
        PERFORM fm_registry_move(v_op, 'set-canary', p_version, 'canary', NULL, p_by, p_reason);
    END IF;
    PERFORM pg_notify('fm_registry', fm_registry_roles_json(CASE p_role WHEN 'stable' THEN 'promote'
                                                                        ELSE 'set-canary' END, v_op));
    RETURN v_op;
END;
$$;

-- Restores the stable version that the current one replaced, walking back
-- along the line of stable versions (two rollbacks go back two versions).
-- The current stable is archived. Returns the operation id.
CREATE FUNCTION fm_registry_rollback(p_by text, p_reason text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_op bigint;
    v_stable text;
    v_prev text;
    v_prev_prev text;
BEGIN
    PERFORM fm_registry_lock();
    SELECT version INTO v_stable FROM model_versions WHERE role = 'stable';
    IF v_stable IS NULL THEN
        RAISE EXCEPTION 'nothing to roll back: there is no stable version';
    END IF;
    SELECT previous_stable INTO v_prev FROM model_role_changes
    WHERE version = v_stable AND to_role = 'stable' ORDER BY id DESC LIMIT 1;
    IF v_prev IS NULL THEN
        RAISE EXCEPTION 'nothing to roll back: % is the first stable version in the history', v_stable;
    END IF;
    SELECT previous_stable INTO v_prev_prev FROM model_role_changes
    WHERE version = v_prev AND to_role = 'stable' ORDER BY id DESC LIMIT 1;
    v_op := nextval('model_role_operation_seq');
    PERFORM fm_registry_move(v_op, 'rollback', v_stable, 'archived', NULL, p_by, p_reason);
    PERFORM fm_registry_move(v_op, 'rollback', v_prev, 'stable', v_prev_prev, p_by, p_reason);
    PERFORM pg_notify('fm_registry', fm_registry_roles_json('rollback', v_op));
    RETURN v_op;
END;
$$;

-- Takes a version out of service (the canary, or a version with no role).
-- The stable version cannot be archived: something must serve.
CREATE FUNCTION fm_registry_archive(p_version text, p_by text, p_reason text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_op bigint;
    v_role fm_registry_role;
BEGIN
    PERFORM fm_registry_lock();
    SELECT role INTO v_role FROM model_versions WHERE version = p_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown model version "%"', p_version
            USING ERRCODE = 'P0002', HINT = 'fmctl models list shows the registered versions';
    END IF;
    IF v_role = 'stable' THEN
        RAISE EXCEPTION 'version % is the stable version and cannot be archived', p_version
            USING HINT = 'promote another version or roll back first';
    END IF;
    IF v_role = 'archived' THEN
        RAISE EXCEPTION 'version % is already archived', p_version;
    END IF;
    v_op := nextval('model_role_operation_seq');
    PERFORM fm_registry_move(v_op, 'archive', p_version, 'archived', NULL, p_by, p_reason);
    PERFORM pg_notify('fm_registry', fm_registry_roles_json('archive', v_op));
    RETURN v_op;
END;
$$;
