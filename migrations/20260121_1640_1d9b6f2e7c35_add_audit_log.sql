-- revision: 1d9b6f2e7c35
-- down_revision: b71e3a5c0d92
-- branch_labels: audit
-- message: add audit log
-- create_date: 2026-01-21 16:40:55.019384

-- flotilla:upgrade
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    table_name text NOT NULL,
    row_id bigint,
    action text NOT NULL CHECK (action IN ('INSERT', 'UPDATE', 'DELETE')),
    old_row jsonb,
    new_row jsonb,
    changed_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_log_table_row_idx ON audit_log (table_name, row_id);

-- SET search_path FROM CURRENT pins the tenant schema this function is created in,
-- so the trigger writes to this tenant's audit_log whatever search_path the application uses.
CREATE FUNCTION audit_row_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $body$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO audit_log (table_name, row_id, action, old_row)
        VALUES (TG_TABLE_NAME, OLD.id, TG_OP, to_jsonb(OLD));
        RETURN OLD;
    END IF;
    INSERT INTO audit_log (table_name, row_id, action, old_row, new_row)
    VALUES (TG_TABLE_NAME, NEW.id, TG_OP,
            CASE WHEN TG_OP = 'UPDATE' THEN to_jsonb(OLD) END, to_jsonb(NEW));
    RETURN NEW;
END;
$body$;

CREATE TRIGGER users_audit AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();

CREATE TRIGGER products_audit AFTER INSERT OR UPDATE OR DELETE ON products
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();

-- flotilla:downgrade
DROP TRIGGER products_audit ON products;
DROP TRIGGER users_audit ON users;
DROP FUNCTION audit_row_change();
DROP TABLE audit_log;
