-- revision: c3e8d1a6b950
-- down_revision: e5f0a9c3b284, 8a4c7e0b3f61
-- message: merge orders and audit
-- create_date: 2026-02-03 09:10:48.330291

-- flotilla:upgrade
-- Auditing orders needs both branches: the orders table and the audit trigger function.
CREATE TRIGGER orders_audit AFTER INSERT OR UPDATE OR DELETE ON orders
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();

-- flotilla:downgrade
DROP TRIGGER orders_audit ON orders;
